"""Training data as one list of :class:`Sample` records, whatever layout it came from, plus patient-level splits.

A dataset adapter (``oct_wsss.training.datasets``) turns a folder on disk into samples; trainers see only samples
and :class:`BscanDataset`, which loads, resizes and augments them into tensors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oct_wsss.classes import BACKGROUND, ONTOLOGY

ArraySource = Path | Callable[[], np.ndarray]  # an image file, or a picklable zero-argument loader (functools.partial)


@dataclass(frozen=True)
class Sample:
    """One B-scan: where its pixels are, which lesion classes it shows (ontology ids), whose eye it is.

    ``mask`` (optional) gives pixel ground truth in ontology ids, used for choosing the background threshold and
    for evaluation only — never for training a weakly supervised method.
    """

    image: ArraySource
    labels: frozenset[int]
    patient: str
    mask: ArraySource | None = None
    volume: str = ""
    bscan: int = 0

    def load_image(self) -> np.ndarray:
        """The B-scan as a 2-D uint8 or float32 array."""
        return _load(self.image, grey=True)

    def load_mask(self) -> np.ndarray | None:
        """The pixel mask as 2-D uint8 ontology ids, or None."""
        return None if self.mask is None else _load(self.mask, grey=False).astype(np.uint8)

    @property
    def healthy(self) -> bool:
        """True when no lesion class is present."""
        return not self.labels


@dataclass
class LabelledSet:
    """Samples of one dataset and the ontology ids its image-level labels speak about."""

    samples: list[Sample]
    classes: tuple[int, ...]
    name: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [c for c in self.classes if c == BACKGROUND or c not in {k.id for k in ONTOLOGY}]
        if bad:
            raise ValueError(f"dataset classes must be lesion ids of the ontology; got {bad}")

    def restrict(self, classes: Sequence[int]) -> LabelledSet:
        """The same samples with labels limited to ``classes`` (others become absent)."""
        keep = frozenset(classes)
        missing = keep - set(self.classes)
        if missing:
            names = ", ".join(ONTOLOGY[c].key for c in sorted(missing))
            raise ValueError(f"dataset {self.name or '?'} has no labels for {names}")
        samples = [Sample(s.image, s.labels & keep, s.patient, s.mask, s.volume, s.bscan) for s in self.samples]
        return LabelledSet(samples, tuple(c for c in self.classes if c in keep), self.name, dict(self.info))

    def label_matrix(self) -> np.ndarray:
        """(n_samples, n_classes) 0/1 float32 image-level labels in ``classes`` order."""
        return np.array([[c in s.labels for c in self.classes] for s in self.samples], np.float32).reshape(
            len(self.samples), len(self.classes)
        )


def patient_split(samples: Sequence[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split by patient (never one patient on both sides): ``round(val_fraction * n_patients)`` go to validation.

    Patients are ordered by a seeded hash of their id, so the split depends only on the ids and the seed, not on the
    order samples were listed in. At least one patient stays on each side when there are two or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    patients = sorted({s.patient for s in samples},
                      key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    n_val = round(val_fraction * len(patients))
    if val_fraction > 0 and len(patients) >= 2:
        n_val = min(max(n_val, 1), len(patients) - 1)
    val = set(patients[:n_val])
    return [s for s in samples if s.patient not in val], [s for s in samples if s.patient in val]


def patient_folds(samples: Sequence[Sample], k: int, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """k patient-level (train, test) folds; every patient is tested exactly once."""
    patients = sorted({s.patient for s in samples},
                      key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    if not 2 <= k <= len(patients):
        raise ValueError(f"k must be between 2 and the number of patients ({len(patients)}); got {k}")
    size = math.ceil(len(patients) / k)
    folds = []
    for i in range(k):
        test = set(patients[i * size : (i + 1) * size])
        if test:
            folds.append(([s for s in samples if s.patient not in test], [s for s in samples if s.patient in test]))
    return folds


def _load(source: ArraySource, grey: bool) -> np.ndarray:
    """Read a 2-D array from a file (with oct_wsss.io's image reader) or a loader."""
    if callable(source):
        array = np.asarray(source())
    else:
        from oct_wsss.io.arrays import read_image

        array = read_image(Path(source))
    if array.ndim == 3 and grey:
        from oct_wsss.io.normalise import to_grey

        array = to_grey(array)
    elif array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D B-scan, got shape {array.shape}")
    return array
