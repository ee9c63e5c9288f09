"""Heidelberg Spectralis files through eyepy: .vol, .e2e and HEYEX XML exports (Duke .mat files: ``duke_mat``)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.errors import OctReadError
from oct_wsss.io.normalise import build_volume, fill_spacing
from oct_wsss.volume import OctVolume

VOL_HEADER_BYTES = 2048
_SCAN_PATTERNS = {0: "unknown", 1: "single line", 2: "circle", 3: "volume (ART)", 4: "fast volume", 5: "radial"}


def read_heyex_vol(path: Path) -> OctVolume:
    """Spectralis .vol: eyepy parses it; reflectivity gets the usual ``value ** 0.25`` then min–max scaling.

    eyepy's own EyeVolume refuses circle and radial scans, so B-scans come from its parsed file
    structure instead. Header sizes are checked against the file size before anything is allocated.
    """
    import construct as cs
    from eyepy.io.he.vol_reader import vol_format

    size = path.stat().st_size
    header_struct = cs.Struct(*vol_format.subcons[:-2])
    try:
        with open(path, "rb") as fh:
            header = header_struct.parse(fh.read(VOL_HEADER_BYTES))
    except Exception as exc:
        raise OctReadError(path, f"not a Heidelberg .vol file (header unreadable: {exc.__class__.__name__})") from exc
    if not (header.version.startswith("HSF-OCT") or header.version.startswith("ep-v")):
        raise OctReadError(path, f"not a Heidelberg .vol file (magic {header.version!r})")
    n, w, h = int(header.n_bscans), int(header.size_x), int(header.size_y)
    if n < 1 or w < 1 or h < 1:
        raise OctReadError(path, f"header gives an empty volume ({n} B-scans of {w}x{h})")
    expected = VOL_HEADER_BYTES + header.size_x_slo * header.size_y_slo + n * (header.bscan_hdr_size + 4 * w * h)
    if expected > size:
        raise OctReadError(
            path,
            f"truncated or corrupt: header says {n} B-scans of {w}x{h} px (needs {expected} bytes), "
            f"file has {size} bytes",
        )
    from oct_wsss.io.limits import mapped

    try:
        with mapped(path) as stream:  # not HeVolReader(path): counted fields read from a file object allocate first
            parsed = vol_format.parse_stream(stream)
        raw = np.stack([np.asarray(b.data, dtype=np.float32) for b in parsed.bscans])
        quality = [float(b.quality) for b in parsed.bscans]
    except Exception as exc:  # construct errors, struct.error, ValueError from eyepy
        raise OctReadError(path, f"corrupt .vol file ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    invalid = ~np.isfinite(raw) | (raw >= 3.0e38)
    display = np.full(raw.shape, np.nan, np.float32)
    display[~invalid] = np.power(np.clip(raw[~invalid], 0, None), 0.25)
    raw_range = [float(raw[~invalid].min()), float(raw[~invalid].max())] if (~invalid).any() else None
    spacing, defaulted = fill_spacing((parsed.distance if n > 1 else None, parsed.scale_y, parsed.scale_x))
    meta: dict[str, Any] = {
        "device": "Heidelberg Engineering Spectralis",
        "file_version": str(parsed.version).strip(),
        "scan_pattern": _SCAN_PATTERNS.get(int(parsed.scan_pattern), str(parsed.scan_pattern)),
        "scan_datetime": str(parsed.exam_time),
        "visit_date": str(parsed.visit_date)[:10],
        "slo_field_size_deg": int(parsed.field_size_slo),
        "scan_focus_dpt": float(parsed.scan_focus),
        "bscan_quality": quality,
        "intensity_transform": "heidelberg reflectivity ** 0.25, then min-max",
    }
    if defaulted:
        meta["spacing_defaulted_axes"] = "".join(defaulted)
    patient = {
        "patient_id": str(parsed.patient_id).strip(),
        "heyex_pid": int(parsed.pid),
        "birth_date": str(parsed.dob)[:10],
        "visit_id": str(parsed.visit_id).strip(),
        "heyex_vid": int(parsed.vid),
        "series_id": str(parsed.id).strip(),
        "reference_series_id": str(parsed.reference_id).strip(),
        "progression_id": str(parsed.prog_id).strip(),
    }
    volume = build_volume(display, path, "heidelberg-vol", spacing_mm=spacing, laterality=parsed.scan_position,
                          meta=meta, patient=patient)
    volume.meta["source_dtype"] = "float32 (linear reflectivity)"
    volume.meta["source_range"] = raw_range
    volume.meta["n_nonfinite"] = int(invalid.sum())
    return volume


def read_heyex_e2e(path: Path) -> OctVolume:
    """Spectralis .e2e through eyepy's ``HeE2eReader`` (first series eyepy can turn into a volume).

    Voxels are eyepy's ``e2e`` intensity transform (uint8). Spacing: y from the B-scan header (``scale_y``, mm);
    x and z from the scan angles in the file (degrees) with eyepy's provisional 289.6 µm/° constant. Names,
    birth date, ids and sex go to ``patient``. The chunk directory is walked first (with eyepy's own structs) so
    that a corrupt file cannot send eyepy's indexer into an endless loop, and sizes are checked against the file
    size before anything is allocated.
    """
    from eyepy.io.he import HeE2eReader

    size = path.stat().st_size
    _check_e2e_directory(path, size)
    try:
        reader = HeE2eReader(path)
        with reader:
            series_list = reader.series
            if not series_list:
                raise OctReadError(path, "no OCT series in the .e2e file")
            failures = []
            for series in series_list:
                try:
                    _check_e2e_series_size(path, series, size)
                    ev = series.get_volume()
                    data = np.asarray(ev.data)
                    break
                except OctReadError as exc:
                    failures.append(exc.args[0] if exc.args else str(exc))
                except Exception as exc:  # construct/struct errors, eyepy's ValueErrors (e.g. circle scans)
                    failures.append(f"series {series.id}: {exc.__class__.__name__}: {str(exc)[:160]}")
            else:
                raise OctReadError(path, "no series could be read as a volume (" + "; ".join(failures)[:400] + ")")
            bscan_meta = list(ev.meta["bscan_meta"])
            patient = _e2e_patient(series)
            x_info = series.get_x_scale_derivation()
            laterality = _e2e_laterality(series, ev)
            heyex = (ev.meta.get("e2e_metadata") or {}).get("heyex", {})
    except OctReadError:
        raise
    except Exception as exc:
        raise OctReadError(path, f"not a readable Heidelberg .e2e file ({exc.__class__.__name__}: "
                                 f"{str(exc)[:200]})") from exc
    spacing, defaulted = fill_spacing(_e2e_spacing(bscan_meta, x_info))
    general = heyex.get("General Parameters") or {}
    container = heyex.get("Container") or {}
    meta: dict[str, Any] = {k: v for k, v in {
        "device": "Heidelberg Engineering Spectralis",
        "scan_pattern": container.get("Scan Pattern"),
        "scan_date": container.get("Series Date"),
        "examined_structure": general.get("Examined Structure"),
        "bscan_quality": [float(m.get("quality_ui", float("nan"))) for m in bscan_meta],
        "intensity_transform": "eyepy e2e (log, uint8)",
        "spacing_note": "y from the B-scan header; x and z from the scan angles (degrees) x 0.2896 mm/deg "
                        "(eyepy's provisional medium-eye-length constant)",
    }.items() if v is not None}
    if defaulted:
        meta["spacing_defaulted_axes"] = "".join(defaulted)
    return build_volume(data, path, "heidelberg-e2e", spacing_mm=spacing, laterality=laterality,
                        meta=meta, patient=patient)


def _check_e2e_directory(path: Path, size: int) -> None:
    """Walk the chunk directory as eyepy's ``GreedyRange`` does, but insist that every chunk moves forward.

    eyepy's ``Chunk`` ends with a ``Seek`` to just after the chunk's last data container; in a corrupt file that
    can point backwards and eyepy then parses the same chunk forever.
    """
    from eyepy.io.he.e2e_format import chunk_format, header_format, version_format

    with open(path, "rb") as fh:
        try:
            version_format.parse_stream(fh)
            header_format.parse_stream(fh)
        except Exception as exc:
            raise OctReadError(path, "not a Heidelberg .e2e file "
                                     f"(header unreadable: {exc.__class__.__name__})") from exc
        pos, n_chunks = fh.tell(), 0
        while pos < size:
            try:
                chunk_format.parse_stream(fh)
            except Exception:  # where eyepy's GreedyRange stops too
                break
            new = fh.tell()
            if new <= pos:
                raise OctReadError(path, f"corrupt .e2e: chunk {n_chunks} at byte {pos} points back to byte {new}")
            pos, n_chunks = new, n_chunks + 1
    if n_chunks == 0:
        raise OctReadError(path, "not a readable Heidelberg .e2e file (no data chunks)")


def _check_e2e_series_size(path: Path, series: Any, size: int) -> None:
    """Refuse B-scan sizes the file cannot hold before eyepy allocates the volume."""
    metas = series.get_bscan_meta()
    if not metas:
        raise OctReadError(path, f"series {series.id}: no B-scan headers")
    h, w, n = int(metas[0]["size_y"]), int(metas[0]["size_x"]), int(series.n_bscans)
    if h < 1 or w < 1 or n < 1 or 2 * h * w * n > size:
        raise OctReadError(path, f"truncated or corrupt: series {series.id} says {n} B-scans of {w}x{h} px "
                                 f"(needs {2 * h * w * n} bytes), file has {size} bytes")


def _e2e_spacing(bscan_meta: list[Any], x_info: dict[str, Any]) -> tuple[Any, Any, Any]:
    from eyepy.io.he.e2e_reader import MEDIUM_EYE_LENGTH_UM_PER_DEG

    mm_per_deg = MEDIUM_EYE_LENGTH_UM_PER_DEG / 1000
    scale_y = bscan_meta[0].get("scale_y") if bscan_meta else None
    # float32 in the file: 0.0039, not 0.00389999989
    scale_y = float(str(np.float32(scale_y))) if scale_y is not None else None
    scale_x = x_info.get("scaling_x_um_per_pixel")
    scale_x = scale_x / 1000 if scale_x is not None else None
    centres = [(float(m["center_x"]), float(m["center_y"])) for m in bscan_meta if "center_x" in m]
    steps = [math.dist(a, b) for a, b in zip(centres, centres[1:], strict=False)]
    scale_z = round(float(np.median(steps)) * mm_per_deg, 6) if steps else None
    return scale_z, scale_y, scale_x


def _e2e_laterality(series: Any, ev: Any) -> str | None:
    """Laterality from the series' Type11 folder (eyepy's meta gives ``str()`` of the enum: '82'/'76')."""
    from eyepy.io.he.e2e_format import TypesEnum

    folders = series.folders.get(TypesEnum.laterality) or []
    if folders:
        value = folders[0].data.laterality
        name = getattr(value, "name", None)
        if name in ("OD", "OS"):
            return name
    return {"82": "OD", "76": "OS"}.get(str(ev.meta.get("laterality")), ev.meta.get("laterality"))


def _e2e_patient(series: Any) -> dict[str, Any]:
    """Patient block (Type9) and HEYEX internal ids; eyepy does not decode the birth date, so it is done here."""
    from eyepy.io.he.e2e_format import TypesEnum

    out: dict[str, Any] = {"heyex_series_id": int(series.id)}
    if series.study is not None:
        out["heyex_study_id"] = int(series.study.id)
    if series.patient is not None:
        out["heyex_pid"] = int(series.patient.id)
        folders = series.patient.folders.get(TypesEnum.patient) or []
        if folders:
            data = folders[0].data
            out.update(first_name=data.firstname.strip(), surname=data.surname.strip(),
                       patient_id=data.patient_id.strip(), sex=data.sex.strip(),
                       birth_date=e2e_birth_date(int(data.birthdate)), birth_date_raw=int(data.birthdate))
    return out


def e2e_birth_date(raw: int) -> str | None:
    """E2E birth date: ``raw / 64 - 14558805`` is a Julian day number (uocte's reading, used by oct-converter);
    some files hold YYYYMMDD instead. None unless it gives a plausible date (1850-2100)."""
    import datetime

    candidates = []
    if 18500101 <= raw <= 21001231:
        candidates.append(lambda: datetime.date(raw // 10000, raw // 100 % 100, raw % 100))
    candidates.append(lambda: datetime.date.fromordinal(int(raw / 64 - 14558805) - 1721425))
    for make in candidates:
        try:
            day = make()
        except (ValueError, OverflowError):
            continue
        if 1850 <= day.year <= 2100:
            return day.isoformat()
    return None


def find_heyex_xml(folder: Path) -> Path | None:
    """The HEYEX XML export file in ``folder`` (a .xml whose root is <HEDX> or <BODY> with a <Patient>)."""
    for candidate in sorted(folder.glob("*.xml")) + sorted(folder.glob("*.XML")):
        try:
            root = ElementTree.parse(candidate).getroot()
        except (ElementTree.ParseError, OSError, LookupError):  # LookupError: an unknown declared encoding
            continue
        if root.find(".//Patient") is not None and root.find(".//Image") is not None:
            return candidate
    return None


def heyex_xml_info(xml_path: Path) -> dict[str, Any]:
    """Spacing, laterality, dates and patient fields of a (possibly stripped) HEYEX XML, read directly."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError, LookupError) as exc:  # LookupError: an unknown declared encoding
        raise OctReadError(xml_path, f"not a readable HEYEX XML ({exc})") from exc
    octs = [im for im in root.iter("Image") if _is_oct_image(im)]
    scale_x = _float(octs[0].find("OphthalmicAcquisitionContext/ScaleX")) if octs else None
    scale_y = _float(octs[0].find("OphthalmicAcquisitionContext/ScaleY")) if octs else None
    starts = [(_float(im.find("OphthalmicAcquisitionContext/Start/Coord/X")),
               _float(im.find("OphthalmicAcquisitionContext/Start/Coord/Y"))) for im in octs]
    steps = [math.dist(a, b) for a, b in zip(starts, starts[1:], strict=False) if None not in a and None not in b]
    scale_z = round(float(np.median(steps)), 6) if steps else None
    series = root.find(".//Series")
    text = lambda el, p: (el.find(p).text or "").strip() if el is not None and el.find(p) is not None else None  # noqa: E731
    patient_el = root.find(".//Patient")
    return {
        "spacing": (scale_z, scale_y, scale_x),
        "laterality": text(series, "Laterality"),
        "n_oct_images": len(octs),
        "exam_urls": [text(im, "ImageData/ExamURL") for im in octs if text(im, "ImageData/ExamURL")],
        "meta": {k: v for k, v in {
            "device": "Heidelberg Engineering Spectralis",
            "heyex_version": text(root, ".//SWVersion/Version"),
            "examined_structure": text(series, "ExaminedStructure"),
            "scan_type": text(series, "Type"),
            "field_size_deg": [_float(series.find("OCTFieldSize/Width")), _float(series.find("OCTFieldSize/Height"))]
            if series is not None and series.find("OCTFieldSize/Width") is not None else None,
        }.items() if v is not None},
        "patient": {
            "first_name": text(patient_el, "FirstNames"),
            "surname": text(patient_el, "LastName"),
            "patient_id": text(patient_el, "PatientID"),
            "heyex_pid": text(patient_el, "ID"),
            "birth_date": "-".join(f"{int(text(patient_el, f'Birthdate/Date/{k}') or 0):0{n}d}"
                                   for k, n in (("Year", 4), ("Month", 2), ("Day", 2)))
            if patient_el is not None and patient_el.find("Birthdate/Date") is not None else None,
            "referring_physician": text(root, ".//ReferringPhysician"),
        },
    }


def _is_oct_image(image: ElementTree.Element) -> bool:
    kind = image.find("ImageType/Type")
    if kind is not None:
        return (kind.text or "").strip().upper() == "OCT"
    return image.find("OphthalmicAcquisitionContext/Start") is not None


def _float(element: ElementTree.Element | None) -> float | None:
    try:
        return float(element.text) if element is not None and element.text else None
    except ValueError:
        return None


def read_heyex_xml(xml_path: Path, origin: Path | None = None) -> OctVolume:
    """HEYEX XML export with its B-scan images (ExamURL) through eyepy; patient block kept apart."""
    from eyepy.io import import_heyex_xml

    origin = origin or xml_path
    info = heyex_xml_info(xml_path)
    from oct_wsss.io.limits import check_image

    for url in info["exam_urls"]:  # eyepy decodes each B-scan whatever size its header claims: check first
        image = xml_path.parent / url.split("\\")[-1]
        if image.is_file():
            check_image(image)
    try:
        ev = import_heyex_xml(xml_path)
        data = np.asarray(ev.data)
    except Exception as exc:
        raise OctReadError(origin, f"HEYEX XML export unreadable ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    scale_z = ev.meta.get("scale_z")
    scale_z = round(float(scale_z), 6) if scale_z is not None and np.isfinite(scale_z) else None
    spacing, defaulted = fill_spacing((scale_z, ev.meta.get("scale_y"), ev.meta.get("scale_x")))
    meta = dict(info["meta"])
    if ev.meta.get("exam_time"):
        meta["scan_date"] = str(ev.meta.get("exam_time"))[:10]
    if defaulted:
        meta["spacing_defaulted_axes"] = "".join(defaulted)
    patient = dict(info["patient"])  # read from the XML directly; eyepy's meta['patient'] holds the same fields
    return build_volume(data, origin, "heidelberg-xml", spacing_mm=spacing,
                        laterality=info["laterality"] or ev.meta.get("laterality"), meta=meta, patient=patient)
