"""Training the student from mixed supervision: weighted soft cross-entropy + Dice over pseudo labels and corrections.

Class imbalance (lesions are a few per cent of the pixels) is handled by per-class weights from the targets' pixel
frequencies and by the Dice term; a correction's pixels count ``correction_weight`` times a pseudo label's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.models.config import strict_from_dict
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.preprocess.intensity import check_intensity, normalisation_meta
from oct_wsss.propose.student import StudentProposer
from oct_wsss.training.data import Sample
from oct_wsss.training.distributed import Dist, distributed
from oct_wsss.training.errors import TrainingCancelled
from oct_wsss.training.loader import Augment
from oct_wsss.training.runlog import MetricLog, seed_everything
from oct_wsss.training.state import load_state, save_state
from oct_wsss.training.student_data import StudentDataset, Target

STATE_FILE = "student-state.safetensors"


@dataclass
class StudentTrainConfig:
    """Schedule and loss of student training (a recipe's ``student`` block, minus ``config``: the architecture)."""

    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    correction_weight: float = 4.0  # given to correction targets when they are made (see student_recipe)
    dice_weight: float = 1.0
    class_weights: str | list[float] | None = "auto"  # "auto": (median frequency / frequency) ** 0.5, clipped
    soft: bool = False  # train on the proposer's score maps (scores.npy) rather than its labels
    augment: bool | dict[str, float] = field(default_factory=lambda: {"rotation": 5.0})
    select: str = "last"  # or "val_miou": keep the epoch with the best validation mIoU (needs validation masks)
    intensity: str = "unit"  # or "harmonised": inputs via preprocess.intensity.harmonise, recorded in the checkpoint
    #: train on random (h, w) windows of each input-size B-scan (the network is fully convolutional and proposes on
    #: the whole input size): a native-resolution input at the step cost of a smaller one
    crop: list[int] | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs >= 0, batch_size >= 1 and lr > 0 are required")
        if self.correction_weight <= 0 or self.dice_weight < 0:
            raise ValueError("correction_weight must be > 0 and dice_weight >= 0")
        if self.select not in ("last", "val_miou"):
            raise ValueError(f"select must be 'last' or 'val_miou', got {self.select!r}")
        if isinstance(self.class_weights, str) and self.class_weights != "auto":
            raise ValueError(f"class_weights must be 'auto', null or a list, got {self.class_weights!r}")
        check_intensity(self.intensity)
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 16 or any(c % 16 for c in self.crop)):
            raise ValueError(f"crop must be [h, w], each a multiple of 16 (the U-Net's stride); got {self.crop!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentTrainConfig:
        return strict_from_dict(cls, data, "student training")

    def augmentation(self) -> Augment | None:
        if self.augment is False:
            return None
        return Augment(rotation=5.0) if self.augment is True else Augment(**self.augment)


def student_loss(logits: Tensor, target: Tensor, weight: Tensor, class_weights: Tensor,
                 dice_weight: float = 1.0) -> Tensor:
    """Per-sample-weighted soft cross-entropy (class-weighted) + ``dice_weight`` × (1 − mean lesion soft Dice)."""
    w = weight / weight.sum().clamp_min(1e-8)
    ce = -(target * F.log_softmax(logits, 1) * class_weights[None, :, None, None]).sum(1).mean((1, 2))
    loss = (ce * w).sum()
    if dice_weight > 0:
        p = torch.softmax(logits, 1)[:, 1:] * target.sum(1, keepdim=True)  # pixels left out (all-zero targets) too
        t = target[:, 1:]
        wb = w[:, None, None, None]
        inter = (wb * p * t).sum((0, 2, 3))
        denom = (wb * (p + t)).sum((0, 2, 3))
        dice = (2 * inter + 1e-4) / (denom + 1e-4)
        loss = loss + dice_weight * (1.0 - dice.mean())
    return loss


def auto_class_weights(dataset: StudentDataset) -> np.ndarray:
    """(median frequency / class frequency) ** 0.5 over the classes the targets hold, clipped to [0.1, 10], mean 1.

    Classes no target holds get weight 1 (they never appear in a target, so the weight only matters once they do).
    """
    freq = np.zeros(len(dataset.classes) + 1)
    for i in range(len(dataset)):
        freq += dataset.prepared(i)[1].sum((1, 2)).numpy()
    weights = np.ones_like(freq)
    seen = freq > 0
    if seen.any():
        f = freq[seen] / freq.sum()
        w = np.clip((np.median(f) / f) ** 0.5, 0.1, 10.0)
        weights[seen] = w / w.mean()
    return weights.astype(np.float32)


def val_miou(proposer: StudentProposer, samples: Sequence[Sample]) -> float | None:
    """Pooled mIoU (background included) of the student's labels on samples with pixel masks, at native size."""
    from oct_wsss.evaluate import image_confusions, segmentation_scores

    scored = [s for s in samples if s.mask is not None]
    if not scored:
        return None
    cms = image_confusions([s.load_mask() for s in scored], [proposer.predict(s.load_image()) for s in scored])
    return segmentation_scores(cms, proposer.classes).miou


def train_student(targets: Sequence[Target], classes: Sequence[int], input_size: tuple[int, int],
                  architecture: StudentConfig | dict[str, Any], config: StudentTrainConfig, run_dir: str | Path, *,
                  val: Sequence[Sample] = (), init: StudentNet | None = None, device: str = "auto", seed: int = 0,
                  resume: bool = True, log: Callable[[str], None] = print,
                  cancel: Callable[[], bool] | None = None) -> tuple[StudentNet, dict[str, Any]]:
    """Train (or continue ``init``) on ``targets``; returns the network and a summary (losses, val mIoU, weights).

    Works alone or under ``torchrun`` (rank 0 validates and writes); each epoch saves a resumable state in
    ``run_dir``, which a rerun with ``resume`` continues from.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    with distributed(device) as dist:
        classes = tuple(classes)
        if isinstance(architecture, dict):
            architecture = StudentConfig.from_dict({"n_outputs": len(classes) + 1, **architecture})
        net = (init or StudentNet(architecture)).to(dist.device)
        if config.crop is not None and any(c > s for c, s in zip(config.crop, input_size, strict=True)):
            raise ValueError(f"crop {config.crop} is larger than the input size {list(input_size)}")
        dataset = StudentDataset(targets, classes, input_size, config.augmentation(), seed, config.intensity,
                                 crop=config.crop)
        cw = _class_weights(config, dataset)
        run = _StudentRun(net, dataset, config, torch.from_numpy(cw).to(dist.device), dist, seed, cancel)
        proposer = StudentProposer(net, classes, input_size, device=dist.device, batch_size=4,
                                   intensity=config.intensity)
        losses, best = run.fit(run_dir / STATE_FILE, resume, proposer, val, dist.main_log(log))
    net.eval()
    return net, {"losses": losses, "best_epoch": best["epoch"], "val_miou": best["val_miou"],
                 "class_weights": [round(float(w), 4) for w in cw], "targets": _count(dataset.targets),
                 **({"crop": list(config.crop)} if config.crop else {})}


def _class_weights(config: StudentTrainConfig, dataset: StudentDataset) -> np.ndarray:
    """The loss's per-class weights: automatic, uniform (None) or the recipe's list."""
    if config.class_weights == "auto":
        return auto_class_weights(dataset)
    if config.class_weights is None:
        return np.ones(len(dataset.classes) + 1, np.float32)
    return np.asarray(config.class_weights, np.float32)


class _StudentRun:
    """One training run's objects (network, data, optimizer, schedule), so the epoch loop and its parts share them."""

    def __init__(self, net: StudentNet, dataset: StudentDataset, config: StudentTrainConfig, class_weights: Tensor,
                 dist: Dist, seed: int, cancel: Callable[[], bool] | None) -> None:
        self.net, self.model, self.dataset, self.config = net, dist.wrap(net), dataset, config
        self.class_weights, self.dist, self.seed, self.cancel = class_weights, dist, seed, cancel
        self.shuffle = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps = max(3, config.epochs * len(self._loader(0)))  # OneCycleLR needs a warm-up of more than one step
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=config.lr, total_steps=steps,
                                                         pct_start=min(0.3, max(0.1, 1.5 / steps)))

    def _loader(self, epoch: int) -> DataLoader:
        return self.dist.loader(self.dataset, self.config.batch_size, seed=self.seed, epoch=epoch,
                                generator=self.shuffle)

    def fit(self, state_path: Path, resume: bool, proposer: StudentProposer, val: Sequence[Sample],
            log: Callable[[str], None]) -> tuple[list[float], dict[str, Any]]:
        """Resume if asked and a state exists, train the remaining epochs; per-epoch losses and the kept epoch."""
        config, dist = self.config, self.dist
        keep_best = config.select == "val_miou"  # then the best epoch's weights travel in the state file too
        start, best, best_state = 0, {"epoch": -1, "val_miou": None}, None
        if resume and state_path.is_file():
            extra = load_state(state_path, {"net": self.net}, {"opt": self.opt}, {"sched": self.sched})
            start, best, best_state = int(extra["epoch"]) + 1, extra["best"], extra.get("best_state")
            log(f"student: resuming after epoch {start - 1}")
        metrics = MetricLog(state_path.parent / "student-metrics.csv", resume=resume, start_epoch=start,
                            tensorboard=False) if dist.is_main else None
        losses: list[float] = []
        for epoch in range(start, config.epochs):
            losses.append(self._epoch(epoch))
            scored = config.select == "val_miou" or epoch == config.epochs - 1  # scoring costs a pass over val
            miou = dist.share(val_miou(proposer, val) if val and scored and dist.is_main else None)
            if not keep_best:
                best = {"epoch": epoch, "val_miou": miou}
            elif miou is not None and (best["val_miou"] is None or miou > best["val_miou"]):
                best = {"epoch": epoch, "val_miou": miou}
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            log(f"student epoch {epoch}: loss {losses[-1]:.4f}" + ("" if miou is None else f", val mIoU {miou:.4f}"))
            if metrics is not None:
                metrics.log({"epoch": epoch, "loss": round(losses[-1], 5), "val_miou": miou,
                             "lr": self.sched.get_last_lr()[0]})
                extra = {"epoch": epoch, "best": best, **({"best_state": best_state} if best_state is not None else {})}
                save_state(state_path, {"net": self.net}, {"opt": self.opt}, extra, {"sched": self.sched})
            dist.barrier()
        if metrics is not None:
            metrics.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
        return losses, best

    def _epoch(self, epoch: int) -> float:
        """One pass over this rank's share of the targets; the mean loss over samples and ranks."""
        self.net.train()
        self.dataset.set_epoch(epoch)
        dev = self.dist.device
        total, n = 0.0, 0
        for batch in self._loader(epoch):
            if self.dist.cancelled(self.cancel):
                raise TrainingCancelled(f"student training cancelled in epoch {epoch}; the last state is kept")
            loss = student_loss(self.model(batch["image"].to(dev)), batch["target"].to(dev), batch["weight"].to(dev),
                                self.class_weights, self.config.dice_weight)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            total, n = total + float(loss.detach()) * len(batch["image"]), n + len(batch["image"])
        self.dist.sync_buffers(self.net)  # the parameters agree already (DDP averaged the gradients)
        self.net.eval()
        return self.dist.mean(total / max(n, 1))


def _count(targets: Sequence[Target]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in targets:
        out[t.origin] = out.get(t.origin, 0) + 1
    return out


def student_checkpoint(net: StudentNet, classes: Sequence[int], input_size: tuple[int, int], *,
                       training: dict[str, Any], metrics: dict[str, Any] | None = None,
                       lineage: dict[str, Any] | None = None, threshold: float | None = None,
                       intensity: str = "unit", retina: str | None = None, flip: bool = False) -> Checkpoint:
    """A ``student`` checkpoint: weights, architecture, classes, input size, what it learnt from, its lineage, and
    its input intensity option (``normalisation.intensity`` only when "harmonised") and, with ``retina="layers"``, that
    proposals keep lesions inside the layer model's retina only, and with ``flip`` that proposals average each B-scan's
    softmax with its mirror image's."""
    ckpt = Checkpoint.new(net.state_dict(), method="student", architecture={"student": net.config.to_dict()},
                          classes=list(classes), input_size=list(input_size),
                          normalisation=normalisation_meta(intensity), training=training, metrics=metrics or {},
                          params={"threshold": threshold, **({"retina": retina} if retina else {}),
                                  **({"flip": True} if flip else {})})
    ckpt.meta["lineage"] = lineage or {"parent": None}
    return ckpt
