"""The ``oct-wsss`` command line: every action the widgets offer, scriptable.

Each subcommand exits non-zero with a one-line reason on bad input and never prints PHI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLUGIN = "napari-oct-wsss"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _read(args: argparse.Namespace) -> None:
    from oct_wsss.io import read_volume

    summary = read_volume(args.path).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")


def _synth(args: argparse.Namespace) -> None:
    from oct_wsss.synth import write_dataset

    if args.volumes < 1:
        raise CliError("--volumes must be at least 1")
    if not 0.0 <= args.healthy_fraction <= 1.0:
        raise CliError("--healthy-fraction must be between 0 and 1")
    out = write_dataset(
        args.out, args.volumes, healthy_fraction=args.healthy_fraction, seed=args.seed, n_bscans=args.bscans
    )
    print(f"wrote {args.volumes} synthetic volumes to {out} (labels.csv, generation.json)")


def _evaluate(args: argparse.Namespace) -> None:
    from oct_wsss.classes import BACKGROUND, by_key
    from oct_wsss.evaluate import EvaluationInputError, console_table, evaluate_paths, write_json, write_markdown

    classes = None
    if args.classes:
        try:
            classes = sorted({by_key(k.strip()).id for k in args.classes.split(",") if k.strip()} - {BACKGROUND})
        except KeyError as err:
            raise CliError(str(err.args[0])) from err
    try:
        report = evaluate_paths(args.pred, args.truth, classes, lesion_images_only=args.lesion_images_only)
    except EvaluationInputError as err:
        raise CliError(str(err)) from err
    if report["n_images_scored"] == 0:
        raise CliError("no B-scan left to score (--lesion-images-only and no lesion in the truth)")
    print(console_table(report))
    if report["unmatched_truth_volumes"]:
        print(f"note: {len(report['unmatched_truth_volumes'])} truth volume(s) have no prediction and were not scored")
    if args.report:
        print(f"wrote {write_json(report, args.report)}")
    if args.markdown:
        print(f"wrote {write_markdown(report, args.markdown, title=f'{args.pred} vs {args.truth}')}")


def _train(args: argparse.Namespace) -> None:
    from oct_wsss.training import train_recipe

    path = train_recipe(args.recipe, out=args.out, device=args.device)
    print(f"wrote {path}")


def _export(args: argparse.Namespace) -> None:
    from oct_wsss.evaluate.measure import measure_labels, write_measurements
    from oct_wsss.io import read_labels, read_volume
    from oct_wsss.io.label_export import export_labels, safe_name

    labels = read_labels(args.labels)
    spacing = None
    if args.volume is not None:
        volume = read_volume(args.volume)
        if volume.shape != labels.shape:
            raise CliError(f"the labels are {labels.shape}, the volume {volume.shape}: not the same scan")
        spacing = volume.spacing_mm
    elif args.spacing:
        try:
            spacing = tuple(float(v) for v in args.spacing.split(","))
        except ValueError as err:
            raise CliError(f"--spacing takes Z,Y,X in mm, e.g. 0.12,0.0039,0.0114; got {args.spacing!r}") from err
        if len(spacing) != 3:
            raise CliError("--spacing takes three numbers: Z,Y,X in mm")
    name = safe_name(args.name or Path(args.labels).stem)
    try:
        paths = export_labels(labels, args.out, name, tuple(f.strip() for f in args.formats.split(",")), spacing)
    except ValueError as err:
        raise CliError(str(err)) from err
    if spacing is not None:
        paths += write_measurements(measure_labels(labels, spacing), args.out, f"{name}_measurements")
    else:
        print("note: no spacing (give --volume or --spacing), so no measurements in mm were written")
    print(f"wrote {len(paths)} files to {args.out}")


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


def parse_bscans(text: str | None, n_bscans: int) -> list[int] | None:
    """'5', '0-9', '0-9,20' or 'all' (None) -> B-scan indices, each checked against the volume."""
    if text is None or text == "all":
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError as err:
        raise CliError(f"--bscans takes e.g. 5, 0-9 or 0-9,20; got {text!r}") from err
    bad = [i for i in out if not 0 <= i < n_bscans]
    if bad or not out:
        raise CliError(f"--bscans {text!r} is outside the volume's B-scans 0..{n_bscans - 1}")
    return sorted(set(out))


def _propose(args: argparse.Namespace) -> None:
    from oct_wsss.io import read_volume
    from oct_wsss.propose import ProposalCancelled, load_proposer, propose
    from oct_wsss.propose.registry import write_proposal

    volume = read_volume(args.volume)
    bscans = parse_bscans(args.bscans, volume.n_bscans)
    options = {"threshold": args.threshold, "batch_size": args.batch_size}
    if args.method == "hrf":
        options.update(sam2_checkpoint=args.sam2_checkpoint, sam2_config=args.sam2_config,
                       iterations=args.iterations, crop_size=args.crop_size, box_size=args.box_size)
    proposer = load_proposer(args.method, args.checkpoint, device=args.device, **options)

    def progress(done: int, total: int) -> None:
        print(f"\rproposing: {done}/{total} B-scans", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        result = propose(volume, proposer=proposer, bscans=bscans, progress=progress, keep_scores=args.keep_scores)
    except ProposalCancelled as err:
        raise CliError(str(err)) from err
    files = write_proposal(result, args.out)
    timing = result.provenance["timings"]
    print(f"proposed {int(result.done.sum())} B-scans in {timing['total_s']:.1f} s "
          f"({timing['per_bscan_s']:.2f} s per B-scan) on {result.provenance['device']}")
    for path in files.values():
        print(f"wrote {path}")


def _bench(args: argparse.Namespace) -> None:
    from oct_wsss.propose.bench import run_bench, table

    read = None
    if args.volume is not None:
        from oct_wsss.io import read_volume

        volume = read_volume(args.volume)
        read = lambda: read_volume(args.volume)  # noqa: E731
    else:
        from oct_wsss.synth import make_volume

        volume = make_volume(0, n_bscans=8 if args.quick else 49, height=496, width=512).volume
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    checkpoints = {k: v for k, v in (("student", args.student), ("agm", args.agm)) if v is not None}
    try:
        report = run_bench(volume, device=args.device, repeats=args.repeats or (2 if args.quick else 5),
                           methods=methods, checkpoints=checkpoints, read=read, log=lambda m: print(m, file=sys.stderr))
    except ValueError as err:
        raise CliError(str(err)) from err
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


def _hrf_grid(args: argparse.Namespace) -> None:
    import csv

    from oct_wsss.training.datasets import load_dataset
    from oct_wsss.training.hrf_grid import grid_search

    sam2 = None
    if args.sam2_checkpoint is not None:
        from oct_wsss.propose.device import resolve_device
        from oct_wsss.propose.sam2_backend import DEFAULT_CONFIG, Sam2Backend

        sam2 = Sam2Backend(args.sam2_config or DEFAULT_CONFIG, args.sam2_checkpoint, device=resolve_device(args.device))
    try:
        samples = load_dataset({"layout": args.layout, "root": str(args.data)}).samples
        rows = grid_search(samples, _ints(args.crops), _ints(args.boxes), sam2=sam2, max_foci=args.max_foci)
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


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise CliError(f"expected comma-separated integers, got {text!r}") from err


def _demo(args: argparse.Namespace) -> None:
    try:
        import napari
    except ImportError as err:  # the GUI is an extra
        raise CliError("the demo needs napari and a Qt binding: pip install 'napari-oct-wsss[gui]'") from err
    populate_demo(napari.Viewer(title="napari-oct-wsss demo"))
    napari.run()


def populate_demo(viewer: Any) -> None:
    """Fill a napari viewer with the demo through the plugin's manifest (sample data, widget), as a user would."""
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.9 moved the scale bar to the canvas overlays
    (canvas.overlays.scale_bar if canvas is not None else viewer.scale_bar).visible = True
    viewer.open_sample(PLUGIN, "synthetic_lesions")
    viewer.window.add_plugin_dock_widget(PLUGIN, "Synthetic OCT phantom")
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so tests and docs can list the subcommands)."""
    parser = argparse.ArgumentParser(prog="oct-wsss", description="Weakly supervised lesion proposals for retinal OCT.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("read", help="print a PHI-free summary of an OCT file or B-scan folder")
    p.add_argument("path", help="OCT file (.vol .e2e .xml .fda .fds .img .dcm .OCT .tif .npy .npz .mat) or folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_read)

    p = sub.add_parser("synth", help="write a synthetic OCT dataset with pixel ground truth")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--volumes", required=True, type=int, help="number of volumes")
    p.add_argument("--healthy-fraction", type=float, default=0.2, help="fraction of lesion-free volumes (0.2)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (0)")
    p.add_argument("--bscans", type=int, default=49, help="B-scans per volume (49)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("evaluate", help="score predicted label volumes against ground truth (IoU, DSC, area ratios)")
    p.add_argument("--pred", required=True, type=Path,
                   help="labels.tif, mask folder, volume folder (labels.tif or masks/ inside) or a root of such")
    p.add_argument("--truth", required=True, type=Path,
                   help="the same kinds (e.g. an `oct-wsss synth` volume or dataset root); matched by volume id")
    p.add_argument("--report", type=Path, help="write the full report as JSON here")
    p.add_argument("--markdown", type=Path, help="write a markdown table in the AGM paper's Table-1 shape here")
    p.add_argument("--classes", help="comma-separated class keys to score (e.g. srf,ped); others count as background")
    p.add_argument("--lesion-images-only", action="store_true",
                   help="score only B-scans whose truth holds a lesion (the AGM paper's protocol)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("train", help="train models from a recipe (YAML): data, split, schedule, threshold sweep")
    p.add_argument("recipe", type=Path, help="recipe file, e.g. training/agm-synth.yaml")
    p.add_argument("--out", type=Path, help="run folder (default: the recipe's 'out')")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="device (default: the recipe's, else auto)")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="export labels as TIFF/NPY/PNG and measurements (areas, volumes, HRF) as CSV")
    p.add_argument("labels", type=Path, help="labels.tif or a mask folder (ontology ids)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", help="file-name stem (default: the labels' stem; sanitised, never a path)")
    p.add_argument("--formats", default="tiff,npy,png", help="comma-separated: tiff, npy, png (all)")
    p.add_argument("--volume", type=Path, help="the OCT the labels belong to (for spacing)")
    p.add_argument("--spacing", help="Z,Y,X spacing in mm when no --volume is given")
    p.set_defaults(func=_export)

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

    p = sub.add_parser("propose", help="propose lesion labels for a volume; writes labels.tif and provenance.json")
    p.add_argument("volume", type=Path, help="OCT file or B-scan folder (anything `oct-wsss read` opens)")
    p.add_argument("--method", required=True, choices=("agm", "student", "dfp", "hrf"), help="proposal method")
    p.add_argument("--checkpoint", required=True, type=Path, help="the method's .safetensors checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--bscans", help="B-scans to propose: 5, 0-9, 0-9,20 or all (default all)")
    p.add_argument("--threshold", type=float, help="background threshold τ in [0, 1] (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, help="B-scans per batch (default 8 on CUDA, 2 on CPU)")
    hrf = p.add_argument_group("hrf", "options of --method hrf (docs/hrf.md)")
    hrf.add_argument("--sam2-checkpoint", type=Path, help="SAM 2 checkpoint (.pt); without it a classical step")
    hrf.add_argument("--sam2-config", help="packaged SAM 2 config name (default sam2.1_hiera_t)")
    hrf.add_argument("--iterations", type=int, help="most foci per B-scan, i.e. classifier reruns (default 6)")
    hrf.add_argument("--crop-size", type=int, help="crop side around the relevance peak, px (default 72)")
    hrf.add_argument("--box-size", type=int, help="box prompt side at native scale, px (default 4)")
    p.add_argument("--keep-scores", action="store_true",
                   help="also write scores.npy: per-class score maps (soft labels a student can train on)")
    p.set_defaults(func=_propose)

    p = sub.add_parser("bench", help="time every proposal stage (warm-up, repeats, median and spread) and peak memory")
    p.add_argument("--quick", action="store_true", help="8 B-scans and 2 repeats instead of 49 and 5")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--volume", type=Path, help="OCT file to time (default: a 49 x 496 x 512 synthetic volume)")
    p.add_argument("--methods", default="student,agm", help="comma-separated methods to time (student,agm)")
    p.add_argument("--student", type=Path, help="student checkpoint (default: random weights, U-Net at 256 x 256)")
    p.add_argument("--agm", type=Path, help="AGM checkpoint (default: random weights at the paper's size)")
    p.add_argument("--repeats", type=int, help="timed repeats per stage after one warm-up")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=_bench)

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

    p = sub.add_parser("demo", help="open napari with the plugin and a synthetic OCT volume with lesions")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oct-wsss`` console script."""
    from oct_wsss.checkpoint import CheckpointError
    from oct_wsss.io import OctReadError
    from oct_wsss.propose.proposal import ProposalError
    from oct_wsss.training.errors import TrainingError

    args = build_parser().parse_args(argv)
    from oct_wsss.store import StoreError

    user_errors = (CliError, OctReadError, CheckpointError, ProposalError, TrainingError, StoreError, FileExistsError,
                   FileNotFoundError, PermissionError)
    try:
        args.func(args)
    except user_errors as err:
        print(f"oct-wsss {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oct-wsss {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
