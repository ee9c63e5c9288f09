"""DICOM OCT (OPT, multi-frame or single frame) through pydicom; identifying elements go to ``patient``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oct_wsss.io.errors import OctReadError
from oct_wsss.io.normalise import build_volume, fill_spacing
from oct_wsss.volume import OctVolume

#: DICOM keywords that identify a person or an encounter: kept in ``volume.patient`` only.
PHI_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "OtherPatientIDs",
    "IssuerOfPatientID", "PatientComments", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "InstitutionName", "AccessionNumber", "StudyID", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "ImageComments", "StudyDescription", "SeriesDescription",
)
_META_KEYWORDS = {"Modality": "modality", "Manufacturer": "manufacturer",
                  "ManufacturerModelName": "device_model", "SoftwareVersions": "software_version"}


def read_dicom(path: Path) -> OctVolume:
    """Voxels from ``pixel_array`` (frames = B-scans), spacing from PixelSpacing and slice spacing."""
    import pydicom

    from oct_wsss.io.limits import mapped

    try:
        with mapped(path) as stream:  # element lengths are read from a map: a bogus 4 GB length allocates nothing
            ds = pydicom.dcmread(stream)
        _check_pixel_size(path, ds)
        pixels = ds.pixel_array
    except OctReadError:
        raise
    except Exception as exc:  # InvalidDicomError, AttributeError (no pixel data), ValueError, EOFError
        raise OctReadError(path, f"not a readable DICOM image ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    try:  # elements are decoded lazily: a corrupt VR or value surfaces here, not in dcmread
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        rgb = int(ds.get("SamplesPerPixel", 1) or 1) in (3, 4)
        if photometric == "MONOCHROME1" and not rgb:
            pixels = pixels.max() - pixels + pixels.min()
        row_col, between = _spacing(ds)
        spacing, defaulted = fill_spacing((between, row_col[0], row_col[1]))
        meta: dict[str, Any] = {name: str(ds.get(kw)) for kw, name in _META_KEYWORDS.items() if ds.get(kw)}
        meta["device"] = " ".join(str(ds.get(k)) for k in ("Manufacturer", "ManufacturerModelName")
                                  if ds.get(k)) or None
        for kw in ("AcquisitionDateTime", "ContentDate", "SeriesDate", "StudyDate"):
            if ds.get(kw):
                meta["scan_date"] = str(ds.get(kw))
                break
        if defaulted and len(defaulted) < 3:
            meta["spacing_defaulted_axes"] = "".join(defaulted)
        patient = {kw: str(ds.get(kw)) for kw in PHI_KEYWORDS if ds.get(kw) not in (None, "")}
        laterality = ds.get("ImageLaterality") or ds.get("Laterality")
        if laterality is None:
            shared = _first_item(ds, "SharedFunctionalGroupsSequence")
            frame_lat = _first_item(shared, "FrameAnatomySequence") if shared is not None else None
            laterality = frame_lat.get("FrameLaterality") if frame_lat is not None else None
    except OctReadError:
        raise
    except Exception as exc:  # NotImplementedError (unknown VR), ValueError/TypeError on malformed values
        raise OctReadError(path, f"corrupt DICOM element ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    return build_volume(pixels, path, "dicom", spacing_mm=None if len(defaulted) == 3 else spacing,
                        laterality=laterality, meta={k: v for k, v in meta.items() if v is not None},
                        patient=patient, rgb_last=rgb)


def _check_pixel_size(path: Path, ds: Any) -> None:
    """Refuse Rows x Columns x NumberOfFrames x samples x bits that the stored pixel data cannot hold."""
    from oct_wsss.io.limits import check_size, product

    if "PixelData" not in ds:
        raise OctReadError(path, "DICOM file without pixel data")
    try:
        dims = [int(ds.get("Rows") or 0), int(ds.get("Columns") or 0), int(ds.get("NumberOfFrames") or 1),
                int(ds.get("SamplesPerPixel") or 1)]
        bits = int(ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError) as exc:
        raise OctReadError(path, f"DICOM image size unreadable ({exc})") from exc
    if min(dims) < 1 or bits < 1:
        raise OctReadError(path, f"DICOM image of size {dims[:3]} with {bits} bits allocated")
    needed = product(dims) * bits // 8
    stored = len(ds.PixelData)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(syntax is not None and getattr(syntax, "is_compressed", False))
    check_size(path, needed, stored, f"{dims[2]} frame(s) of {dims[0]}x{dims[1]} px ({bits} bits)",
               compressed=compressed)


def _first_item(ds: Any, keyword: str) -> Any:
    seq = ds.get(keyword) if ds is not None else None
    return seq[0] if seq else None


def _spacing(ds: Any) -> tuple[tuple[Any, Any], Any]:
    """(row spacing, column spacing) and the distance between frames, from top level or functional groups."""
    measures = None
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        item = _first_item(ds, group)
        if item is not None and _first_item(item, "PixelMeasuresSequence") is not None:
            measures = _first_item(item, "PixelMeasuresSequence")
            break
    sources = [s for s in (measures, ds) if s is not None]
    pixel = next((s.get("PixelSpacing") for s in sources if s.get("PixelSpacing")), None)
    between = next((s.get(k) for k in ("SpacingBetweenSlices", "SliceThickness") for s in sources if s.get(k)), None)
    try:
        row_col = (float(pixel[0]), float(pixel[1])) if pixel else (None, None)
    except (TypeError, ValueError, IndexError):
        row_col = (None, None)
    try:
        between = float(between) if between is not None else None
    except (TypeError, ValueError):
        between = None
    return row_col, between
