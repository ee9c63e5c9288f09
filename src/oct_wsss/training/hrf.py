"""Training the HRF presence classifiers (CCT or attention-MIL) at native B-scan size (METHODS.md section 3).

Image-level targets only: binary presence, 0/1/>1 classes or the count — counts are the connected HRF components of
at least ``min_area`` px in the mask (the paper drops annotations under 5 px); for the phantom that is its ground
truth, for real data a per-B-scan count. AdamW + OneCycle, inputs normalised by the training mean/std, augmentation
by vertical shift, flip, scale, rotation and intensity. Writes an ``hrf-cct`` or ``hrf-mil`` checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage import measure
from torch import Tensor, nn

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import HRF
from oct_wsss.evaluate.classification import f1_score, roc_auc
from oct_wsss.models import hrf_labels
from oct_wsss.models.cct import Cct, CctConfig
from oct_wsss.models.config import strict_from_dict
from oct_wsss.models.mil import MilConfig, MilNet
from oct_wsss.preprocess.intensity import UNIT, check_intensity
from oct_wsss.propose.hrf import DEFAULTS as PROPOSER_DEFAULTS
from oct_wsss.propose.retina import unit_input_for
from oct_wsss.training.data import Sample
from oct_wsss.training.distributed import Dist, distributed
from oct_wsss.training.errors import TrainingCancelled, TrainingError
from oct_wsss.training.runlog import MetricLog, seed_everything

MODELS = ("cct", "mil")


@dataclass
class HrfTrainConfig:
    """Options of :func:`train_hrf`; ``config`` overrides the model's architecture (after ``variant`` for CCT)."""

    model: str = "cct"
    label_type: str = "binary"
    variant: str = "cct_7"
    config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3  # OneCycle max lr (the paper's 1e-5 is for 50k steps; short CPU runs need more)
    weight_decay: float = 0.01
    min_area: int = 5
    intensity: str = "unit"  # "harmonised": preprocess.intensity.harmonise before mean/std (recorded in the checkpoint)
    augment: dict[str, float] = field(default_factory=lambda: {"shift": 0.05, "flip": 0.5, "scale": 0.1,
                                                               "rotation": 5.0, "intensity": 0.2})
    proposer: dict[str, Any] = field(default_factory=dict)  # stored as checkpoint params (iterations, crop_size...)

    def __post_init__(self) -> None:
        """Validate early."""
        if self.model not in MODELS:
            raise TrainingError(f"hrf.model must be one of {MODELS}, got {self.model!r}")
        if self.label_type not in hrf_labels.LABEL_TYPES:
            raise TrainingError(f"hrf.label_type must be one of {hrf_labels.LABEL_TYPES}, got {self.label_type!r}")
        try:
            check_intensity(self.intensity)
        except ValueError as err:
            raise TrainingError(f"hrf.{err}") from err
        unknown = set(self.proposer) - set(PROPOSER_DEFAULTS)
        if unknown:
            raise TrainingError(f"unknown hrf.proposer keys {sorted(unknown)}; known: {sorted(PROPOSER_DEFAULTS)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HrfTrainConfig:
        """From a recipe's ``hrf`` block; unknown keys are an error."""
        try:
            return strict_from_dict(cls, data, "hrf")
        except ValueError as err:
            raise TrainingError(str(err)) from err


def hrf_count(mask: np.ndarray | None, min_area: int = 5) -> int:
    """Connected HRF components of at least ``min_area`` px in an ontology-id mask (0 without a mask)."""
    if mask is None:
        return 0
    regions = measure.regionprops(measure.label(mask == HRF, connectivity=2))
    return sum(r.area >= min_area for r in regions)


def load_set(samples: Sequence[Sample], min_area: int, intensity: str = "unit") -> tuple[Tensor, Tensor]:
    """(N, 1, H, W) B-scans in [0, 1] at native size and (N,) HRF counts; all B-scans must share one size."""
    images, counts = [], []
    for s in samples:
        images.append(unit_input_for(s.load_image(), intensity))
        mask = s.load_mask()
        count = hrf_count(mask, min_area) if mask is not None else int(HRF in s.labels)
        counts.append(count)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise TrainingError(f"HRF training needs B-scans of one native size (no resizing); found {sorted(shapes)}")
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(counts)


def augment(x: Tensor, opts: dict[str, float], gen: torch.Generator) -> Tensor:
    """Random vertical shift, horizontal flip, scale, rotation (one affine warp) and intensity gain of (B, 1, H, W)."""
    b = x.shape[0]

    def u(scale: float) -> Tensor:
        return (torch.rand(b, generator=gen) * 2 - 1) * scale

    angle = u(math.radians(opts.get("rotation", 0.0)))
    s = 1 + u(opts.get("scale", 0.0))
    flip = torch.where(torch.rand(b, generator=gen) < opts.get("flip", 0.0), -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / s * flip, -torch.sin(angle) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / s * flip, torch.cos(angle) / s
    theta[:, 1, 2] = u(2 * opts.get("shift", 0.0))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = 1 + u(opts.get("intensity", 0.0))
    return (out * gain[:, None, None, None]).clamp(0, 1)


def build(opts: HrfTrainConfig, size: tuple[int, int]) -> Cct | MilNet:
    """The network the options describe, for B-scans of native ``size``."""
    try:
        if opts.model == "cct":
            return Cct(CctConfig.variant(opts.variant, **{"label_type": opts.label_type, "input_size": list(size),
                                                          **opts.config}))
        return MilNet(MilConfig.from_dict({"label_type": opts.label_type, **opts.config}))
    except ValueError as err:
        raise TrainingError(f"hrf model: {err}") from err


@dataclass
class HrfRun:
    """A trained classifier with the normalisation it was trained under and the per-epoch history."""

    net: Cct | MilNet
    normalisation: dict[str, Any]
    history: list[dict[str, Any]]


def predict(net: nn.Module, x: Tensor, norm: dict[str, float], label_type: str, device: torch.device,
            batch: int = 16) -> np.ndarray:
    """HRF presence probabilities (N,) of unit B-scans."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = ((x[i:i + batch] - norm["mean"]) / norm["std"]).to(device)
            out.append(hrf_labels.presence(net(xb), label_type).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_hrf(train: Sequence[Sample], val: Sequence[Sample], opts: HrfTrainConfig, run_dir: Path, *,
              device: str | torch.device = "cpu", seed: int = 0, log: Callable[[str], None] = print,
              cancel: Callable[[], bool] | None = None) -> HrfRun:
    """Train one classifier; logs loss and validation AUROC / F1 per epoch to ``run_dir/hrf-metrics.csv``.

    Works alone or under ``torchrun``: each rank trains on its share of every epoch, rank 0 validates and writes.
    """
    seed_everything(seed)
    with distributed(device) as dist:
        return _HrfRun(train, val, opts, dist, seed).fit(run_dir, dist.main_log(log), cancel)


class _HrfRun:
    """One training run's tensors, network, optimizer and schedule, so the epoch loop and its parts share them."""

    def __init__(self, train: Sequence[Sample], val: Sequence[Sample], opts: HrfTrainConfig, dist: Dist,
                 seed: int) -> None:
        self.opts, self.dist, self.seed = opts, dist, seed
        self.x, self.counts = load_set(train, opts.min_area, opts.intensity)
        self.xv, self.cv = load_set(val, opts.min_area, opts.intensity) if val else (self.x[:0], self.counts[:0])
        self.norm: dict[str, Any] = {"mean": float(self.x.mean()), "std": float(self.x.std()) or 1.0}
        if opts.intensity != UNIT:
            self.norm["intensity"] = opts.intensity
        self.net = build(opts, tuple(self.x.shape[-2:])).to(dist.device)
        self.model = dist.wrap(self.net)
        per_rank = math.ceil(len(self.x) / dist.world_size)
        self.steps = max(1, math.ceil(per_rank / opts.batch_size)) * opts.epochs
        self.optim = torch.optim.AdamW(self.net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.optim, max_lr=opts.lr, total_steps=self.steps)
        self.gen = torch.Generator().manual_seed(seed)

    def fit(self, run_dir: Path, log: Callable[[str], None], cancel: Callable[[], bool] | None) -> HrfRun:
        """Every epoch: train, then on rank 0 validate and log; the network is left in eval mode."""
        opts, dist = self.opts, self.dist
        metrics = MetricLog(run_dir / "hrf-metrics.csv") if dist.is_main else None
        history = []
        log(f"hrf: {opts.model} ({opts.label_type}), {len(self.x)} train B-scans at {tuple(self.x.shape[-2:])}, "
            f"{int((self.counts > 0).sum())} with HRF; {self.steps} steps on each of {dist.world_size} process(es)")
        try:
            for epoch in range(opts.epochs):
                row: dict[str, Any] = {"epoch": epoch + 1, "loss": round(self._epoch(epoch, cancel), 5)}
                if len(self.xv) and dist.is_main:
                    p = predict(self.net, self.xv, self.norm, opts.label_type, dist.device)
                    truth = self.cv.numpy() > 0
                    row.update(val_auroc=roc_auc(p, truth), val_f1=f1_score(p >= 0.5, truth))
                if metrics is not None:
                    metrics.log(row)
                history.append(row)
                log(f"hrf epoch {epoch + 1}/{opts.epochs}: " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                                         if k != "epoch"))
                dist.barrier()
        finally:
            if metrics is not None:
                metrics.close()
        return HrfRun(self.net.eval(), self.norm, history)

    def _epoch(self, epoch: int, cancel: Callable[[], bool] | None) -> float:
        """One pass over this rank's share of the training B-scans, augmented; the mean loss over ranks."""
        opts, dev = self.opts, self.dist.device
        self.net.train()
        order = self.dist.shard(len(self.x), seed=self.seed, epoch=epoch, generator=self.gen)
        total = 0.0
        for i in range(0, len(order), opts.batch_size):
            if self.dist.cancelled(cancel):
                raise TrainingCancelled("HRF training cancelled")
            idx = order[i:i + opts.batch_size]
            xb = (augment(self.x[idx], opts.augment, self.gen) - self.norm["mean"]) / self.norm["std"]
            loss = hrf_labels.loss(self.model(xb.to(dev)), self.counts[idx].to(dev), opts.label_type)
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()
            self.sched.step()
            total += loss.item() * len(idx)
        self.dist.sync_buffers(self.net)  # the parameters agree already (DDP averaged the gradients)
        return self.dist.mean(total / len(order))


def hrf_checkpoint(run: HrfRun, opts: HrfTrainConfig, size: tuple[int, int], *, training: dict[str, Any] | None = None,
                   metrics: dict[str, Any] | None = None) -> Checkpoint:
    """An ``hrf-cct`` / ``hrf-mil`` checkpoint: architecture, normalisation and the proposer's defaults."""
    return Checkpoint.new(run.net.state_dict(), method=f"hrf-{opts.model}",
                          architecture={opts.model: run.net.config.to_dict()}, classes=[HRF], input_size=size,
                          normalisation=run.normalisation, training={**(training or {}), "options": asdict(opts)},
                          metrics=metrics, params={**PROPOSER_DEFAULTS, **opts.proposer})
