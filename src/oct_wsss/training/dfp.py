"""DFP training (paper Sec. 2.1-2.2): the prediction module and the feature-propagation encoder learn the B-scan's
normal (0) / abnormal (1) label with BCE, together (they share the input conv); resumable, one CSV row per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from oct_wsss.classes import ONTOLOGY
from oct_wsss.evaluate import classification_scores
from oct_wsss.models.config import strict_from_dict
from oct_wsss.models.dfp import DfpConfig, DfpNet, load_unet_encoder
from oct_wsss.preprocess.intensity import check_intensity
from oct_wsss.training.agm import make_optimizer
from oct_wsss.training.data import Sample
from oct_wsss.training.distributed import Dist, distributed
from oct_wsss.training.errors import TrainingCancelled, TrainingError
from oct_wsss.training.loader import Augment, BscanDataset
from oct_wsss.training.runlog import MetricLog, seed_everything
from oct_wsss.training.state import load_state, save_state
from oct_wsss.training.student_encoder import init_from_student

STATE_FILE = "dfp-state.safetensors"


@dataclass
class DfpTrainConfig:
    """Schedule of DFP training (the paper gives none: Adam, batch 8, 20 epochs, the AGM loader's augmentation)."""

    epochs: int = 20
    batch_size: int = 8
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adam", "lr": 1e-4})
    encoder_weight: float = 1.0  # loss = BCE(prediction module) + encoder_weight x BCE(encoder)
    augment: bool | dict[str, float] = True  # True: Augment() defaults; a mapping overrides Augment fields
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    cache: bool = True
    intensity: str = "unit"  # or "harmonised" (preprocess.intensity): the checkpoint records it, proposers apply it
    init: str | None = None  # a student checkpoint whose U-Net encoder starts a "unet" backbone (issue 19, item 2b)

    def __post_init__(self) -> None:
        check_intensity(self.intensity)
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")
        if self.encoder_weight < 0:
            raise ValueError(f"encoder_weight must be >= 0, got {self.encoder_weight}")
        if isinstance(self.augment, dict):
            try:
                Augment(**self.augment)
            except TypeError as err:
                raise ValueError(f"augment takes brightness, contrast, flip, rotation: {err}") from err
        if self.optimizer.get("name", "sgd") not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer name must be sgd, adam or adamw, got {self.optimizer.get('name')!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DfpTrainConfig:
        """From a recipe's ``dfp`` block without its ``config`` (the architecture)."""
        return strict_from_dict(cls, data, "DFP training")


@dataclass
class DfpRun:
    """What ``train_dfp`` hands back: the trained network and per-epoch history rows."""

    net: DfpNet
    history: list[dict[str, Any]]


def merged_mask(sample: Sample, sources: frozenset[int], target: int) -> np.ndarray:
    """``sample``'s pixel mask with every id in ``sources`` set to ``target`` and every other id to background."""
    mask = sample.load_mask()
    assert mask is not None
    return np.where(np.isin(mask, list(sources)), np.uint8(target), np.uint8(0))


def merge_classes(samples: Sequence[Sample], sources: Sequence[int], target: int) -> list[Sample]:
    """Samples whose label is ``{target}`` when any of ``sources`` is present (e.g. SRF or IRF -> fluid), else {}.

    Masks are remapped the same way (lazily, by a picklable loader), so evaluation compares like with like.
    """
    src = frozenset(int(c) for c in sources)
    return [Sample(s.image, frozenset({target}) if s.labels & src else frozenset(), s.patient,
                   None if s.mask is None else partial(merged_mask, s, src, target), s.volume, s.bscan)
            for s in samples]


def train_dfp(train: Sequence[Sample], val: Sequence[Sample], classes: Sequence[int], net_config: DfpConfig,
              opts: DfpTrainConfig, input_size: tuple[int, int], run_dir: Path, *, device: str = "auto",
              seed: int = 0, log: Callable[[str], None] = print,
              cancel: Callable[[], bool] | None = None) -> DfpRun:
    """Train both classifiers for ``opts.epochs``; a rerun resumes from ``run_dir/dfp-state.safetensors``.

    Works alone or under ``torchrun``: rank 0 validates, logs and writes the state; every rank loads it.
    """
    if not train:
        raise TrainingError("no training B-scans")
    if net_config.n_classes != len(classes):
        raise TrainingError(f"the DFP config has n_classes={net_config.n_classes} but {len(classes)} classes given")
    with distributed(device) as dist:
        return _train(train, val, classes, net_config, opts, input_size, run_dir, dist, seed, dist.main_log(log),
                      cancel)


def _train(train: Sequence[Sample], val: Sequence[Sample], classes: Sequence[int], net_config: DfpConfig,
           opts: DfpTrainConfig, input_size: tuple[int, int], run_dir: Path, dist: Dist, seed: int,
           log: Callable[[str], None], cancel: Callable[[], bool] | None) -> DfpRun:
    """The epoch loop of :func:`train_dfp` in the process group ``dist`` (``log`` is already rank 0's only)."""
    seed_everything(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    net = DfpNet(net_config)
    if opts.init:
        log(f"dfp: {init_from_student(net, Path(opts.init), load_unet_encoder)} encoder tensors from "
            f"{Path(opts.init).name}")
    net = net.to(dist.device)
    optimizer = make_optimizer(net.parameters(), opts.optimizer)
    state_path, start = run_dir / STATE_FILE, 0
    if state_path.is_file():
        start = int(load_state(state_path, {"net": net}, {"optimizer": optimizer})["epoch"]) + 1
        log(f"dfp: resuming at epoch {start} from {state_path}")
    metrics = MetricLog(run_dir / "dfp-metrics.csv", resume=start > 0, start_epoch=start) if dist.is_main else None
    augment = Augment(**opts.augment) if isinstance(opts.augment, dict) else Augment() if opts.augment else None
    train_set = BscanDataset(train, classes, input_size, augment, seed=seed, cache=opts.cache, with_retina=False,
                             intensity=opts.intensity)
    val_set = BscanDataset(val, classes, input_size, cache=opts.cache, with_retina=False,
                           intensity=opts.intensity) if val and dist.is_main else None
    model, history = dist.wrap(net), []
    for epoch in range(start, opts.epochs):
        train_set.set_epoch(epoch)
        loader = dist.loader(train_set, opts.batch_size, seed=seed, epoch=epoch, num_workers=opts.num_workers)
        row: dict[str, Any] = {"epoch": epoch, **_epoch(model, loader, optimizer, opts, dist, cancel)}
        dist.sync_buffers(net)  # the parameters agree already (DDP averaged the gradients)
        if val_set is not None:
            row.update(_validate(net, val_set, classes, dist.device))
        history.append(row)
        if metrics is not None:
            metrics.log(row)
            save_state(state_path, {"net": net}, {"optimizer": optimizer}, {"epoch": epoch, "seed": seed})
        log("dfp: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        dist.barrier()
    if metrics is not None:
        metrics.close()
    return DfpRun(net.eval(), history)


def _epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, opts: DfpTrainConfig,
           dist: Dist, cancel: Callable[[], bool] | None) -> dict[str, float]:
    """One pass: BCE of the prediction module plus ``encoder_weight`` x BCE of the encoder; mean losses (all ranks)."""
    model.train()
    device = dist.device
    sums, count = np.zeros(2), 0
    for step, item in enumerate(loader):
        if dist.cancelled(cancel):
            raise TrainingCancelled("DFP training cancelled; the last finished epoch is kept in the run folder")
        if opts.max_steps_per_epoch is not None and step >= opts.max_steps_per_epoch:
            break
        x, labels = item["image"].to(device), item["labels"].to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x)
        pred = F.binary_cross_entropy_with_logits(out.logits.float(), labels)
        enc = F.binary_cross_entropy_with_logits(out.encoder_logits.float(), labels)
        loss = pred + opts.encoder_weight * enc
        if not torch.isfinite(loss):
            raise TrainingError(f"the DFP loss became {float(loss)} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += np.array([float(pred.detach()), float(enc.detach())]) * len(x)
        count += len(x)
    pred_loss, enc_loss = (dist.mean(v) for v in sums / max(1, count))
    return {"loss": float(pred_loss + opts.encoder_weight * enc_loss), "loss_prediction": float(pred_loss),
            "loss_encoder": float(enc_loss)}


def _validate(net: DfpNet, val_set: BscanDataset, classes: Sequence[int], device: torch.device) -> dict[str, Any]:
    """Validation BCE and accuracy / F1 / AUC of the prediction module's normal/abnormal calls."""
    net.eval()
    probs, labels, loss = [], [], 0.0
    with torch.inference_mode():
        for item in DataLoader(val_set, batch_size=8):
            out = net(item["image"].to(device)).logits.float().cpu()
            loss += float(F.binary_cross_entropy_with_logits(out, item["labels"], reduction="sum"))
            probs.append(torch.sigmoid(out).numpy())
            labels.append(item["labels"].numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    scores = classification_scores(p, y, [ONTOLOGY[c].key for c in classes])
    return {"val_loss": loss / max(1, y.size), "val_accuracy": scores["accuracy"], "val_f1": scores["f1"],
            "val_auc": scores["auc"]}
