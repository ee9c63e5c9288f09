"""Test-time augmentations for CAM smoothing, each a small declarative record that knows its own inverse."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Augmentation:
    """An optional horizontal flip and an intensity factor; ``invert`` maps a CAM back to the original frame."""

    flip: bool = False
    intensity: float = 1.0

    @property
    def is_identity(self) -> bool:
        """True when applying it leaves every input unchanged."""
        return not self.flip and self.intensity == 1.0

    def apply(self, inputs: Sequence[Tensor], intensity_inputs: Collection[int]) -> list[Tensor]:
        """Scale the inputs listed in ``intensity_inputs``; flip every spatial input (ndim >= 3) along its width."""
        out = []
        for i, t in enumerate(inputs):
            if i in intensity_inputs and self.intensity != 1.0:
                t = t * self.intensity
            if self.flip and t.ndim >= 3:
                t = t.flip(-1)
            out.append(t)
        return out

    def invert(self, cam: Tensor) -> Tensor:
        """Map a map (..., H, W) computed on the augmented input back to the original frame."""
        return cam.flip(-1) if self.flip else cam


#: No augmentation: a plain CAM.
IDENTITY: tuple[Augmentation, ...] = (Augmentation(),)
#: AGM's augmentation smoothing: horizontal flip × intensity factors {0.9, 1.0, 1.1} (METHODS.md §1).
SMOOTHING: tuple[Augmentation, ...] = tuple(
    Augmentation(flip=flip, intensity=s) for flip in (False, True) for s in (0.9, 1.0, 1.1)
)
