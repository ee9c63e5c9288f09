"""What a student learns from: B-scans paired with pseudo labels (any proposer's output) or graders' corrections.

Pseudo labels are the folders ``oct-wsss propose --out DIR`` writes (``labels.tif``, optionally ``scores.npy`` for
soft labels), one per volume under a root: ``ROOT/<volume id>/``. Corrections are pixel-exact masks from a
:class:`~oct_wsss.store.CorrectionStore`, which keeps each B-scan's pixels with its mask; they carry a larger weight.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from oct_wsss.io import read_labels
from oct_wsss.preprocess.inputs import resize
from oct_wsss.propose.retina import unit_input_for
from oct_wsss.store import ACCEPTED, Correction
from oct_wsss.training.data import Sample
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.loader import Augment

PSEUDO, CORRECTION, TRUTH, WEAK = "pseudo", "correction", "truth", "weak"
IGNORE = 255  #: a target id for pixels left out of the loss (a weak label that is unsure of them)


@dataclass(frozen=True)
class Target:
    """One training B-scan: image loader, target loader (ids (H, W) uint8 or soft (1 + K, H, W)), weight, origin."""

    image: Callable[[], np.ndarray]
    target: Callable[[], np.ndarray]
    weight: float
    origin: str
    key: tuple[str, int]


def one_hot(target: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """(1 + K, H, W) float32 from ontology ids (ids outside ``classes`` are background; :data:`IGNORE` pixels are all
    zero, so the loss leaves them out) or pass a soft target on."""
    if target.ndim == 3:
        if target.shape[0] != len(classes) + 1:
            raise ValueError(f"a soft target has {target.shape[0]} channels; expected {len(classes) + 1}")
        return target.astype(np.float32, copy=False)
    out = np.zeros((len(classes) + 1, *target.shape), np.float32)
    for j, c in enumerate(classes, start=1):
        out[j] = target == c
    out[0] = (1.0 - out[1:].sum(0)) * (target != IGNORE)
    return out


def _page(path: Path, index: int) -> np.ndarray:
    return read_labels(path)[index]


def _soft(scores: Path, labels: Path, index: int, columns: tuple[int, ...], classes: tuple[int, ...]) -> np.ndarray:
    """Soft target from a proposer's score maps, restricted to the B-scan's labelled classes (absent ones are 0)."""
    maps = np.load(scores, mmap_mode="r")[index].astype(np.float32)
    present = set(np.unique(read_labels(labels)[index]).tolist())
    out = np.zeros((len(classes) + 1, *maps.shape[1:]), np.float32)
    for j, c in enumerate(classes, start=1):
        if c in columns and c in present:
            out[j] = np.clip(maps[columns.index(c)], 0.0, 1.0)
    total = out[1:].sum(0)
    out[1:] /= np.maximum(total, 1.0)
    out[0] = 1.0 - out[1:].sum(0)
    return out


def _only(loader: Callable[[], np.ndarray], keep: frozenset[int], classes: tuple[int, ...]) -> np.ndarray:
    """A pseudo label with the classes its B-scan's image-level labels deny set to background."""
    target = np.asarray(loader())
    if target.ndim == 2:
        return np.where(np.isin(target, list(keep)), target, 0).astype(np.uint8)
    target = target.copy()
    for j, c in enumerate(classes, start=1):
        if c not in keep:
            target[0] += target[j]
            target[j] = 0.0
    return target


def pseudo_targets(samples: Sequence[Sample], root: str | Path, classes: Sequence[int], *,
                   soft: bool = False, image_labels: bool = True) -> list[Target]:
    """A target per sample from ``root/<volume>/labels.tif`` (and ``scores.npy`` when ``soft``), weight 1.

    With ``image_labels`` (weak supervision knows them for every training B-scan) a class the B-scan is not
    labelled with is removed from its pseudo label, whatever the proposer thought.
    """
    root = Path(root)
    classes = tuple(classes)
    out = []
    for volume in sorted({s.volume for s in samples}):
        folder = root / volume
        labels = folder / "labels.tif"
        if not labels.is_file():
            raise TrainingError(f"no pseudo labels for volume {volume!r}: {labels} is missing "
                                f"(write it with `oct-wsss propose <volume> --out {folder}`)")
        pages = read_labels(labels).shape[0]
        loader: Callable[..., np.ndarray]
        if soft:
            scores = folder / "scores.npy"
            if not scores.is_file():
                raise TrainingError(f"soft labels asked for but {scores} is missing (propose with --keep-scores)")
            columns = tuple(json.loads((folder / "provenance.json").read_text())["image_level"]["classes"])
            loader = partial(_soft, scores, labels, columns=columns, classes=classes)
        else:
            loader = partial(_page, labels)
        for s in samples:
            if s.volume != volume:
                continue
            if not 0 <= s.bscan < pages:
                raise TrainingError(f"{labels} has {pages} B-scans; sample {s.bscan} of {volume!r} is beyond it")
            target = partial(loader, index=s.bscan)
            if image_labels:
                target = partial(_only, target, frozenset(s.labels), classes)
            out.append(Target(s.load_image, target, 1.0, PSEUDO, (volume, s.bscan)))
    return out


