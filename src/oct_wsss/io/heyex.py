"""Heidelberg Spectralis files through eyepy: .vol, .e2e and HEYEX XML exports (plus eyepy's Duke .mat)."""

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
    from eyepy.io.he.vol_reader import HeVolReader, vol_format

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
    try:
        parsed = HeVolReader(path).parsed_file
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
    """Spectralis .e2e through eyepy (first volume in the file); names and ids go to ``patient``."""
    from eyepy.io import import_heyex_e2e

    try:
        ev = import_heyex_e2e(path)
        data = np.asarray(ev.data)
    except Exception as exc:
        raise OctReadError(path, f"not a readable Heidelberg .e2e file ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    e2e = dict(ev.meta.get("e2e_metadata") or {}) if hasattr(ev.meta, "get") else {}
    info = e2e.get("Patient") or {}
    patient = {
        "first_name": info.get("First Name"),
        "surname": info.get("Surname"),
        "patient_id": info.get("Patient ID"),
        "birth_date": info.get("Date of Birth"),
        "sex": info.get("Sex"),
    }
    # eyepy gives no physical scaling for .e2e (scale_unit 'px'); only accept real mm values.
    spacing = None
    if str(ev.meta.get("scale_unit")) == "mm":
        spacing = (ev.meta.get("scale_z"), ev.meta.get("scale_y"), ev.meta.get("scale_x"))
    meta = {"device": "Heidelberg Engineering Spectralis", "intensity_transform": "eyepy e2e (log, uint8)"}
    return build_volume(data, path, "heidelberg-e2e", spacing_mm=spacing, laterality=ev.meta.get("laterality"),
                        meta=meta, patient=patient)


def find_heyex_xml(folder: Path) -> Path | None:
    """The HEYEX XML export file in ``folder`` (a .xml whose root is <HEDX> or <BODY> with a <Patient>)."""
    for candidate in sorted(folder.glob("*.xml")) + sorted(folder.glob("*.XML")):
        try:
            root = ElementTree.parse(candidate).getroot()
        except (ElementTree.ParseError, OSError):
            continue
        if root.find(".//Patient") is not None and root.find(".//Image") is not None:
            return candidate
    return None


def heyex_xml_info(xml_path: Path) -> dict[str, Any]:
    """Spacing, laterality, dates and patient fields of a (possibly stripped) HEYEX XML, read directly."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise OctReadError(xml_path, f"not a readable HEYEX XML ({exc})") from exc
    octs = [im for im in root.iter("Image") if _is_oct_image(im)]
    scale_x = _float(octs[0].find("OphthalmicAcquisitionContext/ScaleX")) if octs else None
    scale_y = _float(octs[0].find("OphthalmicAcquisitionContext/ScaleY")) if octs else None
    starts = [(_float(im.find("OphthalmicAcquisitionContext/Start/Coord/X")),
               _float(im.find("OphthalmicAcquisitionContext/Start/Coord/Y"))) for im in octs]
    steps = [math.dist(a, b) for a, b in zip(starts, starts[1:]) if None not in a and None not in b]
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


def read_duke_mat(path: Path) -> OctVolume:
    """A Duke (Farsiu 2013 AMD or Chiu 2015 DME) .mat volume through eyepy, with eyepy's published spacing."""
    from eyepy.io import import_duke_mat, import_dukechiu2_mat

    try:
        from scipy.io import whosmat

        names = {name for name, _shape, _cls in whosmat(path)}
    except Exception as exc:
        raise OctReadError(path, f"not a readable MATLAB .mat file ({exc.__class__.__name__}: {exc})") from exc
    if "images" not in names:
        raise OctReadError(path, "MATLAB file without an 'images' array (not a Duke OCT .mat)")
    importer = import_duke_mat if "layerMaps" in names else import_dukechiu2_mat
    try:
        ev = importer(path)
        data = np.asarray(ev.data)
    except Exception as exc:
        raise OctReadError(path, f"Duke .mat unreadable ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    patient = {"age": ev.meta.get("age")} if ev.meta.get("age") is not None else {}
    meta = {"dataset": "Duke (Farsiu 2013)" if importer is import_duke_mat else "Duke (Chiu 2015)",
            "spacing_note": "eyepy's published dataset spacing"}
    return build_volume(data, path, "duke-mat", spacing_mm=(ev.scale_z, ev.scale_y, ev.scale_x), meta=meta,
                        patient=patient)
