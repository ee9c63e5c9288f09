"""Running an ``agm`` recipe end to end: GANomaly, AGM (+ ablation variants), α on validation, test-split scores."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import ONTOLOGY
from oct_wsss.evaluate import write_json
from oct_wsss.models.agm import AgmConfig
from oct_wsss.models.ganomaly import GanomalyConfig, Generator
from oct_wsss.propose.agm import AgmProposer
from oct_wsss.propose.ganomaly import load_generator
from oct_wsss.propose.pseudo import pseudo_labels
from oct_wsss.training.agm import AgmTrainConfig, agm_checkpoint, choose_threshold, pseudo_label_scores, train_agm
from oct_wsss.training.data import Sample
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.distributed import main_process
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.ganomaly import GanomalyTrainConfig, train_ganomaly
from oct_wsss.training.recipe import Recipe, split_summary


def run_agm(recipe: Recipe, run_dir: Path, device: str, log: Callable[[str], None],
            cancel: Callable[[], bool] | None) -> Path:
    """Train everything the recipe asks for; returns ``run_dir/agm.safetensors``."""
    train, val, test = recipe.splits()
    summary = split_summary(train, val, test)
    (run_dir / "split.json").write_text(json.dumps(summary, indent=2))
    log(f"data: {len(train)} train / {len(val)} val / {len(test)} test B-scans "
        f"({summary['train']['patients']}/{summary['val']['patients']}/{summary['test']['patients']} patients)")
    generator = _generator(recipe, train, val, run_dir, device, log, cancel)
    agm = dict(recipe.raw.get("agm", {}))
    base_config = dict(agm.pop("config", {}))
    for key in ("layers_checkpoint", "init"):  # paths in the recipe resolve against its base folder
        if agm.get(key):
            agm[key] = str(recipe.base / agm[key])
    opts = AgmTrainConfig.from_dict(agm)
    init = {"init": {"file": Path(opts.init).name, "sha256": Checkpoint.load(opts.init).sha256}} if opts.init else {}
    variants = {"agm": {}, **(recipe.raw.get("variants") or {})}
    rows, main_path = [], run_dir / "agm.safetensors"
    for name, overrides in variants.items():
        t0 = time.perf_counter()
        config = AgmConfig.from_dict({**base_config, **overrides, "n_classes": len(recipe.classes)})
        vdir = run_dir if name == "agm" else run_dir / "variants" / name
        gen = generator if config.use_adr or config.use_asam else None
        run = train_agm(train, val, recipe.classes, config, gen, opts, recipe.input_size, vdir, device=device,
                        seed=recipe.seed, log=log, cancel=cancel)
        if not main_process():
            continue  # under torchrun only rank 0 sweeps, scores and writes
        proposer = AgmProposer(run.net, gen, recipe.classes, recipe.input_size, cam_layers=opts.cam_layers,
                               present_threshold=opts.present_threshold, device=device, intensity=opts.intensity,
                               retina=opts.retina, layers_checkpoint=opts.layers_checkpoint)
        alpha, sweep = _threshold(recipe, proposer, val, vdir)
        proposer.threshold = alpha
        test_scores = score_test(proposer, test, vdir) if test else {}
        minutes = (time.perf_counter() - t0) / 60
        metrics = {"threshold": alpha, "val_best_miou": sweep, "history": run.history[-1] if run.history else {},
                   **test_scores, "train_minutes": round(minutes, 2)}
        ckpt = agm_checkpoint(run.net, gen, recipe.classes, recipe.input_size, threshold=alpha,
                              cam_layers=opts.cam_layers, present_threshold=opts.present_threshold,
                              intensity=opts.intensity,
                              retina=proposer.layer_model() if opts.retina == "layers" else None,
                              training={"recipe": recipe.path.name if recipe.path else None, "seed": recipe.seed,
                                        "layouts": recipe.layouts(),
                                        "variant": name, "splits": {k: {kk: vv for kk, vv in v.items()
                                                                        if kk != "patient_hashes"}
                                                                    for k, v in summary.items()},
                                        "epochs": opts.epochs, "refine_epochs": opts.refine_epochs, **init},
                              metrics=_plain(metrics))
        path = ckpt.save(vdir / "agm.safetensors")
        write_json(metrics, vdir / "metrics.json")
        rows.append((name, config, metrics))
        log(f"{name}: α = {alpha:.2f}, test pseudo-label mIoU = {_fmt(test_scores.get('pseudo_labels', {}))}, "
            f"wrote {path}")
    if len(rows) > 1:
        (run_dir / "ablation.md").write_text(ablation_table(rows, recipe.classes))
        log(f"wrote {run_dir / 'ablation.md'}")
    return main_path


def _generator(recipe: Recipe, train: list[Sample], val: list[Sample], run_dir: Path, device: str,
               log: Callable[[str], None], cancel: Callable[[], bool] | None) -> Generator | None:
    """The GANomaly generator: from ``ganomaly.checkpoint``, else trained (on ``ganomaly.data`` or healthy train)."""
    spec = dict(recipe.raw.get("ganomaly") or {})
    if spec.get("checkpoint"):
        return load_generator(Checkpoint.load(recipe.base / spec["checkpoint"], expect_method="ganomaly"))
    existing = run_dir / "ganomaly.safetensors"
    if existing.is_file() and not (run_dir / "ganomaly-state.safetensors").is_file():
        log(f"ganomaly: reusing {existing}")
        return load_generator(Checkpoint.load(existing, expect_method="ganomaly"))
    gan_train = train
    if spec.get("data"):
        gan_train = load_dataset(dict(spec["data"]), recipe.base).samples
    config = GanomalyConfig.from_dict(spec.get("config", {"image_size": recipe.input_size[0]}))
    settings = {k: v for k, v in spec.items() if k not in ("config", "data", "checkpoint")}
    # the generator sees what AGM sees: the agm block's input intensity option
    intensity = (recipe.raw.get("agm") or {}).get("intensity", "unit")
    opts = GanomalyTrainConfig.from_dict({**settings, "intensity": intensity})
    if not any(s.healthy for s in gan_train):
        raise TrainingError("GANomaly needs healthy B-scans (no lesion label) in its training data")
    ckpt = train_ganomaly(gan_train, val, config, opts, run_dir, device=device, seed=recipe.seed, log=log,
                          cancel=cancel)
    (run_dir / "ganomaly-state.safetensors").unlink(missing_ok=True)
    return load_generator(ckpt)


def _threshold(recipe: Recipe, proposer: AgmProposer, val: list[Sample], run_dir: Path) -> tuple[float, float | None]:
    """α: swept on validation masks when the recipe asks and masks exist, else the recipe's default."""
    spec = recipe.raw.get("threshold") or {}
    default = float(spec.get("default", 0.5))
    if not spec.get("sweep", True):
        return default, None
    result = choose_threshold(proposer, val, run_dir)
    if result is None:
        return default, None
    return result.best_alpha, result.best_miou


