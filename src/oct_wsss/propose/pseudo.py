"""From class activation maps to pseudo labels (METHODS.md §1 "Retina mask, pseudo labels, threshold").

Per class: CAM at the B-scan's native size × soft retina mask (1 inside, 0.5 outside) → min-max per class → classes
judged absent are zeroed → argmax over [α, score_1..score_K] → ontology ids. α is the background threshold τ.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from oct_wsss.propose.batching import run_in_batches
from oct_wsss.propose.proposal import BscanResult, Cancel
from oct_wsss.volume import OctVolume


def class_scores(cams: np.ndarray | torch.Tensor, soft: np.ndarray | torch.Tensor,
                 present: np.ndarray | torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
    """Scores (n, K, H, W) in [0, 1]: CAMs (n, K, H, W) × soft mask (n, H, W), min-max per class; absent -> 0.

    Computed where the CAMs live (a GPU tensor stays on the GPU; a numpy array comes back as one)."""
    if cams.ndim != 4 or tuple(soft.shape) != (cams.shape[0], *cams.shape[2:]):
        raise ValueError(f"cams (n, K, H, W) and soft mask (n, H, W) expected; got {tuple(cams.shape)}, "
                         f"{tuple(soft.shape)}")
    c = torch.as_tensor(cams).float()
    s = c * torch.as_tensor(soft, device=c.device).float()[:, None]
    lo, hi = s.amin(dim=(2, 3), keepdim=True), s.amax(dim=(2, 3), keepdim=True)
    s = torch.where(hi > lo, (s - lo) / torch.clamp(hi - lo, min=1e-12), 0.0)
    if present is not None:
        if tuple(present.shape) != tuple(cams.shape[:2]):
            raise ValueError(f"present must be (n, K) = {tuple(cams.shape[:2])}; got {tuple(present.shape)}")
        s = s * torch.as_tensor(present, device=c.device).float()[:, :, None, None]
    return s.cpu().numpy() if isinstance(cams, np.ndarray) else s


def pseudo_labels(scores: np.ndarray, class_ids: Sequence[int], alpha: float) -> np.ndarray:
    """uint8 ids (n, H, W): ``class_ids[argmax]`` where the best score is strictly above ``alpha``, else 0.

    The same rule as ``oct_wsss.evaluate.sweep_threshold`` (ties go to background), so the α chosen there
    reproduces its mIoU here.
    """
    if scores.ndim != 4 or scores.shape[1] != len(class_ids):
        raise ValueError(f"scores must be (n, {len(class_ids)}, H, W); got {scores.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"the background threshold must be in [0, 1]; got {alpha}")
    best = scores.argmax(axis=1)
    top = np.take_along_axis(scores, best[:, None], axis=1)[:, 0]
    ids = np.asarray(class_ids, dtype=np.uint8)
    return np.where(top > alpha, ids[best], 0).astype(np.uint8)


def run_scored(proposer: Any, volume: OctVolume, bscans: Sequence[int], cancel: Cancel | None = None,
               keep_scores: bool = False) -> Iterator[BscanResult]:
    """The ``run`` of every score-map proposer (AGM, DFP): ``proposer.scores`` per batch, then :func:`pseudo_labels`
    at ``proposer.threshold``; on GPU out of memory the batch halves (and ``proposer.batch_size`` with it), then the
    proposer moves to the CPU (``proposer.to_cpu``)."""
    def work(batch: Sequence[int]) -> list[BscanResult]:
        scores, probs = proposer.scores([volume.data[i] for i in batch])
        labels = pseudo_labels(scores, proposer.classes, proposer.threshold)
        return [BscanResult(i, labels[j], probs[j], scores[j] if keep_scores else None) for j, i in enumerate(batch)]

    def halved(size: int) -> None:
        proposer.batch_size = size

    yield from run_in_batches(list(bscans), proposer.batch_size, work, cancel, on_retry=halved,
                              to_cpu=None if proposer.device.type == "cpu" else proposer.to_cpu)
