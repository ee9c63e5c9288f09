"""Running a ``dfp`` recipe: train both classifiers, choose the soft-label threshold on validation masks, score DFP
soft labels per held-out volume with the paper's DSC / TPVF / PPV (mean ± sd), write a ``dfp`` checkpoint.

Recipe keys of this method: ``target`` (a class key: the recipe's classes merge into it, e.g. SRF + IRF -> fluid),
``dfp`` (``config`` = :class:`DfpConfig` fields, the rest :class:`DfpTrainConfig`), ``propagation``
(:class:`PropagationParams` fields) and ``threshold`` (``sweep``, ``default``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.evaluate import binary_scores, image_confusions, mean_sd, sweep_threshold, write_json
from oct_wsss.explain.propagation import PropagationParams
from oct_wsss.models.dfp import DfpConfig
from oct_wsss.preprocess.inputs import retina_mask
from oct_wsss.propose.dfp import DfpProposer, dfp_checkpoint
from oct_wsss.propose.pseudo import pseudo_labels
from oct_wsss.training.data import Sample
from oct_wsss.training.dfp import DfpTrainConfig, merge_classes, train_dfp
from oct_wsss.training.distributed import main_process
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.recipe import Recipe, split_summary

#: soft-label sources scored on the test split: DFP itself, its saliency M alone, the whole retina (trivial)
VARIANTS = ("dfp", "saliency", "retina")


def run_dfp(recipe: Recipe, run_dir: Path, device: str, log: Callable[[str], None],
            cancel: Callable[[], bool] | None) -> Path:
    """Train, choose the threshold, evaluate; returns ``run_dir/dfp.safetensors``."""
    where = recipe.path or "recipe"
    classes: tuple[int, ...] = recipe.classes
    target = None
    if recipe.raw.get("target"):
        try:
            target = by_key(str(recipe.raw["target"])).id
        except KeyError as err:
            raise TrainingError(f"{where}: target: {err.args[0]}") from err
    spec = dict(recipe.raw.get("dfp") or {})
    try:
        net_config = DfpConfig.from_dict({**spec.pop("config", {}), "n_classes": 1 if target else len(classes)})
        opts = DfpTrainConfig.from_dict(spec)
        params = PropagationParams(**(recipe.raw.get("propagation") or {}))
    except (TypeError, ValueError) as err:
        raise TrainingError(f"{where}: {err}") from err
    train, val, test = recipe.splits()
    if target is not None:
        train, val, test = (merge_classes(s, classes, target) for s in (train, val, test))
        classes = (target,)
    summary = split_summary(train, val, test)
    if main_process():
        (run_dir / "split.json").write_text(json.dumps(summary, indent=2))
    log(f"data: {len(train)} train / {len(val)} val / {len(test)} test B-scans; classes "
        f"{[ONTOLOGY[c].key for c in classes]}")
    run = train_dfp(train, val, classes, net_config, opts, recipe.input_size, run_dir, device=device,
                    seed=recipe.seed, log=log, cancel=cancel)
    if not main_process():
        return run_dir / "dfp.safetensors"  # rank 0 chooses the thresholds, scores and writes it
    proposers = {name: DfpProposer(run.net, classes, recipe.input_size, propagation=params, device=device,
                                   propagate=name == "dfp", intensity=opts.intensity) for name in ("dfp", "saliency")}
    rule = recipe.raw.get("threshold") or {}
    thresholds = {}
    for name, proposer in proposers.items():
        thresholds[name] = choose_threshold(proposer, val, float(rule.get("default", 0.5)), rule.get("sweep", True))
        proposer.threshold = thresholds[name]
    log("thresholds: " + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items()))
    report = evaluate_test(proposers, test) if test else {}
    if report:
        write_json(report, run_dir / "test-report.json")
        (run_dir / "report.md").write_text(report_table(report))
        log("test (per volume, image labels given):\n" + report_table(report))
    history = run.history[-1] if run.history else {}
    metrics = {"thresholds": thresholds, "history": history,
               "test": {v: report[v]["pseudo_labels"]["summary"] for v in report}}
    ckpt = dfp_checkpoint(run.net, classes, recipe.input_size, threshold=thresholds["dfp"], propagation=params,
                          intensity=opts.intensity,
                          training={"recipe": recipe.path.name if recipe.path else None, "seed": recipe.seed,
                                    "layouts": recipe.layouts(),
                                    "epochs": opts.epochs, "target": recipe.raw.get("target"),
                                    "source_classes": [ONTOLOGY[c].key for c in recipe.classes],
                                    "splits": {k: {kk: vv for kk, vv in v.items() if kk != "patient_hashes"}
                                               for k, v in summary.items()}},
                          metrics=json.loads(json.dumps(metrics, default=float).replace("NaN", "null")))
    path = ckpt.save(run_dir / "dfp.safetensors")
    return path


def _soft(proposer: DfpProposer, samples: Sequence[Sample], given: bool) -> list[np.ndarray]:
    """S_0 (K, H, W) per sample; with ``given`` the image-level labels decide which B-scans are abnormal."""
    out = []
    for s in samples:
        present = np.array([[c in s.labels for c in proposer.classes]]) if given else None
        out.append(proposer.scores([s.load_image()], present)[0][0])
    return out


def choose_threshold(proposer: DfpProposer, val: Sequence[Sample], default: float, sweep: bool) -> float:
    """The soft-label threshold with the best pooled mIoU on validation B-scans holding the class (else default)."""
    if not sweep:
        return default
    pairs = [(s, m) for s in val if (m := s.load_mask()) is not None and np.isin(m, proposer.classes).any()]
    if not pairs:
        return default
    scores = _soft(proposer, [s for s, _ in pairs], given=True)
    return float(sweep_threshold(scores, [m for _, m in pairs], proposer.classes).best_alpha)


def _volumes(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """Samples with a mask, grouped by volume id (B-scan order)."""
    groups: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: (s.volume, s.bscan)):
        if s.mask is not None:
            groups.setdefault(s.volume or s.patient, []).append(s)
    return groups


def evaluate_test(proposers: dict[str, DfpProposer], test: Sequence[Sample]) -> dict[str, Any]:
    """Per-volume DSC / TPVF / PPV of each variant, with image labels given and with the classifier deciding.

    Summaries (mean ± sd) are over the volumes whose truth holds the class, as the paper's volumes all do; volumes
    without any get ``false_positive_volumes``: how many of them received a positive pixel.
    """
    classes = next(iter(proposers.values())).classes
    groups = _volumes(test)
    truths = {v: [s.load_mask() for s in group] for v, group in groups.items()}
    report: dict[str, Any] = {}
    for variant in VARIANTS:
        report[variant] = {}
        for mode, given in (("pseudo_labels", True), ("proposals", False)):
            if variant == "retina" and not given:
                continue
            per_volume = {}
            for vid, group in groups.items():
                preds = _predict(variant, proposers, group, given, classes)
                per_volume[vid] = binary_scores(image_confusions(truths[vid], preds), classes)
            fluid = {v: s for v, s in per_volume.items() if s.tp + s.fn > 0}
            report[variant][mode] = {
                "summary": {m: mean_sd(getattr(s, m) for s in fluid.values()) for m in ("dsc", "tpvf", "ppv")},
                "volumes": {v: s.to_dict() for v, s in per_volume.items()},
                "false_positive_volumes": sum(s.fp > 0 for v, s in per_volume.items() if v not in fluid),
                "volumes_without_class": len(per_volume) - len(fluid)}
    return report


def _predict(variant: str, proposers: dict[str, DfpProposer], group: Sequence[Sample], given: bool,
             classes: Sequence[int]) -> list[np.ndarray]:
    """Label maps of one volume's B-scans for ``variant`` (the retina baseline: whole tissue on abnormal B-scans)."""
    if variant == "retina":
        return [np.where(retina_mask(s.load_image()) & bool(s.labels & set(classes)), np.uint8(classes[0]),
                         np.uint8(0)) for s in group]
    proposer = proposers[variant]
    return [pseudo_labels(sc[None], proposer.classes, proposer.threshold)[0] for sc in _soft(proposer, group, given)]


def report_table(report: dict[str, Any]) -> str:
    """Markdown table in the shape of the paper's Table 1: DSC, TPVF, PPV (%) mean ± sd per variant and mode."""
    lines = ["| soft labels | B-scans called abnormal by | DSC (%) | TPVF (%) | PPV (%) | volumes |",
             "|---|---|---|---|---|---|"]

    def cell(stat: dict[str, Any]) -> str:
        if stat["mean"] is None:
            return "–"
        return f"{100 * stat['mean']:.1f} ± {100 * stat['sd']:.1f}" if stat["sd"] is not None else \
            f"{100 * stat['mean']:.1f}"

    names = {"dfp": "DFP S_0", "saliency": "saliency M only", "retina": "whole retina (trivial)"}
    for variant, modes in report.items():
        for mode, r in modes.items():
            s = r["summary"]
            who = "image labels" if mode == "pseudo_labels" else "the classifier"
            lines.append(f"| {names[variant]} | {who} | {cell(s['dsc'])} | {cell(s['tpvf'])} | {cell(s['ppv'])} | "
                         f"{s['dsc']['n']} |")
    return "\n".join(lines) + "\n"
