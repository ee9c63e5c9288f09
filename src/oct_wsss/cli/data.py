"""Subcommands on files: ``read``, ``synth``, ``evaluate``, ``export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from oct_wsss.cli._common import CliError


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
    from oct_wsss.evaluate import (
        EvaluationInputError,
        console_table,
        evaluate_paths,
        parse_truth_map,
        write_json,
        write_markdown,
    )

    classes = None
    if args.classes:
        try:
            classes = sorted({by_key(k.strip()).id for k in args.classes.split(",") if k.strip()} - {BACKGROUND})
        except KeyError as err:
            raise CliError(str(err.args[0])) from err
    try:
        truth_map = parse_truth_map(args.truth_map)
        report = evaluate_paths(args.pred, args.truth, classes, lesion_images_only=args.lesion_images_only,
                                truth_map=truth_map)
    except EvaluationInputError as err:
        raise CliError(str(err)) from err
    if report["n_images_scored"] == 0:
        raise CliError("no B-scan left to score (--lesion-images-only and no lesion in the truth)")
    print(console_table(report))
    if report["truth_values_to_background"]:
        print(f"note: truth labels {report['truth_values_to_background']} are not in --truth-map and count as "
              "background")
    if report["unmatched_truth_volumes"]:
        print(f"note: {len(report['unmatched_truth_volumes'])} truth volume(s) have no prediction and were not scored")
    if args.report:
        print(f"wrote {write_json(report, args.report)}")
    if args.markdown:
        print(f"wrote {write_markdown(report, args.markdown, title=f'{args.pred} vs {args.truth}')}")


def _export(args: argparse.Namespace) -> None:
    from oct_wsss.evaluate.measure import measure_labels, write_measurements
    from oct_wsss.io import read_labels, read_volume
    from oct_wsss.io.label_export import export_labels, safe_name

    labels = read_labels(args.labels)
    spacing, image = None, None
    if args.volume is not None:
        volume = read_volume(args.volume)
        if volume.shape != labels.shape:
            raise CliError(f"the labels are {labels.shape}, the volume {volume.shape}: not the same scan")
        spacing, image = volume.spacing_mm, volume.data
    elif args.spacing:
        try:
            spacing = tuple(float(v) for v in args.spacing.split(","))
        except ValueError as err:
            raise CliError(f"--spacing takes Z,Y,X in mm, e.g. 0.12,0.0039,0.0114; got {args.spacing!r}") from err
        if len(spacing) != 3:
            raise CliError("--spacing takes three numbers: Z,Y,X in mm")
    name = safe_name(args.name or Path(args.labels).stem)
    try:
        paths = export_labels(labels, args.out, name, tuple(f.strip() for f in args.formats.split(",")), spacing,
                              image)
    except ValueError as err:
        raise CliError(str(err)) from err
    if spacing is not None:
        paths += write_measurements(measure_labels(labels, spacing), args.out, f"{name}_measurements")
    else:
        print("note: no spacing (give --volume or --spacing), so no measurements in mm were written")
    print(f"wrote {len(paths)} files to {args.out}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
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
    p.add_argument("--truth-map", action="append", metavar="SRC:DST[,SRC:DST]",
                   help="truth in another label convention: truth label SRC is ontology id (or key) DST, e.g. 9:7 "
                        "for Duke's fluid; repeatable or comma-separated; unmapped truth labels count as background")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="export labels as TIFF/NPY/PNG and measurements (areas, volumes, HRF) as CSV")
    p.add_argument("labels", type=Path, help="labels.tif or a mask folder (ontology ids)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", help="file-name stem (default: the labels' stem; sanitised, never a path)")
    p.add_argument("--formats", default="tiff,npy,png",
                   help="comma-separated: tiff, npy, png, eye (eyepy; needs --volume) (tiff,npy,png)")
    p.add_argument("--volume", type=Path, help="the OCT the labels belong to (for spacing)")
    p.add_argument("--spacing", help="Z,Y,X spacing in mm when no --volume is given")
    p.set_defaults(func=_export)
