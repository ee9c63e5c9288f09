"""``method: real-wsss``: a phantom-trained student carried to real B-scans with their image-level labels only.

Each round the current student labels the real B-scans; :func:`~oct_wsss.training.weak_labels.image_level_target`
keeps what each B-scan's image labels allow and the student is sure of; the student then trains on those targets
beside the phantom's pixel truth (self-training). No real pixel label is read: a real data entry whose adapter
carries pixel masks is refused unless the entry says ``pixel_masks: drop``, and then the masks are dropped unread.
``cam: {checkpoint: DFP_OR_AGM.safetensors, threshold, moderate}`` gates the allowed-class targets by that
classifier's saliency (DFP's M, AGM's CAM; :func:`~oct_wsss.training.weak_labels.cam_gate`; issue 19 item 2c).
``retina: layers`` records in the checkpoint that its proposals keep lesions between the layer model's ILM and BM
(applied when proposing, never in training). ``flip: true``: the student proposes with flip averaging, the weak
targets of each round included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.classes import ONTOLOGY
from oct_wsss.propose.agm import AgmProposer
from oct_wsss.propose.dfp import DfpProposer
from oct_wsss.propose.student import StudentProposer
from oct_wsss.training.data import LabelledSet
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.recipe import Recipe
from oct_wsss.training.student import StudentTrainConfig, student_checkpoint, train_student
from oct_wsss.training.student_data import IGNORE, WEAK, Target, truth_targets
from oct_wsss.training.student_recipe import init_student
from oct_wsss.training.weak_labels import CamGate, Confidence, cam_gate, image_level_target, verdicts

#: a classifier whose ``scores(bscans, present)`` gives lesion maps in [0, 1] for the cam gate
Saliency = DfpProposer | AgmProposer


def real_sets(recipe: Recipe) -> list[LabelledSet]:
    """The recipe's ``real`` entries as image-level sets without pixel masks (refusing entries that would bring
    masks in unasked, and entries without image labels)."""
    entries = recipe.raw.get("real")
    if not isinstance(entries, list) or not entries:
        raise TrainingError(f"{recipe.path or 'recipe'}: real-wsss needs real: a list of data entries with "
                            "image-level labels (e.g. {layout: csv, root: labels.csv})")
    return [_real_set(dict(entry), i, recipe) for i, entry in enumerate(entries)]


def _real_set(spec: dict[str, Any], i: int, recipe: Recipe) -> LabelledSet:
    where = f"{recipe.path or 'recipe'}: real[{i}]"
    drop = spec.pop("pixel_masks", None)
    if drop not in (None, "drop"):
        raise TrainingError(f"{where}: pixel_masks may only be 'drop'; got {drop!r}")
    exclude = {str(p) for p in spec.pop("exclude_patients", [])}
    try:
        data = load_dataset(spec, recipe.base)
    except (ValueError, FileNotFoundError) as err:
        raise TrainingError(f"{where}: {err}") from err
    if not data.classes:
        raise TrainingError(f"{where} ({spec.get('root')}): the B-scans have no image-level labels; real-wsss "
                            "learns from them (add one 0/1 column per class key to the manifest)")
    masked = sum(s.mask is not None for s in data.samples)
    if masked and drop != "drop":
        raise TrainingError(f"{where} ({data.name}): {masked} B-scans carry pixel masks; real-wsss trains from "
                            "image-level labels only. Say pixel_masks: drop to use the entry without reading them")
    samples = [replace(s, mask=None) for s in data.samples if s.patient not in exclude]
    if not samples:
        raise TrainingError(f"{where}: no B-scans left after exclude_patients")
    return LabelledSet(samples, data.classes, data.name, {**data.info, "pixel_masks": "dropped unread" if masked
                                                          else "none"})


def weak_targets(proposer: StudentProposer, sets: Sequence[LabelledSet], confidence: Confidence, weight: float,
                 log: Callable[[str], None], cam: tuple[Saliency, CamGate] | None = None) -> list[Target]:
    """One target per real B-scan from the current student, filtered by the B-scan's image-level labels (and, with
    ``cam``, gated by a DFP or AGM classifier's saliency on B-scans that allow a class); logs per set on how many
    B-scans with and without a labelled class the student predicts one (an image-level criterion that needs no pixel
    label)."""
    classes = proposer.classes
    out, kept = [], np.zeros(len(classes) + 2, np.int64)  # background, classes..., ignored
    for data in sets:
        shown = np.zeros((2, 2), np.int64)  # [labelled without, with an allowed class] x [B-scans, predicted on]
        for s in data.samples:
            image = s.load_image()  # read once: proposed on now, trained on later
            probs = proposer.probabilities([image])[0]
            target = image_level_target(probs, classes, s.labels, data.classes, confidence)
            said = verdicts(classes, s.labels, data.classes)
            if cam is not None and "allowed" in said:
                soft, _ = cam[0].scores([image], np.ones((1, len(cam[0].classes)), bool))
                target = cam_gate(target, probs, soft[0].max(0), classes, s.labels, data.classes, cam[0].classes,
                                  cam[1])
            kept += np.bincount(np.searchsorted((0, *classes, IGNORE), target.ravel()), minlength=len(kept))
            out.append(Target(partial(np.asarray, image), partial(np.asarray, target), weight, WEAK,
                              (s.volume, s.bscan)))
            spoken = [j for j, v in enumerate(said, start=1) if v != "unknown"]
            shown[int("allowed" in said)] += (1, bool(np.isin(probs.argmax(0), spoken).any()))
        log(f"image level, {data.name}: the student predicts a class the labels speak about on {shown[1, 1]} of "
            f"{shown[1, 0]} B-scans labelled with one and {shown[0, 1]} of {shown[0, 0]} labelled without")
    names = ["background", *(ONTOLOGY[c].key for c in classes), "ignored"]
    log("weak targets: " + ", ".join(f"{n} {k / max(1, kept.sum()):.2%}" for n, k in zip(names, kept, strict=True)))
    return out


def _cam(recipe: Recipe, device: str) -> tuple[Saliency, CamGate] | None:
    """The recipe's ``cam`` block: a DFP or AGM checkpoint trained on image labels (DFP's saliency M without
    propagation, AGM's CAM) and the gate's fixed thresholds."""
    spec = dict(recipe.raw.get("cam") or {})
    if not spec:
        return None
    where = f"{recipe.path or 'recipe'}: cam"
    path = Path(str(spec.pop("checkpoint", "")))
    path = path if path.is_absolute() else recipe.base / path
    if not path.is_file():
        raise TrainingError(f"{where}: checkpoint must name a DFP or AGM checkpoint; {path} is not a file")
    try:
        gate = CamGate(**spec)
    except (TypeError, ValueError) as err:
        raise TrainingError(f"{where}: {err}") from err
    try:
        ckpt = Checkpoint.load(path)
    except CheckpointError as err:
        raise TrainingError(f"{where}: {err}") from err
    if ckpt.meta["method"] == "dfp":
        return DfpProposer.from_checkpoint(ckpt, propagate=False, device=device), gate
    if ckpt.meta["method"] == "agm":
        return AgmProposer.from_checkpoint(ckpt, device=device), gate
    raise TrainingError(f"{where}: {path} is a {ckpt.meta['method']!r} checkpoint; the gate takes a 'dfp' or 'agm' "
                        "classifier's saliency")


def run_real_wsss(recipe: Recipe, run_dir: Path, device: str, log: Callable[[str], None],
                  cancel: Callable[[], bool] | None) -> Path:
    """Adapt the ``init`` student to the ``real`` entries over ``rounds`` rounds; writes ``student.safetensors``."""
    if recipe.raw.get("retina") not in (None, "layers"):
        raise TrainingError(f"{recipe.path or 'recipe'}: retina must be 'layers' or absent; "
                            f"got {recipe.raw['retina']!r}")
    sets, flip = real_sets(recipe), recipe.flip
    proposer, init = init_student(recipe, device, "the phantom student's checkpoint (train it with "
                                  "training/phantom-student.yaml)")
    proposer.flip = flip  # the student labels the real B-scans as its checkpoint will propose
    spec = dict(recipe.raw.get("student") or {})
    spec.setdefault("intensity", proposer.intensity)
    try:
        config = StudentTrainConfig.from_dict(spec)
        confidence = Confidence(**(recipe.raw.get("confidence") or {}))
    except (TypeError, ValueError) as err:
        raise TrainingError(f"{recipe.path or 'recipe'}: {err}") from err
    cam = _cam(recipe, device)
    train, val, _ = recipe.splits()
    phantom = truth_targets(train)
    net, info, rounds = proposer.net, {}, int(recipe.raw.get("rounds", 2))
    for r in range(rounds):
        weak = weak_targets(proposer, sets, confidence, float(recipe.raw.get("real_weight", 1.0)), log, cam)
        net, info = train_student([*phantom, *weak], recipe.classes, recipe.input_size, net.config, config,
                                  run_dir / f"round-{r}", val=val, init=net, device=device, seed=recipe.seed + r,
                                  log=log, cancel=cancel)
        proposer = StudentProposer(net, recipe.classes, recipe.input_size, device=device, intensity=config.intensity,
                                   flip=flip)
    training = {"recipe": recipe.path.name if recipe.path else None, "seed": recipe.seed, "init": init,
                "rounds": rounds, "confidence": vars(confidence),
                "cam": None if cam is None else {"file": cam[0].checkpoint.id, "sha256": cam[0].checkpoint.sha256,
                                                 **vars(cam[1])}, "phantom_bscans": len(phantom),
                "real_data": [_card_entry(d) for d in sets], **info}
    ckpt = student_checkpoint(net, recipe.classes, recipe.input_size, intensity=config.intensity, training=training,
                              retina=recipe.raw.get("retina"), flip=flip)
    return ckpt.save(run_dir / "student.safetensors")


def _card_entry(data: LabelledSet) -> dict[str, Any]:
    """What of a real set went in: counts and the image-level label classes, never patient ids or paths."""
    patients = {s.patient for s in data.samples}
    return {"name": data.name, "bscans": len(data.samples), "patients": len(patients),
            "image_labels": [ONTOLOGY[c].key for c in data.classes], "pixel_masks": data.info["pixel_masks"]}
