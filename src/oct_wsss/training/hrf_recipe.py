"""Running an ``hrf`` recipe: train the CCT or MIL classifier, score proposals on the test split, save it."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

from oct_wsss.evaluate import write_json
from oct_wsss.propose.hrf import HrfProposer
from oct_wsss.training.distributed import main_process
from oct_wsss.training.hrf import HrfTrainConfig, hrf_checkpoint, train_hrf
from oct_wsss.training.hrf_eval import evaluate_hrf
from oct_wsss.training.recipe import Recipe, split_summary


def run_hrf(recipe: Recipe, run_dir: Path, device: str, log: Callable[[str], None],
            cancel: Callable[[], bool] | None) -> Path:
    """Train, evaluate on the test split when it has masks (classical refinement), save ``hrf-<model>.safetensors``."""
    from oct_wsss.preprocess.device import resolve_device

    train, val, test = recipe.splits()
    summary = split_summary(train, val, test)
    if main_process():
        (run_dir / "split.json").write_text(json.dumps(summary, indent=2))
    opts = HrfTrainConfig.from_dict(dict(recipe.raw.get("hrf", {})))
    run = train_hrf(train, val, opts, run_dir, device=device, seed=recipe.seed, log=log, cancel=cancel)
    if not main_process():
        return run_dir / f"hrf-{opts.model}.safetensors"  # rank 0 scores and writes it
    dev = resolve_device(device)
    size = tuple(train[0].load_image().shape)
    metrics = {"history": run.history[-1] if run.history else {}}
    if test and all(s.mask is not None for s in test):
        ckpt = hrf_checkpoint(run, opts, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the classical refinement is what the evaluation measures offline
            proposer = HrfProposer(run.net, run.normalisation, device=dev, checkpoint=ckpt,
                                   **{k: v for k, v in ckpt.meta["params"].items()})
        metrics["test"] = evaluate_hrf(proposer, val, test, iterations=proposer.iterations,
                                       min_area=opts.min_area, log=log)
        write_json(metrics["test"], run_dir / "hrf-test.json")
    ckpt = hrf_checkpoint(run, opts, size, metrics=metrics,
                          training={"recipe": recipe.path.name if recipe.path else None, "seed": recipe.seed,
                                    "layouts": recipe.layouts(),
                                    "splits": {k: {kk: vv for kk, vv in v.items() if kk != "patient_hashes"}
                                               for k, v in summary.items()}})
    path = ckpt.save(run_dir / f"hrf-{opts.model}.safetensors")
    log(f"wrote {path}")
    return path
