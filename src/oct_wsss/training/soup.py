"""Recipe key ``soup: N``: train the recipe N times with seeds ``seed`` … ``seed + N - 1`` and write the uniform
average of their weights (a model soup, Wortsman et al. 2022). Runs that start from the same checkpoint and differ
only in shuffling and augmentation stay close in weight space, so their average is one network of the same size and
speed that carries less of any one run's luck (docs/results-real.md §10.9 measures it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import replace
from pathlib import Path

import torch

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.training.errors import TrainingError

#: what must agree between the ingredients for their average to be one model
SAME = ("method", "architecture", "classes", "input_size", "normalisation", "params")

Trainer = Callable[..., Path]


def average_weights(ingredients: Sequence[Checkpoint]) -> dict[str, torch.Tensor]:
    """The mean of every floating-point tensor (weights and batch-norm statistics); counters come from the first."""
    keys = set(ingredients[0].state_dict)
    for ckpt in ingredients[1:]:
        if set(ckpt.state_dict) != keys or any(ckpt.state_dict[k].shape != v.shape
                                               for k, v in ingredients[0].state_dict.items()):
            raise TrainingError("soup: the runs' networks differ in their tensors; only runs of one recipe average")
    out = {}
    for key, first in ingredients[0].state_dict.items():
        stack = torch.stack([c.state_dict[key].float() for c in ingredients])
        out[key] = stack.mean(0).to(first.dtype) if first.is_floating_point() else first.clone()
    return out


def soup_checkpoint(ingredients: Sequence[Checkpoint], seeds: Sequence[int]) -> Checkpoint:
    """One checkpoint of the ingredients' averaged weights; its card names the seeds and each ingredient's SHA-256."""
    first = ingredients[0].meta
    for ckpt in ingredients[1:]:
        differ = [k for k in SAME if ckpt.meta.get(k) != first.get(k)]
        if differ:
            raise TrainingError(f"soup: the runs differ in {', '.join(differ)}; only runs of one recipe average")
    meta = deepcopy(first)
    meta["training"] = {**meta.get("training", {}), "seed": list(seeds),
                        "soup": {"seeds": list(seeds), "ingredients": [c.sha256 for c in ingredients],
                                 "rule": "uniform mean of weights and batch-norm statistics"}}
    meta["metrics"] = {}  # each run's own metrics stay in its file; the soup is scored where it is used
    return Checkpoint(average_weights(ingredients), meta)


def run_soup(recipe, run_dir: Path, device: str, log: Callable[[str], None], cancel: Callable[[], bool] | None,
             train: Trainer, is_main: bool = True) -> Path:
    """Train ``recipe`` once per seed into ``run_dir/seed-S`` (a finished run is reused, so a rerun resumes) and
    write their soup as the run folder's ``student.safetensors``."""
    seeds = [recipe.seed + i for i in range(recipe.soup)]
    paths = []
    for seed in seeds:
        sub_dir = run_dir / f"seed-{seed}"
        done = sub_dir / "student.safetensors"
        if done.is_file():
            log(f"soup: seed {seed} already trained ({done})")
            paths.append(done)
            continue
        log(f"soup: training seed {seed} ({len(paths) + 1} of {len(seeds)})")
        sub_dir.mkdir(parents=True, exist_ok=True)
        sub = replace(recipe, raw={**recipe.raw, "seed": seed, "soup": 1})
        paths.append(train(sub, sub_dir, device, log, cancel))
    out = run_dir / "student.safetensors"
    if is_main:
        soup_checkpoint([Checkpoint.load(p, expect_method="student") for p in paths], seeds).save(out)
        log(f"soup of seeds {seeds} written to {out}")
    return out
