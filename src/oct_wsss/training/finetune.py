"""``oct-wsss finetune --store PROJECT --from CKPT``: continue a student on the grader's accepted corrections.

Each run holds out a slice of the corrections (whole volumes where there are several), scores the parent and the
fine-tuned student on it, and writes a NEW versioned checkpoint whose lineage names the parent, the corrections used
and the before/after metrics. The parent, and every earlier fine-tune, is left untouched.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import ONTOLOGY
from oct_wsss.evaluate import image_confusions, segmentation_scores
from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import Correction, CorrectionStore
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.student import StudentTrainConfig, student_checkpoint, train_student
from oct_wsss.training.student_data import correction_targets

#: On Duke DME, 8-24 optimiser steps at lr 2e-4 did not move a student; ~30 at 1e-3 did (docs/results-real.md).
FEW_STEPS = 30
DEFAULTS = StudentTrainConfig(epochs=10, lr=2e-4, correction_weight=1.0, augment={"rotation": 5.0})


def holdout(corrections: Sequence[Correction], fraction: float, seed: int = 0) -> tuple[list[Correction],
                                                                                          list[Correction]]:
    """(train, held out): whole volumes by a seeded hash when there are several, else every k-th B-scan."""
    if not 0.0 <= fraction < 1.0:
        raise TrainingError(f"the held-out fraction must be in [0, 1); got {fraction}")
    volumes = sorted({c.volume for c in corrections}, key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).digest())
    if fraction == 0 or len(corrections) < 2:
        return list(corrections), []
    if len(volumes) >= 2:
        n = min(max(round(fraction * len(volumes)), 1), len(volumes) - 1)
        held = set(volumes[:n])
        return [c for c in corrections if c.volume not in held], [c for c in corrections if c.volume in held]
    step = max(2, min(round(1 / fraction), len(corrections)))
    return ([c for i, c in enumerate(corrections) if i % step != step - 1],
            [c for i, c in enumerate(corrections) if i % step == step - 1])


def score(proposer: StudentProposer, corrections: Sequence[Correction]) -> dict[str, Any] | None:
    """mIoU (background included), lesion mIoU and per-class IoU of a student against corrections' masks."""
    if not corrections:
        return None
    arrays = [c.arrays() for c in corrections]
    preds = [proposer.predict(a["image"]) for a in arrays]
    s = segmentation_scores(image_confusions([a["mask"] for a in arrays], preds), proposer.classes)
    return {"miou": s.miou, "miou_lesions": s.miou_lesions, "n_bscans": len(corrections),
            "iou": {k: v.iou for k, v in s.classes.items() if v.truth_pixels or v.pred_pixels}}


def next_version_path(parent: Path, out_dir: Path) -> Path:
    """``out_dir/<parent stem>-ft<N>.safetensors`` with the first N not yet taken (never an existing file)."""
    stem = parent.stem.split("-ft")[0]
    n = 1
    while (out_dir / f"{stem}-ft{n}.safetensors").exists():
        n += 1
    return out_dir / f"{stem}-ft{n}.safetensors"


def finetune(store_dir: str | Path, parent: str | Path, *, out_dir: str | Path | None = None,
             config: StudentTrainConfig = DEFAULTS, held_out: float = 0.2, device: str = "auto", seed: int = 0,
             log: Callable[[str], None] = print, cancel: Callable[[], bool] | None = None) -> tuple[Path, dict]:
    """Fine-tune the student ``parent`` on the store's accepted corrections; returns (new checkpoint, lineage)."""
    parent = Path(parent)
    ckpt = Checkpoint.load(parent, expect_method="student")
    base = StudentProposer.from_checkpoint(ckpt, device=device)
    store = CorrectionStore(store_dir)
    accepted = store.corrections()
    if not accepted:
        raise TrainingError(f"{store.root} holds no accepted corrections yet; accept some B-scans first")
    extra = sorted({c for correction in accepted for c in correction.labels} - set(base.classes))
    if extra:  # they would silently be learnt as background
        raise TrainingError(
            f"the corrections in {store.root} hold {', '.join(f'{ONTOLOGY[c].key} ({c})' for c in extra)}, which "
            f"{ckpt.id} does not predict (it predicts {', '.join(ONTOLOGY[c].key for c in base.classes)}); fine-tune "
            "a student trained with those classes")
    train, held = holdout(accepted, held_out, seed)
    config = replace(config, intensity=base.intensity)  # the parent's input preprocessing, whatever was asked
    before = score(base, held)
    out = Path(out_dir) if out_dir is not None else store.root / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    target = next_version_path(parent, out)
    work = out / f".{target.stem}-work"  # resumable state of this run; removed once the checkpoint is written
    log(f"finetune: {len(train)} corrections to learn from, {len(held)} held out; parent {ckpt.id}")
    steps = math.ceil(len(train) / config.batch_size) * config.epochs
    if steps < FEW_STEPS:
        log(f"finetune: note: only {steps} optimiser steps ({config.epochs} epochs of {len(train)} corrections); a "
            "student far from the corrections may not move; raise --epochs (and --lr): on Duke DME ~30 steps at "
            "1e-3 helped where 8-24 at 2e-4 did not (docs/results-real.md)")
    net, info = train_student(correction_targets(train, config.correction_weight), base.classes, base.input_size,
                              base.net.config, config, work, init=base.net, device=device, seed=seed, log=log,
                              cancel=cancel)
    after = score(StudentProposer(net, base.classes, base.input_size, device=device, intensity=base.intensity,
                                  flip=base.flip), held)
    lineage = {"parent": {"id": ckpt.id, "sha256": ckpt.sha256, "file": parent.name},
               "store": {"schema": store.schema_version, "accepted": len(accepted)},
               "trained_on": [_ref(c) for c in train], "held_out": [_ref(c) for c in held],
               "metrics_before": before, "metrics_after": after}
    new = student_checkpoint(net, base.classes, base.input_size, lineage=lineage, threshold=base.threshold,
                             intensity=base.intensity, flip=base.flip,
                             training={"finetune": {"epochs": config.epochs, "lr": config.lr, "seed": seed,
                                                    "losses": info["losses"]},
                                       "parent_training": ckpt.meta["training"]},
                             metrics={"held_out_before": before, "held_out_after": after})
    if target.exists():  # another run took the name meanwhile
        target = next_version_path(parent, out)
    new.save(target)
    for f in work.glob("*"):
        f.unlink()
    work.rmdir()
    return target, lineage


def _ref(c: Correction) -> dict[str, Any]:
    return {"volume": c.volume, "bscan": c.bscan, "version": c.version, "sha256": c.sha256}
