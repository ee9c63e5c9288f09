"""The ``bench`` subcommand: stage timings and peak memory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oct_wsss.cli._common import CliError


def _bench(args: argparse.Namespace) -> None:
    from oct_wsss.bench.run import run_bench, table

    read = None
    if args.volume is not None:
        from oct_wsss.io import read_volume

        volume = read_volume(args.volume)
        read = lambda: read_volume(args.volume)  # noqa: E731
    else:
        from oct_wsss.synth import make_volume

        volume = make_volume(0, n_bscans=8 if args.quick else 49, height=496, width=512).volume
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    checkpoints = {k: v for k, v in (("student", args.student), ("agm", args.agm), ("hrf", args.hrf),
                                     ("layers", args.layers)) if v is not None}
    try:
        report = run_bench(volume, device=args.device, repeats=args.repeats or (2 if args.quick else 5),
                           methods=methods, checkpoints=checkpoints, read=read,
                           agm_size="small" if args.quick else "paper", baseline=not args.no_baseline,
                           hrf_iterations=2 if args.quick else 6, log=lambda m: print(m, file=sys.stderr))
    except ValueError as err:
        raise CliError(str(err)) from err
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("bench", help="time every proposal stage (warm-up, repeats, median and spread) and peak memory")
    p.add_argument("--quick", action="store_true", help="8 B-scans, 2 repeats, the small AGM (the demo's size) and "
                   "2 HRF iterations instead of 49 B-scans, 5 repeats, the paper-size AGM and 6 iterations")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--volume", type=Path, help="OCT file to time (default: a 49 x 496 x 512 synthetic volume)")
    p.add_argument("--methods", default="student,agm,sam2,hrf",
                   help="comma-separated methods to time (default student,agm,sam2,hrf; also layers)")
    p.add_argument("--layers", type=Path, help="layer checkpoint (default: the bundled layers.safetensors)")
    p.add_argument("--hrf", type=Path, help="HRF checkpoint (default: random weights, a small MIL classifier)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the grad-cam package baseline (per image and class, aug_smooth, fp32) and the speed-up")
    p.add_argument("--student", type=Path, help="student checkpoint (default: random weights, U-Net at 256 x 256)")
    p.add_argument("--agm", type=Path,
                   help="AGM checkpoint (default: random weights at the paper's size; --quick: the demo's size)")
    p.add_argument("--repeats", type=int, help="timed repeats per stage after one warm-up")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=_bench)
