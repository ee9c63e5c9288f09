"""atheris fuzz target for every file reader: ``read_volume`` must return an OctVolume or raise OctReadError.

The first input byte picks the format (suffix), the rest is the file. Needs the optional ``fuzz`` extra (atheris).

    python tests/fuzz/fuzz_readers.py --make-corpus corpus/       # valid seeds of every format, one per file
    python tests/fuzz/fuzz_readers.py corpus/ -max_total_time=300 -timeout=10 -rss_limit_mb=3072
    OCT_FUZZ_SUFFIX=.vol python tests/fuzz/fuzz_readers.py corpus/ ...   # one format: all bytes are the file
    OCT_FUZZ_SEED=retouch-mhd python tests/fuzz/fuzz_readers.py corpus/ ...  # one seed of oct_fuzz_harness, in its
                                          # folder (sidecars, RETOUCH, image folders); an empty corpus gets the seed

A hang is a libFuzzer timeout (``-timeout``), an unbounded allocation an ``-rss_limit_mb``/``-malloc_limit_mb`` crash,
any exception other than OctReadError (or one with only read_volume's catch-all reason) an uncaught-exception crash;
crashing inputs are written by libFuzzer.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

SUFFIXES = (".vol", ".e2e", ".fds", ".fda", ".OCT", ".dcm", ".tif", ".npy", ".npz", ".png", ".jpg", ".bmp", ".mat",
            ".xml", ".img")
FIXED = os.environ.get("OCT_FUZZ_SUFFIX")
SEED = os.environ.get("OCT_FUZZ_SEED")
_DIR = Path(tempfile.mkdtemp(prefix="oct-fuzz-"))
_TARGET: list[Path] = []  # seed mode: [file the input replaces, path read_volume is given]


def split(data: bytes) -> tuple[str, bytes]:
    if FIXED:
        return FIXED, data
    if not data:
        return SUFFIXES[0], b""
    return SUFFIXES[data[0] % len(SUFFIXES)], data[1:]


def test_one_input(data: bytes) -> None:
    if _TARGET:
        _TARGET[0].write_bytes(data)
        path = _TARGET[1]
    else:
        suffix, body = split(data)
        path = _DIR / f"input{suffix}"
        path.write_bytes(body)
    kind, detail, generic = _harness().classify(str(path))
    if kind not in ("volume", "error") or generic:  # same rule as the hypothesis tests
        raise AssertionError(f"{kind}{' (no reader-specific reason)' if generic else ''}: {detail}")


def _harness():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import oct_fuzz_harness as fh

    return fh


def make_corpus(folder: Path) -> None:
    fh = _harness()
    folder.mkdir(parents=True, exist_ok=True)
    seeds = fh.build_seeds(Path(tempfile.mkdtemp()), include_zeiss=False)
    for seed in seeds.values():
        if seed.target != seed.read_path or seed.target.suffix not in SUFFIXES:
            continue  # folder formats (RETOUCH, image folders, sidecars) need more than one file
        prefix = b"" if FIXED else bytes([SUFFIXES.index(seed.target.suffix)])
        if FIXED and seed.target.suffix.lower() != FIXED.lower():
            continue
        (folder / seed.name).write_bytes(prefix + seed.data)


def build_seed(name: str, folder: Path) -> None:
    """Write the harness's seed ``name`` under ``folder``; print the file to mutate and the path to read."""
    seeds = _harness().build_seeds(folder, include_zeiss=name == "zeiss")
    if name not in seeds:
        raise SystemExit(f"no seed {name!r}; seeds: {', '.join(seeds)}")
    print(seeds[name].target, seeds[name].read_path, sep="\n")


def use_seed(name: str, corpus: Path | None) -> None:
    """Seed mode: the seed is built in a child (so the readers are first imported under instrumentation here)."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--build-seed", name, str(_DIR / "seeds")], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    _TARGET[:] = [Path(out[-2]), Path(out[-1])]
    if corpus is not None and corpus.is_dir() and not any(corpus.iterdir()):
        (corpus / name).write_bytes(_TARGET[0].read_bytes())


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
        return
    if len(sys.argv) > 3 and sys.argv[1] == "--build-seed":
        build_seed(sys.argv[2], Path(sys.argv[3]))
        return
    if SEED:
        use_seed(SEED, next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None))
    import atheris

    with atheris.instrument_imports(include=["oct_wsss", "eyepy", "oct_converter", "construct", "pydicom",
                                             "tifffile", "numpy.lib.format"]):
        import oct_wsss.io  # noqa: F401
        from oct_wsss.io import arrays, dicom, duke_mat, folder, heyex, limits, normalise, vendor  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
