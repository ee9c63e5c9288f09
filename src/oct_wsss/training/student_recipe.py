"""Running a ``student`` recipe: pseudo labels from a teacher (or a folder of proposals), corrections, training, and
the held-out comparison of the student with its teacher (the DFP paper's Table 2 question: does it exceed it?).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.evaluate import image_confusions, segmentation_scores, write_json
from oct_wsss.io import read_labels
from oct_wsss.propose import load_proposer, propose
from oct_wsss.propose.registry import write_proposal
from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import CorrectionStore
from oct_wsss.training.data import Sample
from oct_wsss.training.dfp import merge_classes
from oct_wsss.training.distributed import Dist, distributed, main_process
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.recipe import Recipe, split_summary
from oct_wsss.training.student import StudentTrainConfig, student_checkpoint, train_student
from oct_wsss.training.student_data import Target, correction_targets, pseudo_targets, truth_targets
from oct_wsss.volume import OctVolume


def samples_volume(samples: Sequence[Sample]) -> OctVolume:
    """The B-scans of one volume's samples as an OctVolume (pages at their ``bscan`` index; gaps left black)."""
    images = {s.bscan: s.load_image() for s in samples}
    shapes = {im.shape for im in images.values()}
    if len(shapes) != 1:
        raise TrainingError(f"volume {samples[0].volume!r} mixes B-scan sizes {sorted(shapes)}")
    first = next(iter(images.values()))
    data = np.zeros((max(images) + 1, *first.shape), first.dtype)
    for i, im in images.items():
        data[i] = im
    return OctVolume(data)


def teacher_proposals(samples: Sequence[Sample], method: str, checkpoint: str | Path, out: Path, *, device: str,
                      keep_scores: bool, log: Callable[[str], None], part: tuple[int, int] = (0, 1)) -> Path:
    """``out/<volume>/`` as ``oct-wsss propose`` writes it, for every volume of ``samples`` not already there; with
    ``part`` (i, n) only every n-th volume from the i-th (one process's share)."""
    by_volume: dict[str, list[Sample]] = {}
    for s in samples:
        by_volume.setdefault(s.volume, []).append(s)
    proposer = None
    for volume, items in sorted(by_volume.items())[part[0]::part[1]]:
        folder = out / volume
        if (folder / "labels.tif").is_file() and (not keep_scores or (folder / "scores.npy").is_file()):
            continue
        proposer = proposer or load_proposer(method, checkpoint, device=device)
        result = propose(samples_volume(items), proposer=proposer, bscans=sorted(s.bscan for s in items),
                         keep_scores=keep_scores)
        write_proposal(result, folder)
        log(f"teacher {method}: proposed {len(items)} B-scans of {volume}")
    return out


def _scores(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], classes: Sequence[int]) -> dict[str, Any]:
    cms = image_confusions(truths, preds)
    return {"all_bscans": segmentation_scores(cms, classes).to_dict(),
            "lesion_bscans": segmentation_scores(cms, classes, lesion_images_only=True).to_dict()}


def compare_on_test(student: StudentProposer, test: Sequence[Sample], teacher_root: Path | None,
                    classes: Sequence[int]) -> dict[str, Any]:
    """Student labels and (when present) the teacher's proposals vs ground truth on the held-out samples."""
    with_mask = [s for s in test if s.mask is not None]
    if not with_mask:
        return {}
    truths = [s.load_mask() for s in with_mask]
    preds = [student.predict(s.load_image()) for s in with_mask]
    out = {"student": _scores(truths, preds, classes)}
    if teacher_root is not None and all((teacher_root / s.volume / "labels.tif").is_file() for s in with_mask):
        pages: dict[str, np.ndarray] = {}
        teacher = [pages.setdefault(s.volume, read_labels(teacher_root / s.volume / "labels.tif"))[s.bscan]
                   for s in with_mask]
        out["teacher"] = _scores(truths, teacher, classes)
    return out