def score_test(proposer: AgmProposer, test: list[Sample], run_dir: Path) -> dict[str, Any]:
    """Pooled mIoU etc. on the test split: pseudo labels (image labels given) and proposals (classifier decides)."""
    out: dict[str, Any] = {}
    for name, use_labels in (("pseudo_labels", True), ("proposals", False)):
        scores, truths = pseudo_label_scores(proposer, test, use_image_labels=use_labels)
        if not scores:
            return out
        preds = [pseudo_labels(s[None], proposer.classes, proposer.threshold)[0] for s in scores]
        keep = [i for i, t in enumerate(truths) if np.isin(t, proposer.classes).any()]  # paper: lesion images only
        if not keep:
            return out
        report = _evaluate_list([truths[i] for i in keep], [preds[i] for i in keep], proposer.classes)
        write_json(report, run_dir / f"test-{name.replace('_', '-')}.json")
        out[name] = report
    return out


def _evaluate_list(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], classes: Sequence[int]) -> dict:
    """Segmentation scores over B-scans of possibly different sizes (per-image confusion matrices summed)."""
    from oct_wsss.evaluate import image_confusions, segmentation_scores

    return segmentation_scores(image_confusions(truths, preds), classes).to_dict()


def _fmt(report: dict) -> str:
    value = report.get("miou")
    return "n/a" if value is None else f"{value:.4f}"


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics for the checkpoint header: summary numbers only (the full reports stay in the run folder)."""
    keep = {k: v for k, v in metrics.items() if k not in ("pseudo_labels", "proposals")}
    for name in ("pseudo_labels", "proposals"):
        if name in metrics:
            r = metrics[name]
            keep[name] = {"miou": r["miou"], "miou_lesions": r["miou_lesions"],
                          "dice_per_image_mean": r["dice_per_image_mean"],
                          "iou": {k: v["iou"] for k, v in r["classes"].items()}}
    return json.loads(json.dumps(keep, default=float).replace("NaN", "null"))


def ablation_table(rows: Sequence[tuple[str, AgmConfig, dict[str, Any]]], classes: Sequence[int]) -> str:
    """Markdown table in the shape of the paper's Table 4: configuration, per-class IoU, mIoU on the test split."""
    keys = [ONTOLOGY[c].key for c in classes]
    head = ["variant", "ADR", "ASAM", "pool", "α", *(f"IoU {k.upper()}" for k in keys), "mIoU", "mIoU w/o bg",
            "DSC/img", "minutes (this run)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.2f}"

    for name, config, m in rows:
        r = m.get("pseudo_labels", {})
        per = r.get("classes", {})
        cells = [name, "✓" if config.use_adr else "", "✓" if config.use_asam else "", config.pooling.upper(),
                 f"{m['threshold']:.2f}", *(pct(per.get(k, {}).get("iou")) for k in keys), pct(r.get("miou")),
                 pct(r.get("miou_lesions")), pct(r.get("dice_per_image_mean")), f"{m['train_minutes']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
