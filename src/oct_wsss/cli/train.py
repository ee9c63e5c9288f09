"""Subcommands that fit models: ``train``, ``finetune``, ``hrf-grid``."""

from __future__ import annotations

import argparse
from pathlib import Path

from oct_wsss.cli._common import CliError, ints


def _train(args: argparse.Namespace) -> None:
    from oct_wsss.training import train_recipe
    from oct_wsss.training.distributed import main_process

    path = train_recipe(args.recipe, out=args.out, device=args.device)
    if main_process():  # under torchrun rank 0 wrote it
        print(f"wrote {path}")


def _finetune(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from oct_wsss.training.finetune import DEFAULTS, finetune

    config = replace(DEFAULTS, **{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    path, lineage = finetune(args.store, args.from_ckpt, out_dir=args.out, config=config, held_out=args.held_out,
                             device=args.device, seed=args.seed)
    before, after = lineage["metrics_before"], lineage["metrics_after"]
    if before and after:
        print(f"held-out corrections ({before['n_bscans']} B-scans): mIoU {before['miou']:.4f} -> {after['miou']:.4f}")
    print(f"wrote {path} (parent {lineage['parent']['file']} untouched)")


def _hrf_grid(args: argparse.Namespace) -> None:
    import csv

    from oct_wsss.training.datasets import load_dataset
    from oct_wsss.training.hrf_grid import grid_search

    sam2 = None
    if args.sam2_checkpoint is not None:
        from oct_wsss.preprocess.device import resolve_device
        from oct_wsss.propose.sam2_backend import DEFAULT_CONFIG, Sam2Backend

        sam2 = Sam2Backend(args.sam2_config or DEFAULT_CONFIG, args.sam2_checkpoint, device=resolve_device(args.device))
    try:
        samples = load_dataset({"layout": args.layout, "root": str(args.data)}).samples
        rows = grid_search(samples, ints(args.crops), ints(args.boxes), sam2=sam2, max_foci=args.max_foci)
    except (ValueError, KeyError) as err:
        raise CliError(str(err)) from err
    best = max(rows, key=lambda r: r["dice"])
    print(f"refiner {'sam2' if sam2 else 'classical'}; best: crop {best['crop']} px, box {best['box']} px, "
          f"mean Dice {best['dice']:.3f}")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("train", help="train models from a recipe (YAML): data, split, schedule, threshold sweep")
    p.add_argument("recipe", type=Path, help="recipe file, e.g. training/agm-synth.yaml")
    p.add_argument("--out", type=Path, help="run folder (default: the recipe's 'out')")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="device (default: the recipe's, else auto)")
    p.set_defaults(func=_train)

    p = sub.add_parser("finetune", help="continue a student on a project's accepted corrections (new checkpoint)")
    p.add_argument("--store", required=True, type=Path, help="project folder of the CorrectionStore")
    p.add_argument("--from", dest="from_ckpt", required=True, type=Path, help="the student checkpoint to continue")
    p.add_argument("--out", type=Path, help="folder for the new checkpoint (default PROJECT/checkpoints)")
    p.add_argument("--epochs", type=int, help="epochs over the corrections (10)")
    p.add_argument("--lr", type=float, help="peak learning rate (2e-4)")
    p.add_argument("--held-out", type=float, default=0.2, help="fraction of corrections scored before/after (0.2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.set_defaults(func=_finetune)

    p = sub.add_parser("hrf-grid", help="calibrate the HRF prompt: mean Dice per (crop, box) at ground-truth centres")
    p.add_argument("data", type=Path, help="data set folder with HRF masks (e.g. `oct-wsss synth` output)")
    p.add_argument("--layout", default="synth", help="data set layout (default synth)")
    p.add_argument("--crops", default="32,50,64,72,100", help="crop sides in px (default 32,50,64,72,100)")
    p.add_argument("--boxes", default="2,4,6,8", help="box prompt sides in px (default 2,4,6,8)")
    p.add_argument("--sam2-checkpoint", type=Path, help="SAM 2 checkpoint (.pt); without it the classical step")
    p.add_argument("--sam2-config", help="packaged SAM 2 config name (default sam2.1_hiera_t)")
    p.add_argument("--device", default="auto", help="device for SAM 2 (auto, cpu, cuda)")
    p.add_argument("--max-foci", type=int, help="use at most this many foci (faster)")
    p.add_argument("--csv", type=Path, help="write the grid as CSV here")
    p.set_defaults(func=_hrf_grid)