def comparison_table(report: dict[str, Any], classes: Sequence[int]) -> str:
    """Markdown: IoU per class, mIoU and lesion DSC per image for teacher and student, on all / lesion B-scans."""
    keys = [ONTOLOGY[c].key for c in classes]
    lines = ["| model | B-scans | " + " | ".join(f"IoU {k.upper()}" for k in keys) + " | mIoU | mIoU lesions |"
             " DSC/image lesions |", "|---" * (len(keys) + 5) + "|"]

    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.2f}"

    for model in ("teacher", "student"):
        for part in ("all_bscans", "lesion_bscans"):
            r = report.get(model, {}).get(part)
            if r is None:
                continue
            cells = [pct(r["classes"][k]["iou"]) for k in keys]
            lines.append(f"| {model} | {part.split('_')[0]} ({r['n_images_scored']}) | " + " | ".join(cells) +
                         f" | {pct(r['miou'])} | {pct(r['miou_lesions'])} | {pct(r['dice_per_image_mean_lesions'])} |")
    return "\n".join(lines) + "\n"


def _pseudo(recipe: Recipe, samples: Sequence[Sample], run_dir: Path, device: str, soft: bool,
            log: Callable[[str], None], dist: Dist) -> tuple[Path | None, dict[str, Any]]:
    """Where the pseudo labels are (running the teacher first, each process on its share of the volumes, when the
    recipe names one; None with ``pseudo: {truth: true}``, where the data's pixel masks are the targets) and what
    made them."""
    spec = dict(recipe.raw.get("pseudo") or {})
    if spec.get("truth"):
        return None, {"truth": "the data's own pixel masks"}
    if "teacher" in spec:
        ckpt = Path(spec["teacher"])
        ckpt = ckpt if ckpt.is_absolute() else recipe.base / ckpt
        root = teacher_proposals(samples, spec.get("method", "agm"), ckpt, run_dir / "pseudo", device=device,
                                 keep_scores=soft, log=log, part=(dist.rank, dist.world_size))
        dist.barrier()  # every share written before any process reads the labels
        return root, {"teacher": spec.get("method", "agm"), "checkpoint": ckpt.name,
                      "image_labels": spec.get("image_labels", True)}
    if "root" in spec:
        root = Path(spec["root"])
        return (root if root.is_absolute() else recipe.base / root), {"root": str(spec["root"]),
                                                                       "image_labels": spec.get("image_labels", True)}
    raise TrainingError("a student recipe needs pseudo: {teacher: CKPT, method: agm|dfp|hrf}, pseudo: {root: DIR} "
                        "or pseudo: {truth: true}")


def _distinct_volumes(*parts: list[Sample]) -> list[list[Sample]]:
    """Splits whose volume ids collide (separate ``val_data``/``test_data`` sets named alike, e.g. two synthetic
    sets' ``synth_0000``) get a split prefix, so each volume's pseudo labels have a folder of their own."""
    seen = [{s.volume for s in part} for part in parts]
    if all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:]):
        return list(parts)
    return [[replace(s, volume=f"{name}-{s.volume}", patient=f"{name}-{s.patient}") for s in part]
            for name, part in zip(("train", "val", "test"), parts, strict=True)]


def init_student(recipe: Recipe, device: str, hint: str) -> tuple[StudentProposer, dict[str, str]]:
    """The recipe's ``init`` student checkpoint (a start to continue; ``hint`` says how to make one) and what the new
    checkpoint records of it: its file name and SHA-256."""
    path = Path(str(recipe.raw.get("init") or ""))
    path = path if path.is_absolute() else recipe.base / path
    if not recipe.raw.get("init") or not path.is_file():
        raise TrainingError(f"{recipe.path or 'recipe'}: init must name {hint}; {path} is not a file")
    proposer = StudentProposer.from_checkpoint(path, device=device, flip=False)  # flip is for proposals, not training
    if proposer.classes != recipe.classes:
        raise TrainingError(f"{path.name} predicts {list(proposer.classes)}, the recipe's classes are "
                            f"{list(recipe.classes)}")
    return proposer, {"file": path.name, "sha256": proposer.checkpoint.sha256}  # hashed once, when loaded


