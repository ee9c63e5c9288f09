"""GPU faults and cancellation: OOM halves the batch and then offers the CPU; cancelling propose, train, finetune
and export stops within a second or two and leaves nothing half-written under a final name; a failed or cancelled
run never changes an existing checkpoint."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import report, tiny_student

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.cli import main
from oct_wsss.io.label_export import ExportCancelled, export_labels
from oct_wsss.propose import ProposalCancelled, ProposalError, propose
from oct_wsss.propose.batching import run_in_batches
from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import CorrectionStore
from oct_wsss.training.errors import TrainingCancelled
from oct_wsss.volume import OctVolume

REPO = Path(__file__).resolve().parents[1]
LATENCY_S = 2.0


class _OomAbove(torch.nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``limit`` (what a too-large batch does on a GPU)."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.seen = net, limit, []
        self.config = net.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} GiB")
        return self.net(x)


def _volume(n: int = 6, side: int = 48) -> OctVolume:
    return OctVolume(np.random.default_rng(3).integers(0, 255, (n, side, side), dtype=np.uint8))


class _CancelAfter:
    """A cancel flag a watcher thread raises ``after_s`` seconds in, as a user's click would; notes when."""

    def __init__(self, after_s: float) -> None:
        self.at: float | None = None
        self._timer = threading.Timer(after_s, self._set)
        self._timer.start()

    def _set(self) -> None:
        self.at = time.monotonic()

    def __call__(self) -> bool:
        return self.at is not None

    def latency(self) -> float:
        assert self.at is not None, "the run ended before the cancel"
        return time.monotonic() - self.at


class _CancelOnLog(_CancelAfter):
    """The user clicks Cancel while training runs: after the ``after``-th log line (epochs are logged), from another
    thread, at a moment unrelated to the batch loop."""

    def __init__(self, after: int) -> None:
        self.at, self.after, self.lines = None, after, 0

    def log(self, _line: str) -> None:
        self.lines += 1
        if self.lines == self.after:
            threading.Timer(0.05, self._set).start()


def test_oom_halves_the_batch_then_offers_the_cpu(tmp_path: Path, monkeypatch, capsys) -> None:
    ckpt = tiny_student(tmp_path / "s.safetensors")
    volume = _volume()
    expected = propose(volume, proposer=StudentProposer.from_checkpoint(ckpt, device="cpu")).labels
    proposer = StudentProposer.from_checkpoint(ckpt, device="cpu", batch_size=8)
    proposer.net = _OomAbove(proposer.net, limit=2)
    got = propose(volume, proposer=proposer).labels
    assert proposer.net.seen[:3] == [6, 4, 2] and proposer.batch_size == 2  # 8 (6 left) -> 4 -> 2, then it fits
    np.testing.assert_array_equal(got, expected)
    proposer.net = _OomAbove(proposer.net.net, limit=0)
    with pytest.raises(ProposalError, match="--device cpu"):
        propose(volume, proposer=proposer)
    assert proposer.net.seen == [2, 1]

    def out_of_memory(self, bscans):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(StudentProposer, "probabilities", out_of_memory)  # every batch size, through the CLI
    np.save(tmp_path / "v.npy", volume.data)
    code = main(["propose", str(tmp_path / "v.npy"), "--method", "student", "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--device cpu" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out" / "labels.tif").exists() and not list((tmp_path / "out").glob(".labels-*"))


def test_oom_at_one_bscan_moves_to_the_cpu_when_the_proposer_can() -> None:
    on_gpu, seen, moves = [True], [], []

    def work(batch):
        seen.append(len(batch))
        if on_gpu[0] and len(batch) > 0:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [b * 10 for b in batch]

    def to_cpu() -> None:
        moves.append(len(seen))
        on_gpu[0] = False

    assert list(run_in_batches([1, 2, 3, 4, 5], 4, work, to_cpu=to_cpu)) == [10, 20, 30, 40, 50]
    assert seen[:4] == [4, 2, 1, 1] and moves == [3]  # 4 -> 2 -> 1, then the CPU once, at the batch size reached
    with pytest.raises(ProposalError, match="--device cpu"):
        on_gpu[0] = True
        list(run_in_batches([1], 1, work))


def test_cancelled_propose_stops_within_a_batch(tmp_path: Path) -> None:
    proposer = StudentProposer.from_checkpoint(tiny_student(tmp_path / "s.safetensors", input_size=(128, 128)),
                                               device="cpu", batch_size=1)
    cancel = _CancelAfter(0.5)
    with pytest.raises(ProposalCancelled) as info:
        propose(_volume(400, 128), proposer=proposer, cancel=cancel)
    report("cancel_latency_s", {"propose": round(cancel.latency(), 3)})
    assert cancel.latency() < LATENCY_S and 0 < info.value.partial.done.sum() < 400


def test_interrupted_cli_propose_leaves_no_files(tmp_path: Path) -> None:
    ckpt = tiny_student(tmp_path / "s.safetensors", input_size=(128, 128))
    np.save(tmp_path / "v.npy", _volume(300, 128).data)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "oct_wsss.cli", "propose", str(tmp_path / "v.npy"), "--method",
                             "student", "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
                             "--batch-size", "1"], stderr=subprocess.PIPE, env=env,
                            # a test run started in the background inherits SIGINT ignored; Ctrl-C needs the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    while b"proposing: 3/" not in seen:  # wait until it is really working
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk, f"propose ended early: {seen[-500:]!r}"
        seen += chunk
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    rest = b""
    while b"interrupted" not in rest and (chunk := os.read(proc.stderr.fileno(), 4096)):
        rest += chunk
    stopped = time.monotonic() - t0  # the work stopped and the one-line message is out (exit: interpreter teardown)
    rest += proc.stderr.read()
    proc.wait(timeout=30)
    report("cancel_latency_s", {"cli_propose_sigint_to_message": round(stopped, 4),
                                "cli_propose_sigint_to_exit": round(time.monotonic() - t0, 3)})
    assert proc.returncode == 130 and b"interrupted" in rest and b"Traceback" not in rest, rest[-500:]
    assert stopped < LATENCY_S
    assert not (out / "labels.tif").exists() and not (out / "provenance.json").exists()
    assert not list(out.glob(".*"))  # neither the scratch labels nor a temporary file is left


def _store_with_corrections(root: Path, n: int = 6) -> CorrectionStore:
    store = CorrectionStore(root)
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (32, 32), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 4 + i : 12 + i] = 1 + i % 2
        store.accept(f"v{i % 2}", i, mask, image=image)
    return store


