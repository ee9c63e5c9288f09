"""The ``oct-wsss`` command line: every action the widgets offer, scriptable.

Each subcommand lives in a small module with a ``register(sub)``; each exits non-zero with a one-line reason on
bad input and never prints PHI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from oct_wsss.cli import bench, data, demo, imports, layers, propagate, propose, train
from oct_wsss.cli._common import CliError, parse_bscans
from oct_wsss.cli.demo import populate_demo

__all__ = ["CliError", "build_parser", "main", "parse_bscans", "populate_demo"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so tests and docs can list the subcommands)."""
    parser = argparse.ArgumentParser(prog="oct-wsss", description="Weakly supervised lesion proposals for retinal OCT.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, train, propose, imports, layers, propagate, bench, demo):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``oct-wsss`` console script."""
    from oct_wsss.checkpoint import CheckpointError
    from oct_wsss.io import OctReadError
    from oct_wsss.propose.proposal import ProposalError
    from oct_wsss.store import StoreError
    from oct_wsss.training.errors import TrainingError

    args = build_parser().parse_args(argv)
    user_errors = (CliError, OctReadError, CheckpointError, ProposalError, TrainingError, StoreError, FileExistsError,
                   FileNotFoundError, PermissionError, OSError)  # OSError: e.g. a read-only or full disk
    try:
        args.func(args)
    except user_errors as err:
        if isinstance(err, OSError) and err.filename and err.strerror:  # "[Errno 1] ...: '/x'" -> "/x: ..."
            err = f"{err.filename}: {err.strerror}"
        print(f"oct-wsss {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oct-wsss {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
