"""The ``propose`` subcommand: one volume to labels.tif and provenance.json, or a batch of volumes (cli/batch.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oct_wsss.cli._common import CliError, parse_bscans
from oct_wsss.volume import OctVolume


def _propose(args: argparse.Namespace) -> None:
    from oct_wsss.cli import batch
    from oct_wsss.propose import load_proposer
    from oct_wsss.store.store import EMBEDDINGS_DIR

    if not args.volume.exists():  # say so before spending seconds on loading a model
        from oct_wsss.io import OctReadError

        raise OctReadError(args.volume, "no such file or folder")
    many = batch.is_batch(args.volume)
    if args.shard is not None and not many:
        raise CliError("--shard splits a batch: give a folder of volumes or a CSV manifest")
    if many:  # check the batch before loading a model
        i, n = batch.parse_shard(args.shard)
        items = batch.shard(batch.batch_items(args.volume), i, n)
    if args.project is not None:
        check_project(args.project)
    options = {"threshold": args.threshold, "batch_size": args.batch_size}
    if args.layers is not None:
        options["layers_checkpoint"] = checked_layers(args.layers, args.method)
    if args.flip is not None:
        if args.method != "student":
            raise CliError(f"--flip/--no-flip is for --method student; --method {args.method} has no flip averaging")
        options["flip"] = args.flip
    if args.method == "hrf":
        options.update(sam2_checkpoint=args.sam2_checkpoint, sam2_config=args.sam2_config,
                       iterations=args.iterations, crop_size=args.crop_size, box_size=args.box_size,
                       sam2_cache=None if args.project is None else args.project / EMBEDDINGS_DIR)
    proposer = load_proposer(args.method, args.checkpoint, device=args.device, **options)  # checks --layers too
    warn = phantom_warner(args.checkpoint)
    if not many:
        _one(proposer, args, args.volume, args.out, verbose=True, warn=warn)
        return
    print(f"batch: {len(items)} volumes in shard {i}/{n} -> {args.out}", file=sys.stderr)
    summary = batch.run_batch(items, args.out,
                              lambda path, out: _one(proposer, args, path, out, verbose=False, warn=warn),
                              log=lambda m: print(m, file=sys.stderr))
    batch.report(summary)
    failures = batch.write_failures(args.out, summary["failed"], i, n)
    if failures is not None:
        raise CliError(f"{len(summary['failed'])} volumes failed (listed in {failures}); rerun to retry them")


def checked_layers(path: Path, method: str) -> Path:
    """``--layers``: only for the methods that run a layer model, and a file that exists."""
    from oct_wsss.propose.registry import LAYER_USERS

    if method not in LAYER_USERS:
        raise CliError(f"--layers is for --method {' or '.join(LAYER_USERS)} (the layer model behind their retina "
                       f"filter); --method {method} does not use it" + (": give the layer checkpoint as --checkpoint"
                                                                         if method == "layers" else ""))
    if not path.is_file():
        raise CliError(f"--layers {path}: no such file")
    return path


def phantom_warner(checkpoint: Path) -> Callable[[OctVolume], None]:
    """A check to call on each volume read: the first real scan a phantom-only ``checkpoint`` meets gets the warning
    on stderr, once per run (``propose.domain.phantom_warning``)."""
    said = False

    def warn(volume: OctVolume) -> None:
        from oct_wsss.propose.domain import phantom_warning

        nonlocal said
        message = None if said else phantom_warning(checkpoint, real_scan=not volume.is_phantom)
        if message is not None:
            said = True
            print(f"warning: {message}", file=sys.stderr)

    return warn


def _one(proposer: object, args: argparse.Namespace, path: Path, out: Path, *, verbose: bool,
         warn: Callable[[OctVolume], None]) -> dict:
    """Propose one volume into ``out``; returns its B-scan count and seconds."""
    from oct_wsss.io import read_volume
    from oct_wsss.propose import ProposalCancelled, propose
    from oct_wsss.propose.proposal import scratch_labels
    from oct_wsss.propose.registry import write_proposal

    volume = read_volume(path)
    warn(volume)
    bscans = parse_bscans(args.bscans, volume.n_bscans)
    accepted = accepted_in(args.project, volume) if args.project is not None else {}

    def progress(done: int, total: int) -> None:
        print(f"\rproposing: {done}/{total} B-scans", end="" if done < total else "\n", file=sys.stderr, flush=True)

    with scratch_labels(volume.shape, out) as labels:  # labels of a large volume are not held in memory
        try:
            result = propose(volume, proposer=proposer, bscans=bscans, progress=progress if verbose else None,
                             keep_scores=args.keep_scores, labels=labels, accepted=accepted)
        except ProposalCancelled as err:
            raise CliError(str(err)) from err
        files = write_proposal(result, out)
    timing = result.provenance["timings"]
    if verbose:
        if accepted:
            print(f"kept {len(accepted)} accepted B-scans from {args.project}")
        print(f"proposed {int(result.done.sum())} B-scans in {timing['total_s']:.1f} s "
              f"({timing['per_bscan_s']:.2f} s per B-scan) on {result.provenance['device']}")
        for file in files.values():
            print(f"wrote {file}")
    return {"bscans": int(result.done.sum()), "seconds": timing["total_s"]}


def check_project(project: Path) -> None:
    """Refuse a folder that is not a grader's project (an existing correction store), before anything is written."""
    from oct_wsss.store import StoreError
    from oct_wsss.store.store import DB_FILE

    if not (project / DB_FILE).is_file():
        raise StoreError(f"{project} is not a project folder (no {DB_FILE}); open it in Review first")


