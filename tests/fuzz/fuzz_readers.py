"""atheris fuzz target for every file reader: ``read_volume`` must return an OctVolume or raise OctReadError.

The first input byte picks the format (suffix), the rest is the file. Needs the optional ``fuzz`` extra (atheris).

    python tests/fuzz/fuzz_readers.py --make-corpus corpus/       # valid seeds of every format, one per file
    python tests/fuzz/fuzz_readers.py corpus/ -max_total_time=300 -timeout=10 -rss_limit_mb=3072
    OCT_FUZZ_SUFFIX=.vol python tests/fuzz/fuzz_readers.py corpus/ ...   # one format: all bytes are the file

A hang is a libFuzzer timeout (``-timeout``), an unbounded allocation an ``-rss_limit_mb``/``-malloc_limit_mb`` crash,
any exception other than OctReadError an uncaught-exception crash; crashing inputs are written by libFuzzer.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

SUFFIXES = (".vol", ".e2e", ".fds", ".fda", ".OCT", ".dcm", ".tif", ".npy", ".npz", ".png", ".jpg", ".bmp", ".mat",
            ".xml", ".img")
FIXED = os.environ.get("OCT_FUZZ_SUFFIX")
_DIR = Path(tempfile.mkdtemp(prefix="oct-fuzz-"))


def split(data: bytes) -> tuple[str, bytes]:
    if FIXED:
        return FIXED, data
    if not data:
        return SUFFIXES[0], b""
    return SUFFIXES[data[0] % len(SUFFIXES)], data[1:]


def test_one_input(data: bytes) -> None:
    from oct_wsss.io import OctReadError, read_volume
    from oct_wsss.volume import OctVolume

    suffix, body = split(data)
    path = _DIR / f"input{suffix}"
    path.write_bytes(body)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            volume = read_volume(path)
    except OctReadError as exc:
        if any(isinstance(e, MemoryError) for e in (exc.__cause__, exc.__context__)):
            raise AssertionError(f"allocation the header asked for: {exc}") from exc
        return
    assert isinstance(volume, OctVolume) and volume.data.ndim == 3


def make_corpus(folder: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import oct_fuzz_harness as fh

    folder.mkdir(parents=True, exist_ok=True)
    seeds = fh.build_seeds(Path(tempfile.mkdtemp()), include_zeiss=False)
    for seed in seeds.values():
        if seed.target != seed.read_path or seed.target.suffix not in SUFFIXES:
            continue  # folder formats (RETOUCH, image folders, sidecars) need more than one file
        prefix = b"" if FIXED else bytes([SUFFIXES.index(seed.target.suffix)])
        if FIXED and seed.target.suffix.lower() != FIXED.lower():
            continue
        (folder / seed.name).write_bytes(prefix + seed.data)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
        return
    import atheris

    with atheris.instrument_imports(include=["oct_wsss", "eyepy", "oct_converter", "construct", "pydicom",
                                             "tifffile", "numpy.lib.format"]):
        import oct_wsss.io  # noqa: F401
        from oct_wsss.io import arrays, dicom, folder, heyex, limits, normalise, vendor  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
