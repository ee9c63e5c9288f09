"""Fetch the eyesegpy wheel (once) and convert its three Keras layer networks to safetensors + JSON.

    python scripts/convert_eyesegpy.py [--dir DIR] [--wheel WHEEL]

``--setup`` (what ``scripts/setup.sh`` passes) turns a failure into a message saying how to convert later and exit
status 0, so an offline set-up still completes. ``--dir`` defaults to ``$OCT_WSSS_EYESEGPY_DIR`` or
``~/.cache/oct-wsss/eyesegpy``; ``--wheel`` converts a wheel
already on disk instead of asking pip. Safe to rerun: a present wheel with the right SHA-256 is not fetched again
and converting again rewrites the same files. Exits 1 with a one-line reason (e.g. offline) and writes nothing then.
Run by ``scripts/setup.sh``; see ``oct_wsss.io.eyesegpy``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Fetch and convert; 0 on success, 1 with a message on stderr otherwise."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from oct_wsss.io.eyesegpy import EyesegpyError, convert, default_dir, fetch_wheel

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="output folder (default: %(default)s -> cache)")
    parser.add_argument("--wheel", type=Path, default=None, help="a downloaded eyesegpy-1.0.2 wheel")
    parser.add_argument("--setup", action="store_true",
                        help="set-up mode: on failure say how to do it later and exit 0 (set-up goes on)")
    args = parser.parse_args(argv)
    folder = args.dir or default_dir()
    try:
        wheel = args.wheel or fetch_wheel(folder)
        written = convert(wheel, folder)
    except EyesegpyError as err:
        print(f"convert_eyesegpy: {err}", file=sys.stderr)
        if args.setup:
            print("setup: the eyesegpy layer networks were not converted (optional; `oct-wsss layers --source "
                  "eyesegpy` needs them); when online, run: .venv/bin/python scripts/convert_eyesegpy.py")
            return 0
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
