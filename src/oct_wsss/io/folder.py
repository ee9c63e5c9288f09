"""Folders: B-scan image stacks (natural sort order), the synth layout, HEYEX XML exports and RETOUCH."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.arrays import IMAGE_SUFFIXES, read_image, read_json, sidecar_fields
from oct_wsss.io.errors import OctReadError
from oct_wsss.io.normalise import build_volume, to_grey
from oct_wsss.volume import OctVolume

SIDECAR = "volume.json"


def image_files(folder: Path) -> list[Path]:
    """B-scan image files in ``folder`` (not hidden), in natural sort order (2.png before 10.png)."""
    from natsort import natsorted, ns

    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise OctReadError(folder, f"folder not readable ({exc.strerror or exc})") from exc
    files = [p for p in entries if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return natsorted(files, key=lambda p: p.name, alg=ns.IGNORECASE)


def image_folder(folder: Path) -> Path | None:
    """Where the B-scans of a volume folder are: its ``bscans/`` subfolder, else the folder itself (so a proposal's
    ``labels.tif`` beside ``bscans/`` is not taken for a B-scan)."""
    sub = folder / "bscans"
    if sub.is_dir() and image_files(sub):
        return sub
    return folder if image_files(folder) else None


def looks_readable(folder: Path) -> bool:
    """Cheap check for ``can_read``: B-scan images here or in ``bscans/``, a HEYEX XML, or RETOUCH oct.mhd."""
    try:
        return image_folder(folder) is not None or (folder / "oct.mhd").is_file() or any(folder.glob("*.xml"))
    except OSError:
        return False


def is_volume_folder(folder: Path) -> bool:
    """True when ``read_folder`` opens ``folder`` as one volume (HEYEX XML, RETOUCH, B-scans here or in bscans/)."""
    from oct_wsss.io.heyex import find_heyex_xml

    try:
        return (folder / "oct.mhd").is_file() or image_folder(folder) is not None or find_heyex_xml(folder) is not None
    except (OSError, OctReadError):
        return False


def read_folder(folder: Path) -> OctVolume:
    """A volume folder: HEYEX XML export (through eyepy), RETOUCH, or a stack of B-scan images + volume.json."""
    from oct_wsss.io.heyex import find_heyex_xml, heyex_xml_info, read_heyex_xml

    xml = find_heyex_xml(folder)
    info_xml = heyex_xml_info(xml) if xml is not None else None
    if info_xml is not None and info_xml["exam_urls"]:
        return read_heyex_xml(xml, origin=folder)
    if (folder / "oct.mhd").is_file():
        return _read_retouch(folder)
    images_dir = image_folder(folder)
    if images_dir is None:
        raise OctReadError(folder, f"empty folder: no B-scan images ({', '.join(IMAGE_SUFFIXES)}) here or in bscans/")
    files = image_files(images_dir)
    stack = _stack(files, folder)
    spacing: Any = None
    laterality: Any = None
    meta: dict[str, Any] = {}
    ours = False
    patient: dict[str, Any] = {}
    sidecar = folder / SIDECAR
    if sidecar.is_file():
        spacing, laterality, meta, ours = sidecar_fields(read_json(sidecar))
        meta.pop("spacing_source", None)
    elif info_xml is not None:  # a stripped HEYEX XML (no file references): use its spacing and laterality
        spacing, laterality = info_xml["spacing"], info_xml["laterality"]
        meta = {**info_xml["meta"], "heyex_xml_n_bscans": info_xml["n_oct_images"]}
        patient = info_xml["patient"]
        if not all(spacing):
            spacing = None
    meta["n_files"] = len(files)
    return build_volume(stack, folder, "image-folder", spacing_mm=spacing, laterality=laterality, meta=meta,
                        patient=patient, keep_unit_float=ours)


def _files_are(names: list[str], shape: tuple[int, ...]) -> str:
    """'a.png is 10x12' or 'a.png, b.png … are 10x12' (at most five names)."""
    listed = f"{', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
    return f"{listed} {'is' if len(names) == 1 else 'are'} {shape[0]}x{shape[1]}"


def _sizes_message(shapes: dict[tuple[int, ...], list[str]]) -> str:
    """Which files have which size: 'most are HxW (n files) but ...' when one size has more files than any other,
    else every size with its files (no 'most' for a tie)."""
    ranked = sorted(shapes.items(), key=lambda kv: -len(kv[1]))
    (common, names), runner_up = ranked[0], ranked[1][1]
    if len(names) > len(runner_up):  # a majority holds two files or more
        odd = "; ".join(_files_are(other, s) for s, other in ranked[1:])
        return f"most are {common[0]}x{common[1]} ({len(names)} files) but {odd}"
    return "; ".join(_files_are(other, s) for s, other in ranked)


def _stack(files: list[Path], folder: Path) -> np.ndarray:
    pages = []
    for f in files:
        image = read_image(f)
        if image.ndim == 3 and image.shape[-1] in (3, 4):
            image = to_grey(image)
        if image.ndim != 2:
            raise OctReadError(f, f"expected a 2-D B-scan image, got shape {image.shape}")
        pages.append(image)
    shapes: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for f, page in zip(files, pages, strict=False):
        shapes[page.shape].append(f.name)
    if len(shapes) > 1:
        raise OctReadError(folder, f"B-scans differ in size: {_sizes_message(shapes)}")
    dtypes = {p.dtype for p in pages}
    if len(dtypes) > 1:
        raise OctReadError(folder, f"B-scans differ in bit depth ({', '.join(sorted(map(str, dtypes)))})")
    return np.stack(pages)


_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _check_mhd_size(folder: Path, mhd: Path) -> None:
    """Refuse an .mhd whose DimSize x ElementType needs more bytes than its data file holds (itk allocates the
    whole image from the header first, and a DimSize of 10^9 makes it allocate or loop for a long time)."""
    from oct_wsss.io.limits import check_size, product

    try:
        with open(mhd, "rb") as fh:
            text = fh.read(1 << 20).decode("latin-1")
    except OSError as exc:
        raise OctReadError(folder, f"RETOUCH oct.mhd unreadable ({exc.strerror or exc})") from exc
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        item = _MET_BYTES[fields["ElementType"].upper()] * int(fields.get("ElementNumberOfChannels", "1") or 1)
        skip = max(int(fields.get("HeaderSize", "0") or 0), 0)
    except (KeyError, ValueError) as exc:
        raise OctReadError(folder, f"RETOUCH oct.mhd header incomplete or corrupt ({type(exc).__name__}: "
                                   f"{str(exc)[:100]})") from exc
    if not dims or min(dims) < 1 or len(dims) > 4:
        raise OctReadError(folder, f"RETOUCH oct.mhd gives DimSize {dims}")
    data_file = fields.get("ElementDataFile", "")
    if data_file.upper() == "LOCAL":
        available = mhd.stat().st_size  # the data follow the header in the same file
    else:
        raw = mhd.parent / data_file
        if not data_file or not raw.is_file() or raw.resolve().parent != mhd.parent.resolve():
            raise OctReadError(folder, f"RETOUCH data file {data_file!r} named in oct.mhd is not beside it")
        available = raw.stat().st_size - skip
    compressed = fields.get("CompressedData", "False").strip().lower() == "true"
    check_size(folder, product(dims) * item, available, f"oct.mhd DimSize {dims} ({fields['ElementType']})",
               compressed=compressed)


RETOUCH_EXTRA_HINT = "pip install 'napari-oct-wsss[retouch]' (or pip install itk)"


def _read_retouch(folder: Path) -> OctVolume:
    """RETOUCH challenge folder (``oct.mhd`` + ``oct.raw``) read with ``itk``, the optional dependency eyepy's
    ``import_retouch`` uses too.

    eyepy's importer scales every volume to uint8 by ``value / dtype max * 255`` with truncation, which throws away
    8 of the 16 bits of the Spectralis (USHORT) volumes; the voxels are therefore read with ``itk.imread`` directly
    and go through the normalisation policy like every other format (uint8 Cirrus/Topcon kept, uint16 min-max).
    Spacing is the .mhd ``ElementSpacing`` (x, y, z in mm) reversed to (z, y, x), as eyepy does.
    """
    mhd = folder / "oct.mhd"
    try:
        import itk
    except ImportError as exc:
        raise OctReadError(folder, f"RETOUCH .mhd volumes need the optional 'itk' package: "
                                   f"{RETOUCH_EXTRA_HINT}") from exc
    try:
        _check_mhd_size(folder, mhd)
    except OctReadError as exc:
        raise OctReadError(folder, f"RETOUCH volume unreadable ({exc.reason})") from exc
    try:
        image = itk.imread(str(mhd))
        data = np.asarray(itk.array_from_image(image))
        spacing = tuple(float(s) for s in reversed(tuple(image.GetSpacing())))
    except Exception as exc:  # itk raises RuntimeError for missing/short .raw files and bad headers
        raise OctReadError(folder, f"RETOUCH volume unreadable ({exc.__class__.__name__}: "
                                   f"{str(exc).strip()[:200]})") from exc
    if data.ndim != 3:
        raise OctReadError(folder, f"RETOUCH oct.mhd is {data.ndim}-D (shape {data.shape}); expected a 3-D volume")
    meta: dict[str, Any] = {"dataset": "RETOUCH", "has_reference": (folder / "reference.mhd").is_file()}
    return build_volume(data, folder, "retouch", spacing_mm=spacing, meta=meta)
