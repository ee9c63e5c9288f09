"""Reading every supported OCT format into an OctVolume, and writing volumes back (PHI-free).

``read_volume`` dispatches by suffix (or folder content); every failure is an ``OctReadError`` that names
the file and the reason. See docs/formats.md for the formats, metadata and normalisation policy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from oct_wsss.io.errors import OctReadError
from oct_wsss.io.export import atomic_write, write_volume
from oct_wsss.io.labels import read_labels, write_labels
from oct_wsss.volume import OctVolume

__all__ = ["read_volume", "write_volume", "atomic_write",
           "read_labels", "write_labels", "OctReadError", "SUPPORTED_SUFFIXES", "can_read"]


def _readers() -> dict[str, Callable[[Path], OctVolume]]:
    from oct_wsss.io import arrays, dicom, duke_mat, heyex, vendor

    return {
        ".vol": heyex.read_heyex_vol,
        ".e2e": heyex.read_heyex_e2e,
        ".xml": _read_xml,
        ".mat": duke_mat.read_duke_mat,
        ".fda": vendor.read_topcon,
        ".fds": vendor.read_topcon,
        ".img": vendor.read_zeiss_img,
        ".oct": vendor.read_bioptigen,
        ".dcm": dicom.read_dicom,
        ".dicom": dicom.read_dicom,
        ".tif": arrays.read_tiff,
        ".tiff": arrays.read_tiff,
        ".npy": arrays.read_npy,
        ".npz": arrays.read_npz,
        ".png": arrays.read_single_image,
        ".jpg": arrays.read_single_image,
        ".jpeg": arrays.read_single_image,
        ".bmp": arrays.read_single_image,
    }


#: Lower-case file suffixes ``read_volume`` can try (folders are read by content, see ``can_read``).
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".vol", ".e2e", ".xml", ".mat", ".fda", ".fds", ".img", ".oct", ".dcm", ".dicom",
    ".tif", ".tiff", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".bmp",
)


def _read_xml(path: Path) -> OctVolume:
    from oct_wsss.io.folder import read_folder
    from oct_wsss.io.heyex import heyex_xml_info, read_heyex_xml

    info = heyex_xml_info(path)
    if info["exam_urls"]:
        return read_heyex_xml(path)
    return read_folder(path.parent)  # a stripped export: images beside it (or in bscans/), spacing from the XML


def read_volume(path: str | Path) -> OctVolume:
    """Read an OCT file or folder into an OctVolume; raises OctReadError (a ValueError) on any failure."""
    path = Path(path).expanduser()
    if not path.exists():
        raise OctReadError(path, "no such file or folder")
    try:
        if path.is_dir():
            from oct_wsss.io.folder import read_folder

            return read_folder(path)
        suffix = path.suffix.lower()
        reader = _readers().get(suffix)
        if reader is None:
            raise OctReadError(path, f"unknown file type '{suffix or path.name}' (supported: "
                                     f"{', '.join(SUPPORTED_SUFFIXES)} or a folder of B-scan images)")
        if path.stat().st_size == 0:
            raise OctReadError(path, "empty file (0 bytes)")
        return reader(path)
    except OctReadError:
        raise
    except MemoryError as exc:
        raise OctReadError(path, "not enough memory to read this volume") from exc
    except Exception as exc:  # last line of defence: no raw library exception escapes
        raise OctReadError(path, f"unreadable ({exc.__class__.__name__}: {str(exc)[:200]})") from exc


def can_read(path: str | Path) -> bool:
    """Cheap check by suffix or folder content (no voxels read); never raises."""
    try:
        p = Path(path)
        if p.is_dir():
            from oct_wsss.io.folder import looks_readable

            return looks_readable(p)
        return p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
    except Exception:
        return False
