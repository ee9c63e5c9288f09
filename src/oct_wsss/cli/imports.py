"""The ``import`` subcommand: an existing segmentation (labels.tif, mask folder, .npy, .eye) checked against its
volume and written as a proposal folder (``labels.tif`` + ``provenance.json``, method "imported"), the files
``propose --out`` writes, so ``propagate``, ``evaluate``, ``export`` and the napari plugin take it like a proposal.

A subcommand of its own rather than ``propose --import``: none of propose's options (method, checkpoint, device,
threshold) applies to an import, and propose refuses to run without a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from oct_wsss.classes import ONTOLOGY
from oct_wsss.cli._common import CliError, write_labels_and_provenance


def _import(args: argparse.Namespace) -> None:
    from oct_wsss.io import read_volume
    from oct_wsss.io.segmentation import imported_provenance, read_segmentation

    volume = read_volume(args.volume)
    labels = read_segmentation(args.labels, volume.shape)  # SegmentationError (an OctReadError): one line, exit 2
    out = args.out / "labels.tif"
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; choose another --out or pass --force to replace it")
    provenance = {**imported_provenance(args.labels), "source_tool": "cli",
                  "volume": {"shape": list(volume.shape), "spacing_mm": list(volume.spacing_mm),
                             "format": volume.source.get("format")}}
    files = write_labels_and_provenance(args.out, labels, tuple(volume.spacing_mm), provenance)
    present = ", ".join(ONTOLOGY[int(c)].key for c in np.unique(labels) if c) or "none"
    print(f"imported {labels.shape[0]} B-scans (classes present: {present})")
    for file in files:
        print(f"wrote {file}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("import", help="check an existing segmentation against its volume and write it as a proposal "
                       "(labels.tif + provenance.json)")
    p.add_argument("volume", type=Path, help="OCT file or B-scan folder (anything `oct-wsss read` opens)")
    p.add_argument("--labels", required=True, type=Path,
                   help="labels.tif, a folder of mask images, a .npy label array or an eyepy .eye file (ontology ids)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--force", action="store_true", help="replace an existing OUT/labels.tif")
    p.set_defaults(func=_import)
