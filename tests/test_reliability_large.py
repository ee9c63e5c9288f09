"""Large volumes: opened lazily (memory-mapped .npy / TIFF) and proposed with memory bounded by the batch.

The measurement runs in a child process that samples its own anonymous resident memory (``RssAnon`` in
/proc/self/status, every 2 ms) and reports the peak with ``VmHWM`` (peak RSS, which also counts the file-backed pages
of the mapped volume: the kernel's page cache, dropped under memory pressure). ``OCT_RELIABILITY_REPORT=FILE``
records the figures (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import tiny_student

from oct_wsss.io import read_volume, write_volume
from oct_wsss.propose import propose
from oct_wsss.propose.student import StudentProposer
from oct_wsss.volume import OctVolume

H, W = 496, 1024
REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, re, sys, threading, time
from contextlib import nullcontext
from pathlib import Path
import numpy as np
from oct_wsss.io import read_volume
from oct_wsss.propose import load_proposer, propose
from oct_wsss.propose.proposal import scratch_labels
from oct_wsss.propose.registry import write_proposal

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

path, ckpt, out, lazy = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "lazy"
proposer = load_proposer("student", ckpt, device="cpu", batch_size=2)
proposer.predict(np.zeros((64, 64), np.uint8))  # warm-up: allocator pools and kernels before the baseline
peak, done = [0], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], status("RssAnon"))
        time.sleep(0.002)
base = status("RssAnon")
thread = threading.Thread(target=sample, daemon=True)
thread.start()
t0 = time.perf_counter()
volume = read_volume(path)
with scratch_labels(volume.shape, out) if lazy else nullcontext() as labels:  # what `oct-wsss propose` does
    result = propose(volume, proposer=proposer, labels=labels)
    write_proposal(result, out)
seconds = time.perf_counter() - t0
done[0] = True
thread.join()
print(json.dumps({"n_bscans": volume.n_bscans, "lazy_volume": isinstance(volume.data, np.memmap) or
                  isinstance(getattr(volume.data, "base", None), np.memmap), "anon_base": base,
                  "anon_peak": peak[0], "anon_growth": peak[0] - base, "vm_hwm": status("VmHWM"),
                  "seconds": round(seconds, 1), "scratch_left": len(list(out.glob(".labels-*")))}))
"""


def _big_npy(path: Path, n: int) -> Path:
    """A uint8 (n, 496, 1024) .npy written page by page (never held in memory here either)."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, H, W))
    rng = np.random.default_rng(n)
    for i in range(n):
        arr[i] = rng.integers(0, 255, (H, W), dtype=np.uint8)
    arr.flush()
    del arr
    return path


def measure(tmp: Path, n: int, lazy: bool, ckpt: Path) -> dict:
    src = _big_npy(tmp / f"v{n}.npy", n) if not (tmp / f"v{n}.npy").exists() else tmp / f"v{n}.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(ckpt), str(tmp / f"out{n}{lazy}"),
                           "lazy" if lazy else "memory"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_49_vs_200_bscans(tmp_path: Path) -> None:
    ckpt = tiny_student(tmp_path / "s.safetensors", input_size=(128, 256))
    figures = {f"{n}_{'lazy' if lazy else 'in_memory_labels'}": measure(tmp_path, n, lazy, ckpt)
               for n in (49, 200) for lazy in (True, False)}
    volume_diff = (200 - 49) * H * W
    figures["volume_bytes_difference"] = volume_diff
    target = os.environ.get("OCT_RELIABILITY_REPORT")
    if target:
        data = json.loads(Path(target).read_text()) if Path(target).is_file() else {}
        data["large_volumes"] = figures
        Path(target).write_text(json.dumps(data, indent=2))
    assert figures["200_lazy"]["lazy_volume"] and figures["49_lazy"]["lazy_volume"]
    assert not any(f["scratch_left"] for f in figures.values() if isinstance(f, dict))
    growth = figures["200_lazy"]["anon_growth"] - figures["49_lazy"]["anon_growth"]
    assert growth < 0.3 * volume_diff, figures  # bounded by the batch, not by the volume (sampled peaks vary by ~15 MB)


def test_npy_and_tiff_volumes_open_lazily(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, (5, 40, 48), dtype=np.uint8)
    volume = OctVolume(data)
    for name in ("v.npy", "v.tif"):
        write_volume(volume, tmp_path / name)
        read = read_volume(tmp_path / name)
        assert isinstance(read.data, np.memmap) or isinstance(read.data.base, np.memmap), name
        np.testing.assert_array_equal(read.data, data)
        read.data[0, 0, 0] ^= 1  # copy-on-write: the file is never changed through the volume
        np.testing.assert_array_equal(read_volume(tmp_path / name).data, data)


def test_labels_can_be_written_into_a_memory_map(tmp_path: Path) -> None:
    proposer = StudentProposer.from_checkpoint(tiny_student(tmp_path / "s.safetensors"), device="cpu")
    volume = OctVolume(np.random.default_rng(1).integers(0, 255, (3, 40, 48), dtype=np.uint8))
    labels = np.lib.format.open_memmap(tmp_path / "labels.npy", mode="w+", dtype=np.uint8, shape=volume.shape)
    result = propose(volume, proposer=proposer, labels=labels)
    assert result.labels is labels
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), propose(volume, proposer=proposer).labels)
    with pytest.raises(ValueError, match="uint8"):
        propose(volume, proposer=proposer, labels=np.zeros((2, 40, 48), np.uint8))