def truth_targets(samples: Sequence[Sample]) -> list[Target]:
    """Targets from the samples' own pixel masks (the phantom's ground truth), weight 1."""
    missing = [s.volume or str(s.image) for s in samples if s.mask is None]
    if missing:
        raise TrainingError(f"pseudo: {{truth: true}} needs pixel masks; {len(missing)} samples have none "
                            f"(first: {missing[0]})")
    return [Target(s.load_image, s.load_mask, 1.0, TRUTH, (s.volume, s.bscan)) for s in samples]


def _stored(correction: Correction, key: str) -> np.ndarray:
    return correction.arrays()[key]


def _has_image(path: Path) -> bool:
    with np.load(path, allow_pickle=False) as npz:
        return "image" in npz.files


def correction_targets(corrections: Sequence[Correction], weight: float) -> list[Target]:
    """Targets from accepted corrections (each with its stored B-scan), weighted ``weight`` against pseudo labels."""
    out = []
    for c in corrections:
        if c.status != ACCEPTED:
            continue
        if c.mask_file is None or not _has_image(c.mask_file):
            raise TrainingError(f"the correction of B-scan {c.bscan} (volume {c.volume}) has no stored image; "
                                "accept it again from the viewer so the B-scan is kept with its mask")
        out.append(Target(partial(_stored, c, "image"), partial(_stored, c, "mask"), float(weight), CORRECTION,
                          (c.volume, c.bscan)))
    return out


class StudentDataset(Dataset):
    """Items ``{"image": (1, h, w), "target": (1 + K, h, w), "weight": ()}`` at the input size, cached in memory
    (``crop``: a random (h, w) window of it, drawn anew each epoch)."""

    def __init__(self, targets: Sequence[Target], classes: Sequence[int], size: tuple[int, int],
                 augment: Augment | None = None, seed: int = 0, intensity: str = "unit",
                 crop: Sequence[int] | None = None) -> None:
        self.targets, self.classes, self.size = list(targets), tuple(classes), tuple(size)
        self.intensity, self.crop = intensity, None if crop is None else (int(crop[0]), int(crop[1]))
        self.augment, self.seed, self.epoch = augment, seed, 0
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.targets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def prepared(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (1, h, w) in [0, 1] (harmonised when asked) and target (1 + K, h, w), resized bilinearly (it stays a
        distribution)."""
        if i not in self._cache:
            t = self.targets[i]
            image = unit_input_for(t.image(), self.intensity)
            target = one_hot(np.asarray(t.target()), self.classes)
            if target.shape[1:] != image.shape:
                raise TrainingError(f"target of {t.key} is {target.shape[1:]}, its B-scan {image.shape}")
            x = torch.from_numpy(np.ascontiguousarray(resize(image, self.size)))[None]
            y = torch.from_numpy(np.ascontiguousarray(resize(target, self.size)))
            self._cache[i] = (x, y / y.sum(0, keepdim=True).clamp_min(1e-6))
        return self._cache[i]

    def window(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random ``crop`` window of image and target (both unchanged without one)."""
        if self.crop is None:
            return x, y
        (h, w), (H, W) = self.crop, x.shape[-2:]
        top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        return x[:, top:top + h, left:left + w], y[:, top:top + h, left:left + w]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.window(*self.prepared(i), np.random.default_rng([self.seed, self.epoch, i, 1]))
        if self.augment is not None:
            frame = torch.ones_like(y[:1])  # rotated with the target, so corners are told from ignored pixels
            x, y = self.augment(x, torch.cat([y, frame]), np.random.default_rng([self.seed, self.epoch, i]))
            y, frame = y[:-1], y[-1:]
            y = torch.cat([y[:1] + 1.0 - frame, y[1:]])  # rotated-in corners are background; ignored pixels stay 0
        return {"image": x, "target": y, "weight": torch.tensor(self.targets[i].weight, dtype=torch.float32)}
