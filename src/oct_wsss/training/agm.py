"""AGM training (paper Sec. 3.2-3.3, Algorithm 1): multi-label classifier, then anomaly-guided refinement, then the
background threshold α swept on validation masks; the result is one ``agm`` checkpoint with GANomaly bundled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import ONTOLOGY
from oct_wsss.evaluate import SweepResult, classification_scores, plot_sweep, sweep_threshold, write_sweep_csv
from oct_wsss.explain.refine import enhance
from oct_wsss.models.agm import AgmConfig, AgmNet, load_unet_encoder
from oct_wsss.models.config import strict_from_dict
from oct_wsss.models.ganomaly import Generator
from oct_wsss.preprocess.intensity import check_intensity, normalisation_meta
from oct_wsss.propose.agm import DEFAULT_CAM_LAYERS, AgmProposer, agm_gradcam, bundle_state, network_inputs
from oct_wsss.propose.layers import LayerModel
from oct_wsss.propose.retina import check_retina
from oct_wsss.training.data import Sample
from oct_wsss.training.distributed import Dist, init_distributed
from oct_wsss.training.errors import TrainingCancelled, TrainingError
from oct_wsss.training.loader import Augment, BscanDataset
from oct_wsss.training.runlog import MetricLog, seed_everything
from oct_wsss.training.state import load_state, save_state
from oct_wsss.training.student_encoder import init_from_student

STATE_FILE = "agm-state.safetensors"


@dataclass
class AgmTrainConfig:
    """Schedule of AGM training; defaults are the paper's (SGD 1e-3 x 40 epochs, refinement 1e-4 x 10, batch 8/4)."""

    epochs: int = 40
    batch_size: int = 8
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "sgd", "lr": 1e-3, "momentum": 0.9})
    refine_epochs: int = 10
    refine_batch_size: int = 4
    refine_lr: float = 1e-4
    refine_weights: str = "probability"  # ŷ_c as sigmoid probabilities (paper) or raw "logit" (reference code)
    cam_layers: list[str] = field(default_factory=lambda: list(DEFAULT_CAM_LAYERS))
    augment: bool | dict[str, float] = True  # True: the paper's augmentation; a mapping overrides Augment fields
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    present_threshold: float = 0.5
    cache: bool = True  # keep resized B-scans and retina masks in memory (input-sized, so small)
    pos_weight: str | None = None  # "balanced": BCE positives weighted n_neg / n_pos per class (clipped to 1..20)
    intensity: str = "unit"  # or "harmonised" (preprocess.intensity): the GANomaly stage and the checkpoint follow it
    retina: str | None = None  # "layers": the layer model's ILM-to-BM mask in the anomaly input, not the heuristic
    layers_checkpoint: str | None = None  # the layer model for retina "layers" (default: the bundled one)
    init: str | None = None  # a student checkpoint whose U-Net encoder starts a "unet" backbone (issue 19, item 2b)

    def __post_init__(self) -> None:
        check_intensity(self.intensity)
        check_retina(self.retina)
        if self.refine_weights not in ("probability", "logit"):
            raise ValueError(f"refine_weights must be 'probability' or 'logit', got {self.refine_weights!r}")
        if self.epochs < 0 or self.refine_epochs < 0 or self.batch_size < 1 or self.refine_batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch sizes >= 1")
        if isinstance(self.augment, dict):
            try:
                Augment(**self.augment)
            except TypeError as err:
                raise ValueError(f"augment takes brightness, contrast, flip, rotation: {err}") from err
        if self.pos_weight not in (None, "balanced"):
            raise ValueError(f"pos_weight must be null or 'balanced', got {self.pos_weight!r}")
        if self.optimizer.get("name", "sgd") not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer name must be sgd, adam or adamw, got {self.optimizer.get('name')!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgmTrainConfig:
        """From a recipe's ``agm`` block (its ``config`` key, the architecture, is not part of this)."""
        return strict_from_dict(cls, data, "AGM training")


def make_optimizer(params: Any, spec: dict[str, Any], lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (momentum), Adam or AdamW from a recipe's optimizer block; ``lr`` overrides its learning rate."""
    spec = dict(spec)
    name = spec.pop("name", "sgd")
    spec["lr"] = lr if lr is not None else spec.get("lr", 1e-3)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(params, **spec)


@dataclass
class AgmRun:
    """What ``train_agm`` hands back: the trained network and per-epoch history rows."""

    net: AgmNet
    history: list[dict[str, Any]]


def train_agm(train: Sequence[Sample], val: Sequence[Sample], classes: Sequence[int], net_config: AgmConfig,
              generator: Generator | None, opts: AgmTrainConfig, input_size: tuple[int, int], run_dir: Path, *,
              device: str = "auto", seed: int = 0, log: Callable[[str], None] = print,
              cancel: Callable[[], bool] | None = None) -> AgmRun:
    """Train the classifier for ``opts.epochs``, then refine for ``opts.refine_epochs``; resumes from ``run_dir``."""
    if not train:
        raise TrainingError("no training B-scans")
    if net_config.n_classes != len(classes):
        raise TrainingError(f"the AGM config has n_classes={net_config.n_classes} but {len(classes)} classes given")
    dist = init_distributed(device)
    seed_everything(seed + dist.rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    net = AgmNet(net_config)
    if opts.init:  # a resumed run's state replaces it below
        log(f"agm: {init_from_student(net, Path(opts.init), load_unet_encoder)} encoder tensors from "
            f"{Path(opts.init).name}")
    net = net.to(dist.device)
    gen = None if generator is None else generator.to(dist.device).eval()
    if gen is not None:
        gen.requires_grad_(False)
    model = dist.wrap(net)
    total = opts.epochs + opts.refine_epochs
    start, optimizer = 0, make_optimizer(net.parameters(), opts.optimizer)
    state_path = run_dir / STATE_FILE
    if state_path.is_file():
        start = int(load_state(state_path, {"net": net}, {})["epoch"]) + 1
        optimizer = _phase_optimizer(net, opts, start)
        load_state(state_path, {"net": net}, {"optimizer": optimizer})
        log(f"agm: resuming at epoch {start} from {state_path}")
    metrics = MetricLog(run_dir / "agm-metrics.csv", resume=start > 0, start_epoch=start)
    augment = Augment(**opts.augment) if isinstance(opts.augment, dict) else Augment() if opts.augment else None
    layers = LayerModel(opts.layers_checkpoint, device=str(dist.device)) if opts.retina == "layers" else None
    train_set = BscanDataset(train, classes, input_size, augment, seed=seed,
                             cache=opts.cache, intensity=opts.intensity, layers=layers)
    val_set = BscanDataset(val, classes, input_size, cache=opts.cache, intensity=opts.intensity,
                           layers=layers) if val else None
    pos_weight = _pos_weight(train, classes, dist.device) if opts.pos_weight == "balanced" else None
    history: list[dict[str, Any]] = []
    for epoch in range(start, total):
        refining = epoch >= opts.epochs
        if epoch == opts.epochs and refining:
            optimizer = _phase_optimizer(net, opts, epoch)
        train_set.set_epoch(epoch)
        batch = opts.refine_batch_size if refining else opts.batch_size
        loader = dist.loader(train_set, batch, seed=seed, epoch=epoch, num_workers=opts.num_workers)
        loss = train_epoch(model, net, gen, loader, optimizer, opts, dist, refining, cancel, pos_weight)
        dist.sync_buffers(net)  # rank 0's BatchNorm statistics everywhere: the same validation on every rank
        row = {"epoch": epoch, "phase": "refine" if refining else "train", "loss": dist.mean(loss)}
        if val_set is not None:
            row.update(_validate(net, gen, val_set, classes, dist.device, opts.present_threshold))
        history.append(row)
        if dist.is_main:
            metrics.log(row)
            save_state(state_path, {"net": net}, {"optimizer": optimizer}, {"epoch": epoch, "seed": seed})
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            log(f"agm: {shown}")
        dist.barrier()
    dist.close()
    return AgmRun(net.eval(), history)


def _pos_weight(train: Sequence[Sample], classes: Sequence[int], device: torch.device) -> torch.Tensor:
    """Per-class n_negative / n_positive of the training labels, clipped to [1, 20] (rare lesions count more)."""
    pos = np.array([sum(c in s.labels for s in train) for c in classes], float)
    return torch.tensor(np.clip((len(train) - pos) / np.maximum(pos, 1), 1.0, 20.0), dtype=torch.float32,
                        device=device)


def _phase_optimizer(net: AgmNet, opts: AgmTrainConfig, epoch: int) -> torch.optim.Optimizer:
    """The optimizer of the phase ``epoch`` belongs to (refinement: same kind at ``refine_lr``)."""
    lr = opts.refine_lr if epoch >= opts.epochs else None
    return make_optimizer(net.parameters(), opts.optimizer, lr)


def train_epoch(model: torch.nn.Module, net: AgmNet, gen: Generator | None, loader: DataLoader,
                optimizer: torch.optim.Optimizer, opts: AgmTrainConfig, dist: Dist, refining: bool,
                cancel: Callable[[], bool] | None, pos_weight: torch.Tensor | None) -> float:
    """One pass over ``loader`` (at most ``opts.max_steps_per_epoch`` steps); in refinement the image channels are
    replaced by the CAM-enhanced input."""
    gradcam = agm_gradcam(net, opts.cam_layers, autocast=dist.device.type == "cuda") if refining else None
    lesion = list(range(int(net.config.background_logit), net.config.n_outputs))
    total, count = 0.0, 0
    for step, item in enumerate(loader):
        if cancel is not None and cancel():
            raise TrainingCancelled("AGM training cancelled; the last finished epoch is kept in the run folder")
        if opts.max_steps_per_epoch is not None and step >= opts.max_steps_per_epoch:
            break
        x, retina = item["image"].to(dist.device), item["retina"].to(dist.device)
        labels = item["labels"].to(dist.device)
        inputs = network_inputs(gen, x, retina, net.config.image_channels)
        if gradcam is not None:
            cams, logits = gradcam(inputs, lesion, return_logits=True)
            weights = torch.sigmoid(logits[:, lesion]) if opts.refine_weights == "probability" else logits[:, lesion]
            inputs[0] = enhance(inputs[0], cams.to(x.dtype), weights)
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dist.device.type == "cuda"):
            out = model(*inputs)
        loss = F.binary_cross_entropy_with_logits(out[:, lesion].float(), labels, pos_weight=pos_weight)
        if not torch.isfinite(loss):
            raise TrainingError(f"the AGM loss became {float(loss)} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(x)
        count += len(x)
    return total / max(1, count)


def _validate(net: AgmNet, gen: Generator | None, val_set: BscanDataset, classes: Sequence[int],
              device: torch.device, present_threshold: float) -> dict[str, Any]:
    """Validation loss and macro accuracy / F1 / AUC of the image-level predictions."""
    net.eval()
    lesion = list(range(int(net.config.background_logit), net.config.n_outputs))
    probs, labels, loss = [], [], 0.0
    with torch.inference_mode():
        for item in DataLoader(val_set, batch_size=8):
            x, retina = item["image"].to(device), item["retina"].to(device)
            out = net(*network_inputs(gen, x, retina, net.config.image_channels))[:, lesion].float().cpu()
            loss += float(F.binary_cross_entropy_with_logits(out, item["labels"], reduction="sum"))
            probs.append(torch.sigmoid(out).numpy())
            labels.append(item["labels"].numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    scores = classification_scores(p, y, [ONTOLOGY[c].key for c in classes], threshold=present_threshold)
    return {"val_loss": loss / max(1, y.size), "val_accuracy": scores["accuracy"], "val_f1": scores["f1"],
            "val_auc": scores["auc"]}


def pseudo_label_scores(proposer: AgmProposer, samples: Sequence[Sample],
                        use_image_labels: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Native-size class scores and truth masks of the ``samples`` that have a pixel mask (one B-scan at a time).

    With ``use_image_labels`` classes absent from a B-scan's image-level label are zeroed, as the paper does when it
    makes pseudo labels for training; otherwise the classifier's own predictions decide.
    """
    scores, truths = [], []
    for s in samples:
        mask = s.load_mask()
        if mask is None:
            continue
        present = np.array([[c in s.labels for c in proposer.classes]]) if use_image_labels else None
        sc, _ = proposer.scores([s.load_image()], present)
        scores.append(sc[0])
        truths.append(mask)
    return scores, truths


def choose_threshold(proposer: AgmProposer, samples: Sequence[Sample], run_dir: Path | None = None,
                     lesion_images_only: bool = True) -> SweepResult | None:
    """Sweep α 0..1 (step 0.01) on validation masks for the best pooled mIoU; CSV + PNG into ``run_dir``.

    Only B-scans whose truth holds a lesion of the model's classes are scored (the paper's protocol). Returns None
    when no validation B-scan has a usable mask.
    """
    scores, truths = pseudo_label_scores(proposer, samples)
    keep = [i for i, t in enumerate(truths) if not lesion_images_only or np.isin(t, proposer.classes).any()]
    if not keep:
        return None
    result = sweep_threshold([scores[i] for i in keep], [truths[i] for i in keep], proposer.classes)
    if run_dir is not None:
        write_sweep_csv(result, run_dir / "threshold-sweep.csv")
        plot_sweep(result, run_dir / "threshold-sweep.png")
    return result


def agm_checkpoint(net: AgmNet, generator: Generator | None, classes: Sequence[int], input_size: tuple[int, int],
                   *, threshold: float, cam_layers: Sequence[str], present_threshold: float = 0.5,
                   training: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                   intensity: str = "unit", retina: LayerModel | None = None) -> Checkpoint:
    """One ``agm`` checkpoint: AGM weights + bundled generator, threshold α and CAM settings in ``params``; with
    ``retina`` (the layer model it was trained with) ``params`` records retina "layers" and that model's hash."""
    arch = {"agm": net.config.to_dict(), "ganomaly": None if generator is None else generator.config.to_dict()}
    return Checkpoint.new(bundle_state(net, generator), method="agm", architecture=arch, classes=list(classes),
                          input_size=list(input_size), normalisation=normalisation_meta(intensity, x_hat="unit"),
                          training=training, metrics=metrics,
                          params={"threshold": float(threshold), "cam_layers": list(cam_layers),
                                  "present_threshold": float(present_threshold), "smooth": True,
                                  **({} if retina is None else {"retina": "layers",
                                                                "layers_sha256": retina.checkpoint.sha256})})

