"""The ``layers`` subcommand: retinal layer bands, boundaries and ETDRS thickness of one volume.

Writes ``layers.tif`` (uint8 band ids, Duke/ReLayNet convention, one page per B-scan at native size),
``boundaries.csv`` (``bscan,ascan,boundary,y_px``), ``thickness.csv`` (ILM -> BM thickness in µm per ETDRS sector,
only when the volume has a physical scale) and ``provenance.json``. With ``--source eyesegpy`` the BM and RPE lines
come from the converted eyesegpy network (``oct_wsss.propose.layers_eyeseg``), the other boundaries from the bundled
checkpoint; without the converted weights it stops, saying how to make them, before anything is written. Everything
is computed before the first file is written and each file is written atomically, so bad input leaves nothing
half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from oct_wsss.cli._common import CliError


def _layers(args: argparse.Namespace) -> None:
    import csv
    import io
    import json

    import numpy as np
    import tifffile

    from oct_wsss.io import OctReadError, atomic_write, read_volume
    from oct_wsss.propose.layers import (
        BOUNDARIES,
        ETDRS,
        LayerError,
        LayerModel,
        etdrs_sectors,
        etdrs_table,
        fovea_from_thickness,
        has_physical_scale,
        thickness_map_um,
    )
    from oct_wsss.weights import layers_checkpoint

    if not args.volume.exists():
        raise OctReadError(args.volume, "no such file or folder")
    checkpoint = args.checkpoint or layers_checkpoint()
    if checkpoint is None:
        raise CliError("no layer checkpoint is bundled in this install; pass --checkpoint "
                       "(training/layers_train.py makes one)")
    if args.source == "eyesegpy":
        from oct_wsss.propose.layers_eyeseg import missing

        absent = missing(args.eyesegpy_dir)
        if absent:  # before the bundled model runs: nothing to wait for, nothing written
            raise CliError(absent)
    volume = read_volume(args.volume)
    try:
        model = LayerModel(checkpoint, device=args.device)

        def progress(done: int, total: int) -> None:
            print(f"\rlayers: {done}/{total} B-scans", end="" if done < total else "\n", file=sys.stderr, flush=True)

        result = model.segment(volume.data, progress=progress)
        if args.source == "eyesegpy":
            result = _eyesegpy(args, volume, result)
    except LayerError as err:
        raise CliError(str(err)) from err

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["bscan", "ascan", "boundary", "y_px"])
    n, _, w = result.bands.shape
    for i in range(n):
        for k, name in enumerate(BOUNDARIES):
            for x, y in enumerate(result.boundaries[i, k]):
                writer.writerow([i, x, name, "" if not np.isfinite(y) else f"{y:.1f}"])
    boundaries_text = buf.getvalue()

    thickness_text, note = None, None
    prov = dict(result.provenance)
    prov["volume"] = {"shape": list(volume.shape), "spacing_mm": list(volume.spacing_mm),
                      "laterality": volume.laterality, "format": volume.source.get("format"),
                      "spacing_source": volume.meta.get("spacing_source", "given")}
    prov["y_px"] = ("band boundaries: first row (0 = top) of the band below the boundary; RPE: row of the RPE's "
                    "brightest line inside OS+RPE")
    if has_physical_scale(volume):
        thick = thickness_map_um(result.boundaries, volume.spacing_mm)
        centre = fovea_from_thickness(thick, volume.spacing_mm)
        sectors = etdrs_sectors(thick.shape, volume.spacing_mm, centre, volume.laterality)
        rows = etdrs_table(thick, sectors)
        tb = io.StringIO()
        tw = csv.DictWriter(tb, fieldnames=list(rows[0]), lineterminator="\n")
        tw.writeheader()
        tw.writerows(rows)
        thickness_text = tb.getvalue()
        prov["etdrs"] = {"centre_bscan": centre[0], "centre_ascan": centre[1], "sectors": list(ETDRS),
                         "centre_from": "foveal pit of the ILM-BM thickness map: deepest below its 0.6-1.2 mm rim",
                         "orientation": "B-scan 0 inferior (Heidelberg order); nasal towards higher A-scans for OD",
                         "laterality_assumed": volume.laterality is None}
    else:
        note = ("thickness.csv not written: the volume has no physical scale (its reader fell back to a default "
                "spacing); open a file that records its pixel spacing (e.g. .vol, .e2e, Heyex XML) for thickness")
        prov["thickness"] = note

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    desc = json.dumps({"bands": {"0": "above_ILM", "1": "NFL", "2": "GCL_IPL", "3": "INL", "4": "OPL", "5": "ONL_ISM",
                                 "6": "ISE", "7": "OS_RPE", "8": "below_BM", "9": "fluid"},
                       "spacing_mm": list(volume.spacing_mm)})
    atomic_write(out / "layers.tif", lambda tmp: tifffile.imwrite(tmp, result.bands, photometric="minisblack",
                                                                   compression="zlib", description=desc,
                                                                   metadata=None))
    files = [out / "layers.tif"]
    atomic_write(out / "boundaries.csv", lambda tmp: Path(tmp).write_text(boundaries_text))
    files.append(out / "boundaries.csv")
    if thickness_text is not None:
        atomic_write(out / "thickness.csv", lambda tmp: Path(tmp).write_text(thickness_text))
        files.append(out / "thickness.csv")
    elif (out / "thickness.csv").exists():
        (out / "thickness.csv").unlink()  # a stale file from an earlier run must not pass for this volume's
    atomic_write(out / "provenance.json", lambda tmp: Path(tmp).write_text(json.dumps(prov, indent=2)))
    files.append(out / "provenance.json")
    t = result.provenance["timings"]
    print(f"segmented {n} B-scans ({w} A-scans each) in {t['total_s']:.1f} s on {result.provenance['device']}")
    if note:
        print(note)
    for f in files:
        print(f"wrote {f}")


def _eyesegpy(args: argparse.Namespace, volume: Any, result: Any) -> Any:
    """The bundled result with the chosen boundaries from the converted eyesegpy networks (CliError when absent)."""
    from oct_wsss.io.eyesegpy import EyesegpyError
    from oct_wsss.propose.layers_eyeseg import CHOICE, scale_x_mm, with_eyesegpy

    print(f"layers: {', '.join(CHOICE)} from eyesegpy ({', '.join(sorted(set(CHOICE.values())))})", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        print(f"\reyesegpy: {done}/{total} B-scans", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        return with_eyesegpy(result, volume.data, scale_x_mm(volume), args.eyesegpy_dir, device=args.device,
                             progress=progress)
    except EyesegpyError as err:
        raise CliError(str(err)) from err


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("layers", help="retinal layer bands, boundaries and ETDRS thickness of a volume")
    p.add_argument("volume", type=Path, help="OCT file or B-scan folder (anything `oct-wsss read` opens)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--checkpoint", type=Path, help="layer checkpoint (.safetensors; default: the bundled one)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--source", choices=("bundled", "eyesegpy"), default="bundled",
                   help="bundled: every boundary from the layer checkpoint; eyesegpy: BM and RPE from the Bonn group's "
                        "eyesegpy network (MIT; converted at set-up by scripts/convert_eyesegpy.py), the rest bundled")
    p.add_argument("--eyesegpy-dir", type=Path, default=None,
                   help="folder of the converted eyesegpy networks (default: ~/.cache/oct-wsss/eyesegpy)")
    p.set_defaults(func=_layers)
