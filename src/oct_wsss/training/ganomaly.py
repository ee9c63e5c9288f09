"""GANomaly training on healthy B-scans (METHODS.md §1): the generator that gives AGM its healthy counterparts.

Adam (β1 0.5) on generator and discriminator; the discriminator is re-initialised when its loss collapses. Each
epoch is scored on validation B-scans by the ROC AUC of the min–max scaled anomaly score (abnormal = positive),
or by the reconstruction L1 when validation lacks a class. The run resumes from ``ganomaly-state.safetensors``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.evaluate.classification import roc_auc
from oct_wsss.models.config import strict_from_dict
from oct_wsss.models.ganomaly import (
    Discriminator,
    GanomalyConfig,
    Generator,
    anomaly_score,
    discriminator_loss,
    generator_losses,
    init_weights,
)
from oct_wsss.preprocess.intensity import check_intensity, normalisation_meta
from oct_wsss.training.data import Sample
from oct_wsss.training.distributed import Dist, init_distributed
from oct_wsss.training.errors import TrainingCancelled, TrainingError
from oct_wsss.training.loader import Augment, BscanDataset
from oct_wsss.training.runlog import MetricLog, seed_everything
from oct_wsss.training.state import load_state, save_state

STATE_FILE = "ganomaly-state.safetensors"
CHECKPOINT_FILE = "ganomaly.safetensors"
METRICS_FILE = "ganomaly-metrics.csv"
#: Discriminator loss below which D is re-initialised (the reference code's 1e-5).
D_COLLAPSE = 1e-5
#: Settings a resumed run may change; any other difference from the saved state is an error.
RESUMABLE_CHANGES = ("epochs", "num_workers")
LOSS_KEYS = ("loss_g", "loss_adv", "loss_rec", "loss_lat")


@dataclass(frozen=True)
class GanomalyTrainConfig:
    """Optimisation settings; defaults are the paper's (20 epochs, batch 16, Adam lr 0.002, β1 0.5, 1/50/0.1)."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 0.002
    beta1: float = 0.5
    w_adv: float = 1.0
    w_rec: float = 50.0
    w_lat: float = 0.1
    num_workers: int = 0
    augment: bool = False
    max_steps_per_epoch: int | None = None
    select: str = "auto"  # best epoch by "val_auc" (paper; "auto" when val has both kinds), "val_rec" or "last"
    intensity: str = "unit"  # or "harmonised" (preprocess.intensity); an AGM recipe sets it from its agm block

    def __post_init__(self) -> None:
        check_intensity(self.intensity)
        checks = {"select": self.select in ("auto", "val_auc", "val_rec", "last"), "epochs": self.epochs >= 1,
                  "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                  "beta1": 0 <= self.beta1 < 1, "num_workers": self.num_workers >= 0,
                  "max_steps_per_epoch": self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
                  **{w: getattr(self, w) >= 0 for w in ("w_adv", "w_rec", "w_lat")}}
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid GANomaly training settings: {', '.join(bad)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the checkpoint's training summary and the resume check)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GanomalyTrainConfig:
        """Build from a recipe's mapping; unknown keys are an error (a typo would otherwise be ignored silently)."""
        return strict_from_dict(cls, d, "GANomaly training")


def train_ganomaly(train: Sequence[Sample], val: Sequence[Sample], model_config: GanomalyConfig,
                   opts: GanomalyTrainConfig, run_dir: Path, *, device: str = "auto", seed: int = 0,
                   log: Callable[[str], None] = print, cancel: Callable[[], bool] | None = None) -> Checkpoint:
    """Train on the healthy samples of ``train``, pick the best epoch on ``val``, save and return its checkpoint.

    Works alone or under ``torchrun`` (rank 0 writes ``run_dir/ganomaly-state.safetensors`` each epoch, the
    metrics CSV and finally ``run_dir/ganomaly.safetensors``). A state file in ``run_dir`` is resumed from; the
    same seed then gives the same result as an uninterrupted run. ``cancel()`` is polled between steps and raises
    :class:`TrainingCancelled`, leaving the last complete state intact.
    """
    healthy = [s for s in train if s.healthy]
    if not healthy:
        raise TrainingError(f"GANomaly trains on healthy B-scans only, and none of the {len(train)} given is healthy")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dist = init_distributed(device)
    try:
        return _Run(healthy, list(val), model_config, opts, run_dir, dist, seed, log, cancel).fit()
    finally:
        dist.close()


class _Run:
    """One training run's objects, so the epoch loop, step and validation share them without long argument lists."""

    def __init__(self, healthy: list[Sample], val: list[Sample], cfg: GanomalyConfig, opts: GanomalyTrainConfig,
                 run_dir: Path, dist: Dist, seed: int, log: Callable[[str], None],
                 cancel: Callable[[], bool] | None) -> None:
        self.healthy, self.val, self.cfg, self.opts, self.run_dir = healthy, val, cfg, opts, run_dir
        self.dist, self.seed, self.cancel = dist, seed, cancel
        self.log = log if dist.is_main else (lambda _msg: None)
        self.dev = dist.device
        self.cuda = self.dev.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.memory_format = torch.channels_last if self.cuda else torch.contiguous_format
        seed_everything(seed)
        self.gen = Generator(cfg).to(self.dev, memory_format=self.memory_format)
        self.disc = Discriminator(cfg).to(self.dev, memory_format=self.memory_format)
        betas = (opts.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=opts.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=opts.lr, betas=betas)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and self.amp_dtype == torch.float16)
        size = (cfg.image_size, cfg.image_size)
        self.train_set = BscanDataset(healthy, (), size, Augment() if opts.augment else None, seed=seed,
                                     with_retina=False, cache=True, intensity=opts.intensity)
        self.sampler = dist.sampler(self.train_set, shuffle=True, seed=seed)
        self.shuffle = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(self.train_set, opts.batch_size, shuffle=self.sampler is None, sampler=self.sampler,
                                 num_workers=opts.num_workers, generator=self.shuffle, pin_memory=self.cuda)
        val_set = BscanDataset(val, (), size, with_retina=False, cache=True, intensity=opts.intensity)
        self.val_loader = DataLoader(val_set, opts.batch_size, num_workers=opts.num_workers,
                                     generator=torch.Generator().manual_seed(seed), pin_memory=self.cuda)
        self.abnormal = np.array([not s.healthy for s in val], bool)
        n_abnormal = int(self.abnormal.sum())
        auto = "last" if not val else "val_auc" if 0 < n_abnormal < len(val) else "val_rec"
        self.selection = auto if opts.select == "auto" or not val else opts.select
        self.fingerprint = {"model": cfg.to_dict(), "seed": seed, "n_healthy": len(healthy), "n_val": len(val),
                            "opts": {k: v for k, v in opts.to_dict().items() if k not in RESUMABLE_CHANGES
                                     and not (k == "intensity" and v == "unit")}}  # states saved before the option
        self.best: dict[str, Any] | None = None

    def fit(self) -> Checkpoint:
        """Resume if a state exists, train the remaining epochs, then build (and on rank 0 save) the checkpoint."""
        start = self._resume()
        metrics = MetricLog(self.run_dir / METRICS_FILE, resume=start > 0, start_epoch=start) \
            if self.dist.is_main else None
        self.log(f"ganomaly: {len(self.healthy)} healthy training B-scans, {len(self.val)} for validation "
                 f"(best epoch by {self.selection}), device {self.dev}, {self.dist.world_size} process(es)")
        ddp_g, ddp_d = self.dist.wrap(self.gen), self.dist.wrap(self.disc)
        try:
            for epoch in range(start, self.opts.epochs):
                self._epoch(epoch, ddp_g, ddp_d, metrics)
        finally:
            if metrics is not None:
                metrics.close()
        ckpt = self._checkpoint()
        if self.dist.is_main:
            ckpt.save(self.run_dir / CHECKPOINT_FILE)
            self.log(f"ganomaly: best epoch {self.best['epoch'] + 1} → {self.run_dir / CHECKPOINT_FILE}")
        return ckpt

    def _epoch(self, epoch: int, ddp_g: torch.nn.Module, ddp_d: torch.nn.Module, metrics: MetricLog | None) -> None:
        """Train, validate, keep the best weights; rank 0 logs the row and writes the state file."""
        began = time.perf_counter()
        self.train_set.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        row: dict[str, Any] = {"epoch": epoch, **self._train_epoch(ddp_g, ddp_d)}
        self.dist.broadcast(self.gen)  # rank 0's BatchNorm statistics everywhere: the same validation on every rank
        self.dist.broadcast(self.disc)
        row.update(self._validate() if self.val else {"val_rec": None, "val_auc": None})
        self._keep_if_best(epoch, row)
        row["seconds"] = round(time.perf_counter() - began, 3)
        if metrics is not None:
            metrics.log(row)
            save_state(self.run_dir / STATE_FILE, {"generator": self.gen, "discriminator": self.disc},
                       {"generator": self.opt_g, "discriminator": self.opt_d}, self._extra(epoch))
        self.log(f"ganomaly epoch {epoch + 1}/{self.opts.epochs}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, int | float)))
        self.dist.barrier()

    def _resume(self) -> int:
        """Load the state file if there is one (after checking it belongs to this configuration); next epoch index."""
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return 0
        saved = load_state(path, {}, {})["fingerprint"]
        if saved != self.fingerprint:
            raise TrainingError(f"{path} was saved by a run with other settings ({saved} vs {self.fingerprint}); "
                                "use another run folder or delete the state file to start afresh")
        extra = load_state(path, {"generator": self.gen, "discriminator": self.disc},
                           {"generator": self.opt_g, "discriminator": self.opt_d})
        torch.set_rng_state(extra["rng"]["torch"])
        self.shuffle.set_state(extra["rng"]["shuffle"])
        if self.cuda and extra["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(extra["rng"]["cuda"], self.dev)
        if extra["scaler"]:
            self.scaler.load_state_dict(extra["scaler"])
        self.best = extra["best"]
        self.log(f"ganomaly: resuming after epoch {extra['epoch'] + 1} from {path}")
        return int(extra["epoch"]) + 1

    def _extra(self, epoch: int) -> dict[str, Any]:
        """What besides weights and optimizers a resumed run needs to continue exactly."""
        cuda_rng = torch.cuda.get_rng_state(self.dev) if self.cuda else None
        return {"epoch": epoch, "fingerprint": self.fingerprint, "best": self.best, "scaler": self.scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(), "cuda": cuda_rng}}

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 (or fp16) autocast on CUDA; full precision elsewhere."""
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.cuda else contextlib.nullcontext()

    def _inputs(self, item: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch images in [0, 1] → [-1, 1] on the device, grey replicated to ``nc`` channels."""
        x = item["image"].to(self.dev, non_blocking=True) * 2.0 - 1.0
        return x.expand(-1, self.cfg.nc, -1, -1).contiguous(memory_format=self.memory_format)

    def _train_epoch(self, ddp_g: torch.nn.Module, ddp_d: torch.nn.Module) -> dict[str, float]:
        """One pass over the healthy B-scans; mean losses over steps and ranks, and the number of D re-inits."""
        sums, loss_d_sum, steps, reinits = torch.zeros(4, device=self.dev), 0.0, 0, 0
        for step, item in enumerate(self.loader):
            if self.opts.max_steps_per_epoch is not None and step >= self.opts.max_steps_per_epoch:
                break
            if self.dist.cancelled(self.cancel):
                raise TrainingCancelled("GANomaly training cancelled; the last complete epoch's state is kept")
            g_terms, loss_d = self._step(self._inputs(item), ddp_g, ddp_d)
            sums += g_terms
            loss_d_sum += loss_d
            steps += 1
            if self.dist.mean(loss_d) < D_COLLAPSE:
                init_weights(self.disc)
                self.dist.broadcast(self.disc)
                reinits += 1
        means = (sums / max(steps, 1)).tolist()
        if not all(math.isfinite(v) for v in [*means, loss_d_sum]):
            raise TrainingError(f"GANomaly losses became non-finite ({means}, D {loss_d_sum}); try a lower lr")
        row = {k: self.dist.mean(v) for k, v in zip(LOSS_KEYS, means, strict=True)}
        row["loss_d"] = self.dist.mean(loss_d_sum / max(steps, 1))
        row["d_reinit"] = reinits
        if reinits:
            self.log(f"ganomaly: discriminator loss fell below {D_COLLAPSE:g}; re-initialised it {reinits} time(s)")
        return row

    def _step(self, x: torch.Tensor, ddp_g: torch.nn.Module, ddp_d: torch.nn.Module) -> tuple[torch.Tensor, float]:
        """One generator then one discriminator update; returns the 4 generator terms (detached) and D's loss."""
        with self._autocast():
            x_hat, z, z_hat = ddp_g(x)
            # G's step goes through the plain D (no DDP: D's classifier gets no gradient here) with D frozen.
            self.disc.requires_grad_(False)
            _, features_real = self.disc(x)
            _, features_fake = self.disc(x_hat)
            g = generator_losses(x, x_hat, z, z_hat, features_real, features_fake,
                                 self.opts.w_adv, self.opts.w_rec, self.opts.w_lat)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g.total).backward()
        self.disc.requires_grad_(True)
        self.scaler.step(self.opt_g)
        with self._autocast():
            p_real, _ = ddp_d(x)
            p_fake, _ = ddp_d(x_hat.detach())
            loss_d = discriminator_loss(p_real, p_fake)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)
        self.scaler.update()
        terms = torch.stack([g.total, g.adversarial, g.reconstruction, g.latent]).detach().float()
        return terms, float(loss_d.item())

    @torch.inference_mode()
    def _validate(self) -> dict[str, float | None]:
        """Validation reconstruction L1 (in [-1, 1]) and ROC AUC of the min–max scaled anomaly score."""
        self.gen.eval()
        scores, rec = [], []
        for item in self.val_loader:
            x = self._inputs(item)
            with self._autocast():
                x_hat, z, z_hat = self.gen(x)
            scores.append(anomaly_score(z.float(), z_hat.float()).cpu())
            rec.append((x_hat.float() - x).abs().flatten(1).mean(1).cpu())
        self.gen.train()
        s = torch.cat(scores).double().numpy()
        span = s.max() - s.min()
        s = (s - s.min()) / span if span > 0 else np.zeros_like(s)
        return {"val_rec": float(torch.cat(rec).mean()), "val_auc": roc_auc(s, self.abnormal)}

    def _keep_if_best(self, epoch: int, row: dict[str, Any]) -> None:
        """Copy the weights to the CPU when this epoch beats the best so far (higher AUC, lower L1, or simply later)."""
        b = self.best
        better = (b is None or self.selection == "last"
                  or (self.selection == "val_auc" and row["val_auc"] > b["val_auc"])
                  or (self.selection == "val_rec" and row["val_rec"] < b["val_rec"]))
        if better:
            self.best = {"epoch": epoch, "val_auc": row["val_auc"], "val_rec": row["val_rec"],
                         **{name: {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
                            for name, m in (("generator", self.gen), ("discriminator", self.disc))}}

    def _checkpoint(self) -> Checkpoint:
        """The best epoch's generator and discriminator with the metadata that rebuilds, runs and cites them."""
        b = self.best
        weights = {f"{name}.{k}": v for name in ("generator", "discriminator") for k, v in b[name].items()}
        size = self.cfg.image_size
        training = {"n_healthy_bscans": len(self.healthy), "n_patients": len({s.patient for s in self.healthy}),
                    "n_val": len(self.val), "n_val_abnormal": int(self.abnormal.sum()), "epochs": self.opts.epochs,
                    "best_epoch": int(b["epoch"]), "selection": self.selection, "seed": self.seed,
                    "world_size": self.dist.world_size, "device": self.dev.type, "config": self.opts.to_dict()}
        return Checkpoint.new(weights, method="ganomaly", architecture=self.cfg.to_dict(), classes=[],
                              input_size=[size, size],
                              normalisation=normalisation_meta(self.opts.intensity, model="[-1,1]"),
                              training=training, metrics={"val_auc": b["val_auc"], "val_rec": b["val_rec"]})
