"""RETOUCH (MICCAI 2017 retinal OCT fluid challenge): IRF, SRF and PED per B-scan, per vendor.

Layout as the challenge ships it: ``ROOT/RETOUCH-TrainingSet-<Vendor>/<CASE>/{oct.mhd,oct.raw,reference.mhd,
reference.raw}`` with Vendor in Cirrus, Spectralis, Topcon; ROOT may also be one vendor folder or one case folder.
``reference`` voxels are 0 background, 1 IRF, 2 SRF, 3 PED (the challenge's encoding). B-scans are the first axis
of the itk array (DimSize x y z = A-scans, depth, B-scans). Volumes read through :func:`oct_wsss.io.read_volume`
(the project's intensity policy); reference volumes with ``itk``. Patient = ``<Vendor>/<CASE>`` (one volume per
patient in the challenge), so splits are patient-level; image labels come from the reference of each B-scan.
"""

from __future__ import annotations

import re
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from oct_wsss.classes import IRF, PED, SRF
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import check_root, natural

VENDORS = ("Cirrus", "Spectralis", "Topcon")
#: reference voxel value -> ontology id
ENCODING: tuple[tuple[int, int], ...] = ((1, IRF), (2, SRF), (3, PED))
_VENDOR = re.compile(r"(cirrus|spectralis|topcon)", re.IGNORECASE)


def load_retouch(root: Path, vendors: list[str] | None = None) -> LabelledSet:
    """Every annotated B-scan of the RETOUCH cases under ``root`` (optionally only ``vendors``)."""
    root = check_root(root, "retouch")
    wanted = None if vendors is None else {_vendor_name(v, "vendors") for v in vendors}
    cases = [p.parent for p in natural(root.glob("**/oct.mhd"))]
    if not cases:
        raise ValueError(f"retouch: no <case>/oct.mhd under {root} (expected RETOUCH-TrainingSet-<Vendor>/<CASE>/)")
    samples, per_vendor = [], {}
    for case in cases:
        vendor = _case_vendor(case, root)
        if wanted is not None and vendor not in wanted:
            continue
        if not (case / "reference.mhd").is_file():
            raise ValueError(f"retouch: {case} has no reference.mhd (test cases carry no labels; leave them out)")
        present = _present(str(case))
        _check_shape(case, present.shape[0])
        patient = f"{vendor}/{case.name}"
        per_vendor[vendor] = per_vendor.get(vendor, 0) + 1
        for i, row in enumerate(present):
            labels = frozenset(c for (_, c), has in zip(ENCODING, row, strict=True) if has)
            samples.append(Sample(partial(retouch_bscan, case, i), labels, patient,
                                  partial(retouch_mask, case, i), volume=patient, bscan=i))
    if not samples:
        raise ValueError(f"retouch: no cases of vendors {sorted(wanted or [])} under {root}")
    return LabelledSet(samples, (SRF, IRF, PED), name="retouch",
                       info={"cases_per_vendor": per_vendor, "encoding": {"1": "irf", "2": "srf", "3": "ped"}})


def _vendor_name(text: str, where: str) -> str:
    for v in VENDORS:
        if v.lower() == str(text).lower():
            return v
    raise ValueError(f"retouch: {where}: unknown vendor {text!r}; known: {', '.join(VENDORS)}")


def _case_vendor(case: Path, root: Path) -> str:
    """The vendor named by the nearest folder above the case (``RETOUCH-TrainingSet-Topcon``), else 'unknown'."""
    for folder in (case, *case.parents):
        m = _VENDOR.search(folder.name)
        if m:
            return _vendor_name(m.group(1), str(folder))
        if folder == root.parent:
            break
    return "unknown"


def retouch_bscan(case: Path, index: int) -> np.ndarray:
    """Image loader: B-scan ``index`` of a RETOUCH case (a copy: the cached volume must not be edited)."""
    return _volume(str(case))[index].copy()


def retouch_mask(case: Path, index: int) -> np.ndarray:
    """Mask loader: B-scan ``index`` of the case's reference as ontology ids."""
    ref = _reference(str(case))[index]
    out = np.zeros(ref.shape, np.uint8)
    for value, class_id in ENCODING:
        out[ref == value] = class_id
    return out


@lru_cache(maxsize=2)
def _volume(case: str) -> np.ndarray:
    from oct_wsss.io import read_volume

    return read_volume(Path(case)).data


@lru_cache(maxsize=2)
def _reference(case: str) -> np.ndarray:
    """The case's reference (n, H, W) uint8; ValueError when itk cannot read it or it is not 3-D."""
    try:
        import itk
    except ImportError as exc:
        raise ValueError("retouch: reading reference.mhd needs the optional 'itk' package (pip install itk)") from exc
    try:
        ref = np.asarray(itk.array_from_image(itk.imread(str(Path(case) / "reference.mhd"))))
    except Exception as exc:  # itk raises RuntimeError for missing or short .raw files
        raise ValueError(f"retouch: {case}/reference.mhd unreadable ({type(exc).__name__}: {str(exc)[:150]})") from exc
    if ref.ndim != 3:
        raise ValueError(f"retouch: {case}/reference.mhd is {ref.ndim}-D; expected (B-scans, depth, A-scans)")
    return ref


def _check_shape(case: Path, n_reference: int) -> None:
    """ValueError when oct.mhd's DimSize says another number of B-scans than the reference holds."""
    text = (case / "oct.mhd").read_text(encoding="latin-1", errors="replace")
    m = re.search(r"^\s*DimSize\s*=\s*(\d+)\s+(\d+)\s+(\d+)", text, re.MULTILINE)
    if m and int(m.group(3)) != n_reference:
        raise ValueError(f"retouch: {case}: oct.mhd has {m.group(3)} B-scans, reference.mhd {n_reference}")


def _present(case: str) -> np.ndarray:
    """(n_bscans, 3) bool: which of IRF, SRF, PED each B-scan's reference holds."""
    ref = _reference(case)
    return np.stack([(ref == value).any(axis=(1, 2)) for value, _ in ENCODING], axis=1)
