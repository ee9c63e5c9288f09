"""Corrections are never lost: writers SIGKILLed at random moments, two writers at once, and a full disk.

Every accept a writer acknowledged (it writes an ack only after ``accept`` returned) must be in the store afterwards,
bit for bit (the mask's own hash and the file's checksum); no row may point at a missing or half-written file; the
store must open; files under final names must be complete. ``OCT_RELIABILITY_REPORT=FILE`` writes the counts as JSON
(docs/reliability.md quotes them).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import report

from oct_wsss.store import ACCEPTED, CorrectionStore, StoreError
from oct_wsss.store import store as store_module

SIDE = 32
_FORK = multiprocessing.get_context("fork")


def _mask_sha(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask, np.uint8).tobytes()).hexdigest()


def _writer(root: str, volume: str, seed: int, fd: int, limit: int) -> None:
    """Accept (and now and then reject) random masks forever, or ``limit`` times; ack each one after it returns."""
    rng = np.random.default_rng(seed)
    store = CorrectionStore(root)
    os.write(fd, b"ready\n")
    n = 0
    while limit <= 0 or n < limit:
        bscan = int(rng.integers(0, 6))  # few B-scans: re-accepts add versions
        if rng.random() < 0.15:
            c = store.reject(volume, bscan)
            os.write(fd, f"R {volume} {bscan} {c.version} -\n".encode())
        else:
            mask = rng.integers(0, 8, (SIDE, SIDE), dtype=np.uint8)
            image = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
            c = store.accept(volume, bscan, mask, image=image, proposal=np.zeros_like(mask), grader="w")
            os.write(fd, f"A {volume} {bscan} {c.version} {_mask_sha(mask)}\n".encode())
        n += 1


def _child(root: str, volume: str, seed: int, fd: int, limit: int) -> None:
    code = 0
    try:
        _writer(root, volume, seed, fd, limit)
    except BaseException as err:  # report anything to the parent through the exit status
        os.write(fd, f"E {type(err).__name__}: {err}\n".encode())
        code = 3
    os._exit(code)


def _start(root: Path, volume: str, seed: int, limit: int = 0) -> tuple[multiprocessing.Process, int]:
    read, write = os.pipe()
    proc = _FORK.Process(target=_child, args=(str(root), volume, seed, write, limit), daemon=True)
    proc.start()
    os.close(write)
    return proc, read


def _drain(fd: int) -> list[list[str]]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return [line.split() for line in b"".join(chunks).decode().splitlines() if line.strip()]


def _rows(root: Path) -> list[tuple]:
    con = sqlite3.connect(f"file:{root / 'corrections.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT volume, bscan, version, status, mask_file, sha256 FROM corrections").fetchall()
    finally:
        con.close()


def verify(root: Path, acks: list[list[str]]) -> dict[str, int]:
    """Check the store against the acknowledged decisions; returns counts (``lost`` must be 0)."""
    store = CorrectionStore(root)  # opens (recovers the WAL) after the crash
    rows = {(v, b, n): (s, f, sha) for v, b, n, s, f, sha in _rows(root)}
    referenced = set()
    for (volume, bscan, version), (status, rel, sha) in rows.items():
        if status == ACCEPTED:  # no half-written row: its file is there, complete, checksum as recorded
            data = (root / rel).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha, f"row {volume}/{bscan}/v{version}: checksum differs"
            referenced.add(rel)
    listed = {(c.volume, c.bscan): c for c in store.corrections(status=None)}
    lost = 0
    for kind, volume, bscan, version, mask_sha in acks:
        row = rows.get((volume, int(bscan), int(version)))
        if row is None or row[0] != (ACCEPTED if kind == "A" else "rejected"):
            lost += 1
            continue
        if kind == "A":
            kept = listed.get((volume, int(bscan)))
            mask = np.load(root / row[1])["mask"]
            if _mask_sha(mask) != mask_sha:
                lost += 1
            assert kept is not None and kept.version >= int(version)
    latest: dict[tuple[str, int], tuple[int, str]] = {}
    for (volume, bscan, version), (status, _, _) in rows.items():
        if version > latest.get((volume, bscan), (0, ""))[0]:
            latest[(volume, bscan)] = (version, status)
    for volume in {v for v, _ in latest}:
        assert store.status(volume) == {b: s for (v, b), (_, s) in latest.items() if v == volume}
    orphans = partials = 0
    for path in (root / "masks").rglob("*"):
        if not path.is_file():
            continue
        if path.name.startswith("."):
            partials += 1  # a temporary name; never read, replaced by the next accept of that version
            continue
        rel = path.relative_to(root).as_posix()
        if rel not in referenced:  # renamed into place, row not committed: must still be a complete file
            orphans += 1
            with np.load(path, allow_pickle=False) as npz:
                assert npz["mask"].shape == (SIDE, SIDE)
    return {"rows": len(rows), "acks": len(acks), "lost": lost, "orphans": orphans, "temp_files": partials}


def crash_runs(root: Path, runs: int, seed: int, min_kills: int = 0) -> dict[str, int]:
    """``runs`` rounds (more until ``min_kills`` SIGKILLs) of one or two writers on one store, each SIGKILLed after a
    random delay (or let finish)."""
    rng = random.Random(seed)
    totals = {"runs": 0, "kills": 0, "acks": 0, "lost": 0, "two_writer_runs": 0, "survivor_finished": 0}
    acks: list[list[str]] = []
    last: dict[str, int] = {}
    for run in itertools.count():
        if run >= runs and totals["kills"] >= min_kills:
            break
        totals["runs"] += 1
        if run % 10 == 0:
            root_run = root / f"store{run // 10}"  # a fresh store now and then: kills during its creation too
            acks = []
        two = rng.random() < 0.4
        totals["two_writer_runs"] += two
        # the second writer of a two-writer run may be left to finish: it must not hang on the dead one's lock
        plan = [(f"w{run}a", rng.uniform(0.0, 0.35), 0)]
        if two:
            plan.append((f"w{run}b", rng.uniform(0.05, 0.35), 0) if rng.random() < 0.5 else (f"w{run}b", None, 12))
        procs = [(_start(root_run, vol, rng.randrange(2**31), limit), delay) for vol, delay, limit in plan]
        t0 = time.monotonic()
        for (proc, _), delay in sorted(procs, key=lambda p: p[1] if p[1] is not None else 1e9):
            if delay is None:
                proc.join(timeout=60)
                assert proc.exitcode == 0, f"run {run}: the surviving writer failed ({proc.exitcode})"
                totals["survivor_finished"] += 1
                continue
            time.sleep(max(0.0, delay - (time.monotonic() - t0)))
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=30)
            totals["kills"] += 1
        for _proc, fd in (p for p, _ in procs):
            lines = _drain(fd)
            errors = [" ".join(line) for line in lines if line[0] == "E"]
            assert not errors, f"run {run}: a writer failed: {errors}"
            acks += [line for line in lines if line[0] in "AR"]
            totals["acks"] += sum(line[0] in "AR" for line in lines)
        last = verify(root_run, acks)
        assert last["lost"] == 0, f"run {run}: {last['lost']} acknowledged decisions lost"
    totals.update({k: v for k, v in last.items() if k in ("orphans", "temp_files")})
    return totals


def test_random_sigkills_lose_no_acknowledged_accept(tmp_path: Path) -> None:
    t0 = time.monotonic()
    totals = crash_runs(tmp_path, runs=30, seed=9)
    totals["seconds"] = round(time.monotonic() - t0, 1)
    report("crash_quick", totals)
    assert totals["lost"] == 0 and totals["acks"] > 30 and totals["kills"] >= 30


@pytest.mark.slow
def test_random_sigkills_long(tmp_path: Path) -> None:
    """300 runs, or as many as ``OCT_CRASH_KILLS`` SIGKILLs need (scripts/reliability_campaign.py: 1,000)."""
    t0 = time.monotonic()
    totals = crash_runs(tmp_path, runs=300, seed=2026, min_kills=int(os.environ.get("OCT_CRASH_KILLS", "0")))
    totals["seconds"] = round(time.monotonic() - t0, 1)
    report("crash_long", totals)
    assert totals["lost"] == 0


# --- disk full ---------------------------------------------------------------------------------------------------

def _enospc(what: str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), what)


class _FullFile:
    """A file whose writes stop with ENOSPC after ``budget`` bytes (a partial last write, as a full disk does)."""

    def __init__(self, f, budget: int) -> None:
        self._f, self._budget = f, budget

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._budget:
            self._f.write(data[: self._budget])
            self._budget = 0
            raise _enospc("write")
        self._budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def _inject(monkeypatch: pytest.MonkeyPatch, site: str, k: int) -> None:
    """Make the k-th call at ``site`` fail as a full disk does (sqlite: a page limit, so SQLITE_FULL for real)."""
    calls = {"n": 0}

    def nth() -> bool:
        calls["n"] += 1
        return calls["n"] >= k

    if site == "write":
        real_open = open
        monkeypatch.setattr(store_module, "open", lambda p, mode="r", *a, **kw: _FullFile(
            real_open(p, mode, *a, **kw), budget=100 if nth() else 1 << 40), raising=False)
    elif site in ("fsync", "replace"):
        real = getattr(os, site)

        def failing(*args):
            if nth():
                raise _enospc(site)
            return real(*args)

        monkeypatch.setattr(os, site, failing)
    elif site == "sqlite":
        real_connect = sqlite3.connect

        def connect(*args, **kwargs):
            con = real_connect(*args, **kwargs)
            if nth():
                pages = con.execute("PRAGMA page_count").fetchone()[0]
                con.execute(f"PRAGMA max_page_count = {pages}")
            return con

        monkeypatch.setattr(store_module.sqlite3, "connect", connect)


def disk_full_trials(root: Path, trials: int, seed: int) -> dict[str, int]:
    """Accept until an injected ENOSPC at a random site and call; check the refusal, the store, then accept again."""
    rng = random.Random(seed)
    figures = {"trials": trials, "refused": 0, "acks": 0, "lost": 0, "orphans": 0, "temp_files": 0}
    sites = ("write", "fsync", "replace", "sqlite")
    acks: list[list[str]] = []
    for trial in range(trials):
        if trial % 25 == 0:  # a fresh store now and then keeps each check's cost bounded
            store_dir, acks = root / f"store{trial // 25}", []
        site = sites[trial % len(sites)]
        figures[f"site_{site}"] = figures.get(f"site_{site}", 0) + 1
        with pytest.MonkeyPatch.context() as mp:
            store = CorrectionStore(store_dir)
            _inject(mp, site, rng.randint(1, 6))
            data = np.random.default_rng(trial)
            refused = None
            for _ in range(60):
                bscan = int(data.integers(0, 6))
                mask = data.integers(0, 8, (SIDE, SIDE), dtype=np.uint8)
                try:
                    c = store.accept(f"d{trial % 5}", bscan, mask, image=mask)
                except StoreError as err:
                    refused = str(err)
                    break
                acks.append(["A", c.volume, str(bscan), str(c.version), _mask_sha(mask)])
        assert refused is not None, f"trial {trial} ({site}): the injected failure never happened"
        assert "free disk space" in refused, refused
        figures["refused"] += 1
        figures["lost"] += verify(store_dir, acks)["lost"]  # the failed accept left the acked ones intact
        again = CorrectionStore(store_dir).accept("after", trial, np.ones((SIDE, SIDE), np.uint8))  # space is back
        acks.append(["A", "after", str(trial), str(again.version), _mask_sha(np.ones((SIDE, SIDE), np.uint8))])
        if trial % 25 == 24 or trial == trials - 1:
            counts = verify(store_dir, acks)
            figures["acks"] += len(acks)
            figures["lost"] += counts["lost"]
            figures["orphans"] += counts["orphans"]
            figures["temp_files"] += counts["temp_files"]
    return figures


def test_disk_full_never_loses_or_half_writes(tmp_path: Path) -> None:
    figures = disk_full_trials(tmp_path, trials=16, seed=7)
    report("disk_full_quick", figures)
    assert figures["lost"] == 0 and figures["refused"] == 16 and figures["temp_files"] == 0


@pytest.mark.slow
def test_disk_full_long(tmp_path: Path) -> None:
    figures = disk_full_trials(tmp_path, trials=200, seed=11)
    report("disk_full_long", figures)
    assert figures["lost"] == 0 and figures["temp_files"] == 0
