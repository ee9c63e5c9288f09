"""``BscanDataset``: samples -> tensors at the network's input size, with the AGM paper's training augmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from oct_wsss.preprocess.inputs import resize, retina_mask
from oct_wsss.preprocess.intensity import check_intensity, unit_input
from oct_wsss.propose.layers import LayerModel
from oct_wsss.propose.layers import retina_mask as layer_retina
from oct_wsss.propose.retina import unit_input_for
from oct_wsss.training.data import Sample


@dataclass(frozen=True)
class Augment:
    """Brightness/contrast jitter, horizontal flip and rotation; geometry is applied to the retina mask too.

    Defaults are the AGM paper's (METHODS.md §1): brightness 0.3, contrast 0.3, flip p = 0.5, rotation up to 60°.
    """

    brightness: float = 0.3
    contrast: float = 0.3
    flip: float = 0.5
    rotation: float = 60.0

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """image (1, H, W) in [0, 1] and mask (1, H, W) -> augmented copies."""
        b = 1.0 + rng.uniform(-self.brightness, self.brightness)
        c = 1.0 + rng.uniform(-self.contrast, self.contrast)
        mean = image.mean()
        image = ((image * b - mean * b) * c + mean * b).clamp(0.0, 1.0)
        if rng.uniform() < self.flip:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.rotation > 0:
            angle = math.radians(rng.uniform(-self.rotation, self.rotation))
            image, mask = _rotate(image, angle), _rotate(mask, angle, nearest=True)
        return image, mask


def _rotate(t: torch.Tensor, angle: float, nearest: bool = False) -> torch.Tensor:
    """Rotate (C, H, W) about its centre; pixels from outside become 0."""
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=t.dtype)[None]
    grid = F.affine_grid(theta, [1, *t.shape], align_corners=False)
    return F.grid_sample(t[None], grid, mode="nearest" if nearest else "bilinear", align_corners=False)[0]


class BscanDataset(Dataset):
    """Items ``{"image": (1, H, W), "retina": (1, H, W), "labels": (K,), "index": i}``, float32, at ``size``.

    ``classes`` orders the label vector (ontology ids). With ``with_mask`` the item also has ``"mask"``: the pixel
    ground truth at the B-scan's native size (uint8; evaluation only, so not batchable across sizes). ``cache``
    keeps the resized B-scans in memory (per worker process), so later epochs skip decoding and resizing;
    ``with_retina=False`` skips the retina mask (all ones), which GANomaly does not need; ``layers`` (a
    ``propose.layers.LayerModel``) takes the retina from it (ILM to BM at native size) instead of the heuristic.
    """

    def __init__(self, samples: Sequence[Sample], classes: Sequence[int], size: tuple[int, int],
                 augment: Augment | None = None, seed: int = 0, with_mask: bool = False, cache: bool = False,
                 with_retina: bool = True, intensity: str = "unit", layers: LayerModel | None = None) -> None:
        self.samples, self.classes, self.size = list(samples), tuple(classes), tuple(size)
        self.intensity = check_intensity(intensity)  # "harmonised": preprocess.intensity.harmonise at native size
        self.augment, self.seed, self.with_mask, self.with_retina = augment, seed, with_mask, with_retina
        self.layers = layers
        self.epoch = 0
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Different augmentation draws each epoch, the same ones for the same (seed, epoch, index)."""
        self.epoch = epoch

    def _prepare(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        """The B-scan resized to the input size and its retina mask, (1, H, W) each."""
        raw = sample.load_image()
        layer_mask = None if self.layers is None else layer_retina(raw, model=self.layers)[0]
        unit = unit_input_for(raw, self.intensity) if layer_mask is None else \
            unit_input(raw, self.intensity, layer_mask)  # "harmonised-layers" reuses the layer mask
        image = resize(unit, self.size)
        x = torch.from_numpy(np.ascontiguousarray(image))[None]
        if not self.with_retina:
            mask = np.ones(image.shape, bool)
        elif layer_mask is not None:
            mask = resize(layer_mask, self.size, order=0)
        else:
            mask = retina_mask(image)
        return x, torch.from_numpy(mask.astype(np.float32))[None]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.samples[i]
        x, retina = self._cache[i] if self._cache is not None and i in self._cache else self._prepare(sample)
        if self._cache is not None:
            self._cache[i] = (x, retina)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            x, retina = self.augment(x, retina, rng)
        labels = torch.tensor([c in sample.labels for c in self.classes], dtype=torch.float32)
        item = {"image": x, "retina": retina, "labels": labels, "index": torch.tensor(i)}
        if self.with_mask:
            mask = sample.load_mask()
            if mask is None:
                raise ValueError(f"sample {i} ({sample.volume or sample.image}) has no pixel mask")
            item["mask"] = torch.from_numpy(mask)
        return item
