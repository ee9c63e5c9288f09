"""Training throughput of a recipe (B-scans per second) under ``torchrun``: the recipe's network, batch size,
optimizer and data pipeline on phantom B-scans at its input size, a fixed number of optimizer steps after warm-up.

    torchrun --nproc_per_node 1 scripts/train_throughput.py training/agm-synth-full.yaml --steps 20 --json agm.json

``--bf16`` (autocast) and ``--channels-last`` measure the precision and layout options (docs/benchmarks.md).

AGM steps go through the trainer's own ``train_epoch`` (classification phase); student steps through
``student_loss`` and AdamW as ``train_student`` takes them. Rank 0 prints and writes the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from oct_wsss.models.agm import AgmConfig, AgmNet
from oct_wsss.models.ganomaly import GanomalyConfig, Generator
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.synth import make_volume
from oct_wsss.training.agm import AgmTrainConfig, make_optimizer, train_epoch
from oct_wsss.training.data import Sample
from oct_wsss.training.distributed import Dist, init_distributed
from oct_wsss.training.loader import BscanDataset
from oct_wsss.training.recipe import Recipe
from oct_wsss.training.student import StudentTrainConfig, student_loss
from oct_wsss.training.student_data import StudentDataset, Target


def phantom(n: int, seed: int = 0) -> tuple[list, list]:
    """``n`` phantom B-scans (496 x 512, every lesion class possible) and their ontology-id masks."""
    case = make_volume(seed, n_bscans=n, height=496, width=512)
    return list(case.volume.data), list(case.labels)


def agm_step_source(recipe: Recipe, dist: Dist, batch: int, n: int,
                    channels_last: bool = False) -> Callable[[int], int]:
    """A function running ``k`` AGM training steps (the trainer's own epoch loop), returning the B-scans seen."""
    spec = dict(recipe.raw["agm"])
    config = AgmConfig.from_dict({**spec.pop("config"), "n_classes": len(recipe.classes)})
    opts = AgmTrainConfig.from_dict(spec)
    net = AgmNet(config).to(dist.device, memory_format=_layout(channels_last))
    gen_spec = recipe.raw.get("ganomaly", {}).get("config")
    gen = None if gen_spec is None else Generator(GanomalyConfig.from_dict(gen_spec)).to(dist.device).eval()
    images, masks = phantom(n)
    samples = [Sample(functools.partial(np.asarray, im), frozenset(int(c) for c in set(m.ravel().tolist()) - {0}),
                      "phantom") for im, m in zip(images, masks, strict=True)]
    data = BscanDataset(samples, recipe.classes, recipe.input_size, seed=recipe.seed, intensity=opts.intensity)
    loader = dist.loader(data, batch, seed=recipe.seed, epoch=0, num_workers=opts.num_workers,
                         persistent_workers=opts.num_workers > 0)  # workers start in the warm-up, not per epoch
    model, optimizer = dist.wrap(net), make_optimizer(net.parameters(), opts.optimizer)

    def run(k: int) -> int:
        done = 0
        while done < k:  # epochs over the phantom B-scans until k steps are done
            todo = min(k - done, len(loader))
            steps = AgmTrainConfig.from_dict({**spec, "max_steps_per_epoch": todo})
            train_epoch(model, net, gen, loader, optimizer, steps, dist, False, None, None)
            done += todo
        return k * batch

    return run


def student_step_source(recipe: Recipe, dist: Dist, batch: int, n: int,
                        channels_last: bool = False) -> Callable[[int], int]:
    """A function running ``k`` student training steps (student_loss, AdamW), returning the B-scans seen."""
    spec = dict(recipe.raw["student"])
    arch = StudentConfig.from_dict({"n_outputs": len(recipe.classes) + 1, **spec.pop("config")})
    config = StudentTrainConfig.from_dict(spec)
    net = StudentNet(arch).to(dist.device, memory_format=_layout(channels_last))
    images, masks = phantom(n)
    targets = [Target(functools.partial(np.asarray, im), functools.partial(np.asarray, m), 1.0, "phantom",
                      ("phantom", i)) for i, (im, m) in enumerate(zip(images, masks, strict=True))]
    data = StudentDataset(targets, recipe.classes, recipe.input_size, config.augmentation(), recipe.seed,
                          config.intensity)
    loader = dist.loader(data, batch, seed=recipe.seed, epoch=0)
    model = dist.wrap(net).train()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weights = torch.ones(len(recipe.classes) + 1, device=dist.device)

    def run(k: int) -> int:
        done = 0
        while done < k:
            for item in loader:
                loss = student_loss(model(item["image"].to(dist.device)), item["target"].to(dist.device),
                                    item["weight"].to(dist.device), weights, config.dice_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done == k:
                    break
        return k * batch

    return run


SOURCES = {"agm": agm_step_source, "student": student_step_source}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per rank (after 2 warm-up steps)")
    ap.add_argument("--batch", type=int, help="B-scans per step and rank (default: the recipe's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, help="also write the figures here (rank 0)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast around the steps (CPU or CUDA)")
    ap.add_argument("--channels-last", action="store_true", help="the network's weights in channels-last")
    args = ap.parse_args()
    recipe = Recipe.load(args.recipe)
    method = recipe.raw["method"]
    if method not in SOURCES:
        raise SystemExit(f"{args.recipe}: throughput is measured for {', '.join(SOURCES)} recipes, not {method}")
    dist = init_distributed(args.device)
    torch.manual_seed(recipe.seed + dist.rank)
    batch = args.batch or int(recipe.raw[method].get("batch_size", 8))
    run = SOURCES[method](recipe, dist, batch, n=max(2 * batch, 16), channels_last=args.channels_last)
    with torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=args.bf16):
        run(2)  # warm-up: cuDNN autotuning, allocator
        _sync(dist)
        t0 = time.perf_counter()
        seen = run(args.steps)
        _sync(dist)
        seconds = time.perf_counter() - t0
    total = dist.mean(seen / seconds) * dist.world_size
    figures = {"recipe": str(args.recipe), "method": method, "input_size": list(recipe.input_size),
               "batch_per_rank": batch, "steps": args.steps,
               "bf16": args.bf16, "channels_last": args.channels_last, "threads": torch.get_num_threads(),
               "ranks": dist.world_size, "device": str(dist.device),
               "device_name": torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "cpu",
               "seconds": round(seconds, 3), "bscans_per_s": round(total, 2),
               "peak_gpu_mb": round(torch.cuda.max_memory_allocated(dist.device) / 2**20) if dist.device.type == "cuda"
               else None}
    if dist.is_main:
        print(json.dumps(figures))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    dist.close()


def _layout(channels_last: bool) -> torch.memory_format:
    """The memory format the network's weights (and so its activations) are kept in."""
    return torch.channels_last if channels_last else torch.contiguous_format


def _sync(dist: Dist) -> None:
    """Wait for queued GPU work and for the other ranks, so the clock measures finished steps."""
    if dist.device.type == "cuda":
        torch.cuda.synchronize(dist.device)
    dist.barrier()


if __name__ == "__main__":
    main()
