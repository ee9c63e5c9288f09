"""The ``propagate`` subcommand: carry the labels of B-scan K over the B-scans A..B (docs/propagation.md); writes
``labels.tif`` (the input labels with the propagated B-scans filled) and ``provenance.json``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.cli._common import CliError, write_labels_and_provenance


def parse_span(text: str) -> tuple[int, int]:
    """'10:20' -> (10, 20), one-line error otherwise."""
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(lo), int(hi)
    except ValueError as err:
        raise CliError(f"--to takes a B-scan range A:B, e.g. 10:20; got {text!r}") from err


def _propagate(args: argparse.Namespace) -> None:
    from oct_wsss.io import read_labels, read_volume
    from oct_wsss.propose.propagate import PropagationError, check_request, propagate

    start, end = parse_span(args.to)
    if not args.labels.exists():
        raise CliError(f"{args.labels}: no such labels file or folder")
    volume = read_volume(args.volume)
    try:
        labels = read_labels(args.labels)
        check_request(volume.shape, labels, args.source, start, end)  # before loading SAM 2
    except ValueError as err:  # PropagationError, or a labels file that is not label pages
        raise CliError(str(err)) from err
    project = None
    if args.project is not None:
        from oct_wsss.cli.propose import check_project, project_store

        check_project(args.project)
        project = project_store(args.project, volume)
    accepted = project[0].accepted_masks(project[1]) if project is not None else {}
    for i, mask in accepted.items():  # the grader's accepted masks are what the labels hold there
        labels[i] = mask
    engine_fn = None
    if args.engine == "sam2":
        from oct_wsss.preprocess.device import resolve_device
        from oct_wsss.propose.propagate_sam2 import build_video_predictor, sam2_engine, sam2_provenance

        if args.sam2_checkpoint is None:
            raise CliError("--engine sam2 needs --sam2-checkpoint (a SAM 2 .pt file); or use --engine flow")
        device = str(resolve_device(args.device))
        engine_fn = sam2_engine(build_video_predictor(args.sam2_checkpoint, args.sam2_config, device=device))

    def progress(done: int, total: int) -> None:
        print(f"\rpropagating: {done}/{total} B-scans", end="", file=sys.stderr, flush=True)

    try:
        result = propagate(volume.data, labels, args.source, start, end, args.engine, engine_fn=engine_fn,
                           progress=progress, min_confidence=args.min_confidence, accepted=set(accepted))
    except PropagationError as err:
        raise CliError(str(err)) from err
    print(file=sys.stderr)
    if args.engine == "sam2":
        result.provenance["sam2"] = sam2_provenance(args.sam2_checkpoint, args.sam2_config)
    result.provenance["volume"] = {"shape": list(volume.shape), "spacing_mm": list(volume.spacing_mm),
                                   "format": volume.source.get("format")}
    if project is not None:
        result.provenance["project_run"] = _keep_in_project(*project, volume.data, labels, result)
    files = write_labels_and_provenance(args.out, result.labels, tuple(volume.spacing_mm), result.provenance)
    print(f"proposed {int(result.proposed.sum())} B-scans from B-scan {args.source} ({args.engine})")
    for stop in result.provenance["stops"]:
        print(f"  class {stop['class']} {stop['direction']}: last B-scan {stop['last_filled']} ({stop['reason']})")
    if project is not None:
        print(f"kept {len(accepted)} accepted B-scans; the proposed B-scans are run {result.provenance['project_run']} "
              f"in {args.project} (Review and Propagate reopen them)")
    for file in files:
        print(f"wrote {file}")


def _keep_in_project(store: Any, volume_id: str, data: np.ndarray, before: np.ndarray, result: Any) -> str:
    """Record the propagated B-scans as one run of proposed versions (what each page was beside it); the run id."""
    from oct_wsss.store import new_run_id

    run = new_run_id()
    info = {k: result.provenance[k] for k in ("method", "engine", "source_bscan", "range", "parameters", "sam2")
            if k in result.provenance}
    for i in result.provenance["proposed_bscans"]:
        store.propose(volume_id, i, result.labels[i], run=run, image=data[i], previous={"page": before[i]},
                      proposal_info={**info, "run": run, "source": "cli"})
    return run


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("propagate", help="carry the labels of one B-scan to its neighbours; writes labels.tif and "
                       "provenance.json")
    p.add_argument("volume", type=Path, help="OCT file or B-scan folder (anything `oct-wsss read` opens)")
    p.add_argument("--labels", required=True, type=Path, help="labels.tif or mask folder of the volume (ontology ids)")
    p.add_argument("--from", dest="source", required=True, type=int, help="the corrected B-scan K (0-based)")
    p.add_argument("--to", required=True, help="B-scans A:B to fill (inclusive, holding K); others are unchanged")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--engine", choices=("flow", "sam2"), default="flow",
                   help="flow: optical flow, no weights (default); sam2: SAM 2's video predictor")
    p.add_argument("--sam2-checkpoint", type=Path, help="SAM 2 checkpoint (.pt) for --engine sam2")
    p.add_argument("--sam2-config", default="sam2.1_hiera_t", help="packaged SAM 2 config (default sam2.1_hiera_t)")
    p.add_argument("--min-confidence", type=float, default=0.5,
                   help="stop a class where its confidence drops below this (default 0.5)")
    p.add_argument("--device", default="auto", help="sam2 engine: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--project", type=Path, help="a grader's project folder: B-scans accepted there are kept, and the "
                   "propagated B-scans are recorded there as one proposed run (undo/redo it in napari)")
    p.set_defaults(func=_propagate)
