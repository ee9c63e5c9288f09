"""What a store version's file holds: the checked mask, the arrays beside it, and what a mask says (its image-level
labels, the pixels the grader changed)."""

from __future__ import annotations

import numpy as np

from oct_wsss.classes import BACKGROUND, ONTOLOGY


def derived_labels(mask: np.ndarray) -> tuple[int, ...]:
    """Image-level labels of a mask: the lesion ids present in it."""
    return tuple(int(c) for c in np.unique(mask) if c != BACKGROUND)


def changes(mask: np.ndarray, proposal: np.ndarray | None) -> dict[str, dict[str, int]]:
    """Pixels the grader added and removed per class, relative to the proposal (all added when there was none)."""
    before = np.zeros_like(mask) if proposal is None else proposal
    out = {}
    for c in sorted((set(np.unique(mask).tolist()) | set(np.unique(before).tolist())) - {BACKGROUND}):
        added = int(((mask == c) & (before != c)).sum())
        removed = int(((before == c) & (mask != c)).sum())
        out[ONTOLOGY[c].key] = {"added": added, "removed": removed}
    return out


def checked_mask(mask: np.ndarray) -> np.ndarray:
    """A mask as uint8 ontology ids, or a ValueError that says what a mask is."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer) or mask.min(initial=0) < 0 \
            or mask.max(initial=0) >= len(ONTOLOGY):
        raise ValueError(f"a mask is a 2-D array of ontology ids 0..{len(ONTOLOGY) - 1}; got {mask.dtype} "
                         f"{mask.shape}")
    return mask.astype(np.uint8)


def version_arrays(mask: np.ndarray, **others: np.ndarray | None) -> dict[str, np.ndarray]:
    """The arrays of a version's file: the mask and the given others, each checked to be the mask's shape."""
    for name, other in others.items():
        if other is not None and np.shape(other) != mask.shape:
            raise ValueError(f"the {name} is {np.shape(other)}, the mask {mask.shape}")
    return {"mask": mask, **{k: np.asarray(v) for k, v in others.items() if v is not None}}
