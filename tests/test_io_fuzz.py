"""Readers under bad input: property-based fuzzing of every reader (docs/reliability.md, "Readers under bad input").

From a valid seed of each format (the real Spectralis .vol, files from ``io_builders``), hypothesis applies random
truncation, bit flips, byte overwrites, random bytes over the header and huge values in header fields. Every
read runs in a worker process (``tests/fuzz/oct_fuzz_harness.py``) under a per-input time limit and an
address-space limit; the outcome must be a valid OctVolume (3-D, uint8/float32, finite voxels and spacing) or an
OctReadError with a reader-specific reason — never another exception, a MemoryError (an allocation the header
asked for), a crash or a hang. Derandomized, no example database: a failure reproduces on every run.

Quick by default (``OCT_FUZZ_SCALE`` multiplies the examples); ``-m slow`` runs 10x as many.
Set ``OCT_FUZZ_REPORT=path.json`` to write the counts per format.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import oct_fuzz_harness as fh

SCALE = float(os.environ.get("OCT_FUZZ_SCALE", "1"))
#: Examples per format in the quick run, shared between that format's seeds.
PER_FORMAT = 60
SEED_EXAMPLES = {"zeiss": 12,  # a 40 MB headerless file: few examples (any flip still gives a volume)
                 "mat": 20}  # each parse runs in a spawned child (about 1 s)
SEED_NAMES = ["vol-real", "vol-built", "e2e", "fds", "fda", "fda-jpeg", "bioptigen", "dicom-8", "dicom-16", "zeiss",
              "tiff", "tiff-imagej", "npy", "npy-sidecar", "npy-u16", "npz", "image-png", "image-jpg", "image-bmp",
              "mat", "heyex-xml", "heyex-xml-bscan", "retouch-mhd", "retouch-raw", "image-folder-png",
              "image-folder-json"]

#: Seeds whose quick fuzz run still crashes the worker (open bugs, see docs/reliability.md); -m slow runs them.

COUNTS: dict[str, Counter] = defaultdict(Counter)
FAILURES: list[str] = []


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, fh.Seed]:
    return fh.build_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.fixture(scope="module")
def worker(seeds: dict[str, fh.Seed]):
    w = fh.ReadWorker(warm=[s.read_path for s in seeds.values() if s.name != "zeiss"])
    yield w
    w.close()
    report = os.environ.get("OCT_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({
            "time_limit_s": w.time_limit, "memory_limit_bytes": w.limit_bytes, "worker_restarts": w.restarts,
            "counts": {k: dict(v) for k, v in sorted(COUNTS.items())}, "failures": FAILURES[:200]}, indent=1))


def ops_for(seed: fh.Seed) -> st.SearchStrategy:
    size = len(seed.data)
    anywhere = st.integers(0, max(size - 1, 0))
    pos = st.one_of(st.integers(0, min(size - 1, 1024)), anywhere)  # header bytes half of the time
    op = [
        st.tuples(st.just("truncate"), st.integers(0, size)),
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("overwrite"), pos, st.binary(min_size=1, max_size=8)),
        st.builds(lambda n, r: ("garbage", __import__("random").Random(r).randbytes(n)),
                  st.integers(1, max(1, min(size, 4096))), st.integers(0, 2**32)),
    ]
    if seed.fields:
        op.append(st.builds(lambda f, v: ("huge", f[0], f[1], v), st.sampled_from(seed.fields),
                            st.sampled_from(fh.HUGE_VALUES)))
    return st.lists(st.one_of(*op), min_size=1, max_size=3)


def write_mutated(seed: fh.Seed, data: bytes) -> None:
    seed.target.write_bytes(data)


def run_case(seed: fh.Seed, worker: fh.ReadWorker, ops: list) -> fh.Outcome:
    write_mutated(seed, fh.mutate(seed.data, ops))
    try:
        out = worker.read(seed.read_path)
    finally:
        write_mutated(seed, seed.data)
    COUNTS[seed.fmt]["inputs"] += 1
    COUNTS[seed.fmt][out.kind] += 1
    COUNTS[seed.fmt]["max_ms"] = max(COUNTS[seed.fmt]["max_ms"], round(out.seconds * 1000))
    if out.generic:
        COUNTS[seed.fmt]["generic_error"] += 1
    if not out.ok or out.generic:
        FAILURES.append(f"{seed.name} {ops!r}: {out.kind} {out.detail}")
    return out


def _examples(name: str, slow: bool) -> int:
    n_same = sum(1 for s in SEED_NAMES if s.split("-")[0] == name.split("-")[0])
    base = SEED_EXAMPLES.get(name, max(40, PER_FORMAT // n_same))
    return max(1, int(base * SCALE * (10 if slow else 1)))


def _check(seed: fh.Seed, worker: fh.ReadWorker, ops: list) -> None:
    out = run_case(seed, worker, ops)
    assert out.ok, f"{seed.name}: {out.kind}: {out.detail} (ops {ops!r})"
    assert not out.generic, f"{seed.name}: no reader-specific reason: {out.detail} (ops {ops!r})"


def _fuzz_test(seed: fh.Seed, worker: fh.ReadWorker, slow: bool):
    # seed and worker come in by closure, not as arguments: hypothesis prints a failing test's arguments in full
    @settings(max_examples=_examples(seed.name, slow), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(data=st.data())
    def inner(data):
        _check(seed, worker, data.draw(ops_for(seed), label="ops"))

    return inner


@pytest.mark.parametrize("name", SEED_NAMES)
def test_reader_under_bad_input(name: str, seeds, worker) -> None:
    if name not in seeds:
        pytest.skip(f"seed {name} not available (the real .vol is read from ../shared/data)")
    _fuzz_test(seeds[name], worker, slow=False)()


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_NAMES)
def test_reader_under_bad_input_long(name: str, seeds, worker) -> None:
    if name not in seeds:
        pytest.skip(f"seed {name} not available")
    _fuzz_test(seeds[name], worker, slow=True)()


def test_seeds_are_valid_volumes(seeds, worker) -> None:
    for seed in seeds.values():
        out = worker.read(seed.read_path)
        assert out.kind == "volume", f"{seed.name}: {out.kind} {out.detail}"


@pytest.fixture(scope="module")
def tight_worker(seeds: dict[str, fh.Seed]):
    """A worker allowed only 384 MiB more address space: seeds are < 3 MB, so reading one never needs that much,
    and a reader that believes a huge header field and allocates for it fails with MemoryError."""
    w = fh.ReadWorker(warm=[s.read_path for s in seeds.values() if s.name != "zeiss"], headroom=384 * 2**20)
    yield w
    w.close()


def test_huge_header_fields_refused_before_allocating(seeds, tight_worker) -> None:
    """Every dimension-like header field of every seed (the first 6 per seed) set to 10^9, 10^6, 2^31-1, 2^32-1, 65535
    and 0 in turn: a volume or an OctReadError, and never a MemoryError under the tight limit."""
    bad = []
    for seed in seeds.values():
        for offset, enc in seed.fields[:6]:
            for value in fh.HUGE_VALUES:
                ops = [("huge", offset, enc, value)]
                out = run_case(seed, tight_worker, ops)
                if not out.ok or out.generic:
                    bad.append(f"{seed.name} {ops}: {out.kind} {out.detail[:200]}")
    assert not bad, "\n".join(bad)


def test_worker_catches_hangs_and_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a reader that never returns is reported as a timeout, one that asks for 10^12 bytes
    as an allocation failure, and the worker recovers (readers patched before the worker process forks)."""
    import time

    import numpy as np

    from oct_wsss.io import arrays

    def hang(path):
        time.sleep(3600)

    def greedy(path):
        return np.ones(10**12, np.uint8)

    ok = tmp_path / "ok.npy"
    np.save(ok, np.zeros((2, 3, 4), np.uint8))
    monkeypatch.setattr(arrays, "read_npy", hang)
    monkeypatch.setattr(arrays, "read_npz", greedy)
    (tmp_path / "x.npz").write_bytes(b"x")
    w = fh.ReadWorker(time_limit=1.0, start_method="fork")  # fork: the child keeps the patched readers
    try:
        assert w.read(ok).kind == "timeout"
        assert w.read(tmp_path / "x.npz").kind == "memory"
        monkeypatch.undo()
        w.close()
        w = fh.ReadWorker()
        assert w.read(ok).kind == "volume"
    finally:
        w.close()
