"""Topcon .fda/.fds, Zeiss Cirrus .img and Bioptigen .OCT through oct-converter's parsers and structs.

oct-converter 0.7.0's FDA/FDS classes call ``np.fromstring`` in binary mode, which NumPy 2 removed, so
every Topcon file fails there; we walk the chunk list ourselves and parse each chunk with
oct-converter's published construct structs (``oct_converter.readers.binary_structs``).
"""

from __future__ import annotations

import io
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.errors import OctReadError
from oct_wsss.io.normalise import build_volume
from oct_wsss.volume import OctVolume

#: Cirrus cube shapes (n_bscans, depth, a_scans) and their scan size (z mm, depth mm, x mm), by file size.
CIRRUS_CUBES: dict[int, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    128 * 1024 * 512: ((128, 1024, 512), (6.0, 2.0, 6.0)),  # Macular/Optic Disc Cube 512x128
    200 * 1024 * 200: ((200, 1024, 200), (6.0, 2.0, 6.0)),  # Macular/Optic Disc Cube 200x200
}
MAX_CHUNKS = 10_000


def _topcon_chunks(path: Path) -> tuple[dict[str, Any], dict[bytes, list[tuple[int, int]]]]:
    """File header and {chunk name: [(offset, size), ...]}; sizes are checked against the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(15)
        if len(head) < 15 or head[:4] != b"FOCT":
            raise OctReadError(path, "not a Topcon file (no 'FOCT' magic)")
        file_type = head[4:7].decode("ascii", "replace")
        chunks: dict[bytes, list[tuple[int, int]]] = {}
        for _ in range(MAX_CHUNKS):
            n = fh.read(1)
            if not n or n[0] == 0:
                break
            name = fh.read(n[0])
            raw = fh.read(4)
            if len(name) != n[0] or len(raw) != 4:
                raise OctReadError(path, "truncated chunk table")
            (chunk_size,) = struct.unpack("<I", raw)
            where = fh.tell()
            if where + chunk_size > size:
                raise OctReadError(path, f"truncated: chunk {name.decode('latin-1')} needs {chunk_size} bytes "
                                         f"at offset {where}, file has {size}")
            chunks.setdefault(name, []).append((where, chunk_size))
            fh.seek(chunk_size, 1)
    return {"file_type": file_type}, chunks


def _parse(path: Path, chunks: dict[bytes, list[tuple[int, int]]], name: bytes, struct_: Any) -> Any:
    offset, size = chunks[name][0]
    with open(path, "rb") as fh:
        fh.seek(offset)
        return struct_.parse(fh.read(size))


def read_topcon(path: Path) -> OctVolume:
    """Topcon .fda (IMG_JPEG or IMG_MOT_COMP_03) or .fds (IMG_SCAN_03) OCT volume with spacing/laterality."""
    try:
        return _read_topcon(path)
    except OctReadError:
        raise
    except Exception as exc:  # construct errors, struct.error, PIL errors, ValueError on reshape
        raise OctReadError(path, f"corrupt Topcon file ({exc.__class__.__name__}: {str(exc)[:200]})") from exc


def _read_topcon(path: Path) -> OctVolume:
    from oct_converter.readers.binary_structs import fda_binary, fds_binary

    header, chunks = _topcon_chunks(path)
    bs = fds_binary if header["file_type"].upper() == "FDS" else fda_binary
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if b"@IMG_JPEG" in chunks:
            from PIL import Image

            offset, _ = chunks[b"@IMG_JPEG"][0]
            fh.seek(offset)
            oct_header = fda_binary.oct_header.parse(fh.read(25))
            slices = []
            for _ in range(int(oct_header.number_slices)):
                (n,) = struct.unpack("<i", fh.read(4))
                if n <= 0 or fh.tell() + n > size:
                    raise OctReadError(path, "truncated JPEG B-scan data")
                slices.append(np.asarray(Image.open(io.BytesIO(fh.read(n)))))
            volume = np.stack(slices)
            width, n_slices = int(oct_header.width), int(oct_header.number_slices)
        else:
            name = next((k for k in (b"@IMG_MOT_COMP_03", b"@IMG_SCAN_03") if k in chunks), None)
            if name is None:
                raise OctReadError(path, f"no OCT data chunk (@IMG_JPEG, @IMG_MOT_COMP_03, @IMG_SCAN_03); "
                                         f"chunks: {sorted(k.decode('latin-1') for k in chunks)}")
            offset, chunk_size = chunks[name][0]
            fh.seek(offset)
            oct_header = bs.oct_header_2.parse(fh.read(22)) if name == b"@IMG_MOT_COMP_03" else \
                fds_binary.oct_header.parse(fh.read(22))
            width, height, n_slices = int(oct_header.width), int(oct_header.height), int(oct_header.number_slices)
            n_bytes = 2 * width * height * n_slices
            if n_bytes == 0 or n_bytes > chunk_size - 22:
                raise OctReadError(path, f"header claims {n_slices} B-scans of {width}x{height} px "
                                         f"({n_bytes} bytes) in a {chunk_size}-byte chunk")
            raw = np.frombuffer(fh.read(n_bytes), dtype="<u2")
            volume = raw.reshape(width, height, n_slices, order="F").transpose(2, 1, 0)
    spacing = None
    for name, st in ((b"@PARAM_SCAN_04", bs.param_scan_04_header), (b"@PARAM_SCAN_02", bs.param_scan_02_header)):
        if name in chunks:
            p = _parse(path, chunks, name, st)
            spacing = (p.y_dimension_mm / n_slices, p.z_resolution_um / 1000.0, p.x_dimension_mm / width)
            break
    meta: dict[str, Any] = {"device": "Topcon", "file_type": header["file_type"]}
    laterality = None
    for name, st in ((b"@CAPTURE_INFO_02", bs.capture_info_02_header), (b"@CAPTURE_INFO", bs.capture_info_header)):
        if name in chunks:
            c = _parse(path, chunks, name, st)
            laterality = {0: "OD", 1: "OS"}.get(int(c.eye))
            try:
                meta["scan_datetime"] = datetime(*[int(v) for v in c.cap_date]).isoformat()
            except (TypeError, ValueError):
                pass
            break
    if b"@HW_INFO_03" in chunks:
        hw = _parse(path, chunks, b"@HW_INFO_03", bs.hw_info_03_header)
        meta["device"] = f"Topcon {hw.model_name.strip()}".strip()
    patient: dict[str, Any] = {}
    if b"@PATIENT_INFO_02" in chunks:
        p = _parse(path, chunks, b"@PATIENT_INFO_02", bs.patient_info_02_header)
        patient = {"patient_id": p.patient_id.strip(), "first_name": p.first_name.strip(),
                   "surname": p.last_name.strip(), "sex": {1: "M", 2: "F", 3: "O"}.get(int(p.sex))}
        try:
            patient["birth_date"] = datetime(*[int(v) for v in p.birth_date]).date().isoformat()
        except (TypeError, ValueError):
            pass
    fmt = "topcon-fds" if header["file_type"].upper() == "FDS" else "topcon-fda"
    return build_volume(volume, path, fmt, spacing_mm=spacing, laterality=laterality, meta=meta, patient=patient)


def read_zeiss_img(path: Path) -> OctVolume:
    """Zeiss Cirrus .img (raw uint8, no header) via oct-converter's IMG, with the cube shape chosen by size.

    Spacing is the nominal cube size (6 x 2 x 6 mm) over the cube shape, so ``spacing_source`` is 'assumed'.
    """
    size = path.stat().st_size
    if size not in CIRRUS_CUBES:
        known = ", ".join(f"{s[0]}x{s[1]}x{s[2]} ({b} bytes)" for b, (s, _) in CIRRUS_CUBES.items())
        raise OctReadError(path, f"Zeiss .img of {size} bytes matches no known Cirrus cube shape ({known})")
    (n, depth, width), (z_mm, y_mm, x_mm) = CIRRUS_CUBES[size]
    try:
        from oct_converter.readers import IMG

        oct_volume = IMG(path).read_oct_volume(rows=depth, cols=width)
        volume = np.stack(oct_volume.volume)
        name_meta = oct_volume.metadata or {}
    except Exception as exc:
        raise OctReadError(path, f"Zeiss .img unreadable ({exc.__class__.__name__}: {exc})") from exc
    meta = {"device": "Carl Zeiss Meditec Cirrus", "spacing_source": "assumed",
            "spacing_note": f"nominal {x_mm:g}x{z_mm:g} mm cube, {y_mm:g} mm depth"}
    if name_meta.get("acquisition_date"):
        meta["scan_datetime"] = name_meta["acquisition_date"].isoformat()
    patient = {"patient_id": name_meta.get("patient_id"), "serial_number": name_meta.get("sn")}
    return build_volume(volume, path, "zeiss-img", spacing_mm=(z_mm / n, y_mm / depth, x_mm / width),
                        laterality=name_meta.get("laterality"), meta=meta, patient=patient)


def _check_bioptigen_frames(path: Path, parsed: Any) -> None:
    """oct-converter allocates (FRAMES x SCANS x lines x samples) from the header before reading the frames and
    fills it frame by frame, printing and ignoring errors: check that the frames are all there first."""
    h = parsed.header
    n_header = int(h.frames.value) * int(h.scans.value)
    shapes = {(int(f.image.rows), int(f.image.columns)) for f in parsed.data}
    if n_header != len(parsed.data):
        raise OctReadError(path, f"corrupt Bioptigen header: {h.frames.value} frames x {h.scans.value} scans, "
                                 f"but the file holds {len(parsed.data)} frames")
    if len(shapes) != 1:
        raise OctReadError(path, "corrupt Bioptigen file: frames differ in size")
    rows, columns = shapes.pop()
    if rows < 1 or columns < 1:
        raise OctReadError(path, f"corrupt Bioptigen frame size: {columns} lines of {rows} samples")


def read_bioptigen(path: Path) -> OctVolume:
    """Bioptigen .OCT through oct-converter's BOCT (first time point), spacing from the header extents."""
    try:
        from oct_converter.readers import BOCT

        from oct_wsss.io.limits import mapped

        with mapped(path) as stream:  # not parse_file: a bogus key/data length would be allocated before reading
            parsed = BOCT.file_structure.parse_stream(stream)
        h = parsed.header
        expected = max(f.image.end for f in parsed.data) if len(parsed.data) else 0
        if expected > path.stat().st_size or len(parsed.data) == 0:
            raise OctReadError(path, "truncated Bioptigen file (frame data past the end of the file)")
        _check_bioptigen_frames(path, parsed)
        reader = BOCT(path)  # its constructor and read_oct_volume parse the file again, now known to be sound
        volumes = reader.read_oct_volume()
        volume = np.asarray(volumes[0].volume)  # (n_bscans, a_scans, depth)
    except OctReadError:
        raise
    except Exception as exc:  # InvalidOCTReaderError, construct errors, KeyError on scan type
        raise OctReadError(path, f"not a readable Bioptigen .OCT file ({exc.__class__.__name__}: "
                                 f"{str(exc)[:200]})") from exc
    volume = volume.transpose(0, 2, 1)  # depth down, A-scans across
    n, depth, width = volume.shape
    spacing = (h.elscanlength.value / max(n - 1, 1) if n > 1 else None,
               h.scandepth.value / depth, h.scanlength.value / width)
    meta = {"device": "Bioptigen", "scan_type": BOCT.bioptigen_scan_type_map.get(h.scantype.value),
            "scan_datetime": volumes[0].acquisition_date.isoformat() if volumes[0].acquisition_date else None}
    from oct_wsss.io.normalise import fill_spacing

    filled, defaulted = fill_spacing(spacing)
    if defaulted:
        meta["spacing_defaulted_axes"] = "".join(defaulted)
    return build_volume(volume, path, "bioptigen-oct", spacing_mm=filled, laterality=reader.laterality or None,
                        meta={k: v for k, v in meta.items() if v is not None})