def _start(recipe: Recipe, spec: dict[str, Any], architecture: dict[str, Any], device: str
           ) -> tuple[StudentProposer | None, dict[str, Any]]:
    """With ``init``: that student, whose architecture and intensity the recipe may not change; else None."""
    if "init" not in recipe.raw:
        return None, {}
    start, record = init_student(recipe, device, "a student checkpoint to continue")
    if architecture or spec.get("intensity", start.intensity) != start.intensity:
        raise TrainingError(f"{recipe.path or 'recipe'}: with init, student: config and intensity come from "
                            f"{record['file']} (intensity {start.intensity!r}); leave them out")
    spec["intensity"] = start.intensity
    return start, {"init": record}


def run_student(recipe: Recipe, run_dir: Path, device: str, log: Callable[[str], None],
                cancel: Callable[[], bool] | None) -> Path:
    """Train the student the recipe describes; writes ``run_dir/student.safetensors`` and the test comparison."""
    flip = recipe.flip  # checked before any training
    train, val, test = _distinct_volumes(*recipe.splits())
    classes = recipe.classes
    if recipe.raw.get("target"):  # e.g. a DFP teacher's "fluid": SRF + IRF merge into it, in labels and masks
        try:
            target = by_key(str(recipe.raw["target"])).id
        except KeyError as err:
            raise TrainingError(f"{recipe.path or 'recipe'}: target: {err.args[0]}") from err
        train, val, test = (merge_classes(s, classes, target) for s in (train, val, test))
        classes = (target,)
    summary = split_summary(train, val, test)
    if main_process():
        (run_dir / "split.json").write_text(json.dumps(summary, indent=2))
    spec = dict(recipe.raw.get("student") or {})
    architecture = dict(spec.pop("config", {}))
    start, init = _start(recipe, spec, architecture, device)
    try:
        config = StudentTrainConfig.from_dict(spec)
    except (TypeError, ValueError) as err:
        raise TrainingError(f"{recipe.path or 'recipe'}: student: {err}") from err
    with distributed(device) as dist:
        root, source = _pseudo(recipe, [*train, *test], run_dir, device, config.soft, log, dist)
        image_labels = bool((recipe.raw.get("pseudo") or {}).get("image_labels", True))
        targets: list[Target] = (truth_targets(train) if root is None else
                                 pseudo_targets(train, root, classes, soft=config.soft, image_labels=image_labels))
        if recipe.raw.get("corrections"):
            store_dir = Path(recipe.raw["corrections"]["store"])
            store = CorrectionStore(store_dir if store_dir.is_absolute() else recipe.base / store_dir)
            targets += correction_targets(store.corrections(), config.correction_weight)
        log(f"student: {len(targets)} training B-scans ({source})")
        net, info = train_student(targets, classes, recipe.input_size, start.net.config if start else architecture,
                                  config, run_dir, val=val, init=start.net if start else None, device=device,
                                  seed=recipe.seed, log=log, cancel=cancel)
        if not dist.is_main:
            return run_dir / "student.safetensors"  # rank 0 scores and writes it
    proposer = StudentProposer(net, classes, recipe.input_size, device=device, intensity=config.intensity,
                               flip=flip)
    report = compare_on_test(proposer, test, root, classes)
    if report:
        write_json(report, run_dir / "test-comparison.json")
        (run_dir / "comparison.md").write_text(comparison_table(report, classes))
    metrics = {m: {p: {"miou": r[p]["miou"], "miou_lesions": r[p]["miou_lesions"]} for p in r}
               for m, r in report.items()}
    ckpt = student_checkpoint(net, classes, recipe.input_size, metrics=metrics, intensity=config.intensity,
                              flip=flip,
                              training={"recipe": recipe.path.name if recipe.path else None, "seed": recipe.seed,
                                        **init, "layouts": recipe.layouts(),
                                        "pseudo_labels": source, "soft": config.soft, **info,
                                        "split": {k: v["bscans"] for k, v in summary.items()}})
    return ckpt.save(run_dir / "student.safetensors")