def test_cancelled_training_and_finetune_keep_state_and_parent(tmp_path: Path) -> None:
    from oct_wsss.training.finetune import DEFAULTS, finetune
    from oct_wsss.training.state import load_state
    from oct_wsss.training.student import STATE_FILE, train_student
    from oct_wsss.training.student_data import correction_targets

    store = _store_with_corrections(tmp_path / "project")
    parent = tiny_student(tmp_path / "parent.safetensors")
    before = hashlib.sha256(parent.read_bytes()).hexdigest()
    base = StudentProposer.from_checkpoint(parent, device="cpu")
    cancel = _CancelOnLog(after=3)
    run = tmp_path / "run"
    with pytest.raises(TrainingCancelled):
        train_student(correction_targets(store.corrections(), 1.0), base.classes, base.input_size, base.net.config,
                      replace(DEFAULTS, epochs=10_000, batch_size=2), run, device="cpu", log=cancel.log,
                      cancel=cancel)
    report("cancel_latency_s", {"train": round(cancel.latency(), 3)})
    assert cancel.latency() < LATENCY_S
    assert not list(run.glob(".*"))  # no temporary state file left
    assert load_state(run / STATE_FILE, {"net": base.net}, {})["epoch"] >= 2  # the last epoch's state is whole

    cancel = _CancelOnLog(after=3)
    with pytest.raises(TrainingCancelled):
        finetune(store.root, parent, out_dir=tmp_path / "ft", config=replace(DEFAULTS, epochs=10_000), device="cpu",
                 log=cancel.log, cancel=cancel)
    report("cancel_latency_s", {"finetune": round(cancel.latency(), 3)})
    assert cancel.latency() < LATENCY_S
    assert hashlib.sha256(parent.read_bytes()).hexdigest() == before
    assert not list((tmp_path / "ft").glob("*.safetensors"))  # no checkpoint under a final name


@pytest.mark.parametrize("failure", ["fsync", "replace", "interrupt"])
def test_a_failed_save_leaves_the_previous_checkpoint_unchanged(tmp_path: Path, monkeypatch, failure: str) -> None:
    path = tiny_student(tmp_path / "model.safetensors")
    before = path.read_bytes()
    ckpt = Checkpoint.load(path)
    changed = Checkpoint({k: v + 1 for k, v in ckpt.state_dict.items()}, ckpt.meta)
    err = KeyboardInterrupt() if failure == "interrupt" else OSError(errno.ENOSPC, "No space left on device")

    def failing(*_a, **_k):
        raise err

    monkeypatch.setattr(os, "replace" if failure == "replace" else "fsync", failing)
    with pytest.raises(type(err)):
        changed.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_cancelled_export_leaves_the_previous_export(tmp_path: Path) -> None:
    old = np.zeros((40, 64, 64), np.uint8)
    first = export_labels(old, tmp_path, "case")
    snapshot = {p: p.read_bytes() for p in first}
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 12  # in the middle of the PNG pages

    t0 = time.monotonic()
    with pytest.raises(ExportCancelled):
        export_labels(np.ones((40, 64, 64), np.uint8), tmp_path, "case", cancel=cancel)
    report("cancel_latency_s", {"export_whole_call": round(time.monotonic() - t0, 3)})
    assert time.monotonic() - t0 < LATENCY_S
    assert {p: p.read_bytes() for p in first} == snapshot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npy", "case.tif", "case_png"]