def project_store(project: Path, volume: object) -> tuple[Any, str]:
    """The grader's store in ``project`` (checked by :func:`check_project`) and ``volume``'s id in it."""
    from oct_wsss.store import CorrectionStore

    store = CorrectionStore(project)
    return store, store.volume_id(volume)


def accepted_in(project: Path, volume: object) -> dict:
    """B-scan -> accepted mask of ``volume`` in the grader's project (checked by :func:`check_project`)."""
    store, volume_id = project_store(project, volume)
    return store.accepted_masks(volume_id)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("propose", help="propose lesion labels for a volume; writes labels.tif and provenance.json")
    p.add_argument("volume", type=Path, help="OCT file or B-scan folder (anything `oct-wsss read` opens); or a "
                   "folder of volumes or a CSV manifest (column path, optional id): one OUT/<id>/ per volume, "
                   "volumes already done are skipped")
    p.add_argument("--method", required=True, choices=("agm", "student", "dfp", "hrf", "layers"),
                   help="proposal method (layers: lesions from the retinal layer model, docs/results-real.md)")
    p.add_argument("--checkpoint", required=True, type=Path, help="the method's .safetensors checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--shard", help="batch only: propose shard i of n (every n-th volume from i; i = 0..n-1), e.g. "
                   "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--bscans", help="B-scans to propose: 5, 0-9, 0-9,20 or all (default all)")
    p.add_argument("--threshold", type=float, help="background threshold τ in [0, 1] (default: the checkpoint's)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, help="student only: average each B-scan's "
                   "softmax with its mirror image's (twice the compute; default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, help="B-scans per batch (default 8 on CUDA, 2 on CPU)")
    p.add_argument("--layers", type=Path, help="layer checkpoint for --method agm or student where the checkpoint "
                   "keeps lesions inside the retina or harmonises with it (default: the bundled layers.safetensors)")
    p.add_argument("--project", type=Path, help="a grader's project folder: B-scans accepted there are not proposed "
                                                "over; labels.tif keeps their accepted masks; with --method hrf and "
                                                "--sam2-checkpoint, SAM 2 embeddings are kept in its sam2-embeddings")
    hrf = p.add_argument_group("hrf", "options of --method hrf (docs/hrf.md)")
    hrf.add_argument("--sam2-checkpoint", type=Path, help="SAM 2 checkpoint (.pt); without it a classical step")
    hrf.add_argument("--sam2-config", help="packaged SAM 2 config name (default sam2.1_hiera_t)")
    hrf.add_argument("--iterations", type=int, help="most foci per B-scan, i.e. classifier reruns (default 6)")
    hrf.add_argument("--crop-size", type=int, help="crop side around the relevance peak, px (default 72)")
    hrf.add_argument("--box-size", type=int, help="box prompt side at native scale, px (default 4)")
    p.add_argument("--keep-scores", action="store_true",
                   help="also write scores.npy: per-class score maps (soft labels a student can train on)")
    p.set_defaults(func=_propose)
