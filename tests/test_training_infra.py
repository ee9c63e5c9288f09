"""Shared training infrastructure: seeding, metrics log, pickle-free resumable state, devices, torchrun helper."""

from __future__ import annotations

import csv
import math
import random
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_torchrun
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import oct_wsss.training.state as state_module
from oct_wsss.preprocess.device import resolve_device
from oct_wsss.training.distributed import init_distributed
from oct_wsss.training.runlog import MetricLog, seed_everything
from oct_wsss.training.state import load_state, save_state

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP spin contention on a 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_seed_everything_repeats_python_numpy_and_torch() -> None:
    def draw() -> tuple:
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert draw() != first


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_metric_log_writes_resumes_and_widens(tmp_path: Path) -> None:
    log = MetricLog(tmp_path)
    log.log({"epoch": 0, "loss": 1.5, "auc": None})
    log.log({"epoch": 1, "loss": 0.25})
    log.log({"epoch": 2, "loss": 0.125, "lr": 0.01})  # a new column rewrites the header
    log.close()
    rows = _rows(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0] == {"epoch": "0", "loss": "1.5", "auc": "", "lr": ""}
    assert rows[2]["lr"] == "0.01"

    resumed = MetricLog(tmp_path, resume=True, start_epoch=2)  # epoch 2 is trained again: its old row goes
    resumed.log({"epoch": 2, "loss": 0.5, "lr": 0.02})
    rows = _rows(tmp_path / "metrics.csv")
    assert [(r["epoch"], r["loss"], r["lr"]) for r in rows] == [("0", "1.5", ""), ("1", "0.25", ""),
                                                                ("2", "0.5", "0.02")]

    MetricLog(tmp_path / "other.csv").log({"epoch": 0, "x": 1})
    assert _rows(tmp_path / "other.csv") == [{"epoch": "0", "x": "1"}]
    MetricLog(tmp_path)  # a fresh log truncates
    assert _rows(tmp_path / "metrics.csv") == []
    with pytest.raises(ValueError, match="epoch"):
        MetricLog(tmp_path).log({"loss": 1.0})


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _objects(seed: int) -> tuple[_Net, dict, dict]:
    torch.manual_seed(seed)
    net = _Net()
    opts = {"sgd": torch.optim.SGD(list(net.conv.parameters()) + list(net.bn.parameters()), lr=0.05, momentum=0.9),
            "adam": torch.optim.Adam(net.head.parameters(), lr=0.01, betas=(0.5, 0.999))}
    scheds = {"adam": torch.optim.lr_scheduler.StepLR(opts["adam"], step_size=2, gamma=0.5)}
    return net, opts, scheds


def _step(net: _Net, opts: dict, scheds: dict, i: int) -> None:
    g = torch.Generator().manual_seed(100 + i)
    x, y = torch.randn(4, 1, 6, 6, generator=g), torch.randn(4, 2, generator=g)
    for o in opts.values():
        o.zero_grad()
    nn.functional.mse_loss(net(x), y).backward()
    for o in opts.values():
        o.step()
    for s in scheds.values():
        s.step()


def test_state_round_trip_continues_exactly(tmp_path: Path) -> None:
    net, opts, scheds = _objects(0)
    for i in range(3):
        _step(net, opts, scheds, i)
    extra = {"epoch": 3, "pair": (1, 2.5), "by_id": {0: "a", 7: None}, "inf": math.inf, "rng": torch.get_rng_state(),
             "nested": {"best": {"w": torch.arange(6).reshape(2, 3)}}}
    path = save_state(tmp_path / "run.safetensors", {"net": net}, opts, extra, schedulers=scheds)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]  # no temp file left
    with safe_open(str(path), framework="pt") as f:
        assert "oct_wsss_state" in f.metadata()
        assert any(k.startswith("optimizers.adam.") for k in f.keys())
    assert path.read_bytes()[:2] != b"\x80\x04"  # a safetensors header, not a pickle

    net2, opts2, scheds2 = _objects(1)  # different weights, empty optimizer state
    got = load_state(path, {"net": net2}, opts2, schedulers=scheds2)
    assert got["pair"] == (1, 2.5) and got["by_id"] == {0: "a", 7: None} and got["inf"] == math.inf
    assert torch.equal(got["rng"], extra["rng"])
    assert torch.equal(got["nested"]["best"]["w"], torch.arange(6).reshape(2, 3))
    assert torch.equal(opts2["adam"].state_dict()["state"][0]["step"], opts["adam"].state_dict()["state"][0]["step"])
    assert opts2["sgd"].state_dict()["state"][0]["momentum_buffer"] is not None
    assert scheds2["adam"].get_last_lr() == scheds["adam"].get_last_lr() != [0.01]

    _step(net, opts, scheds, 3)
    _step(net2, opts2, scheds2, 3)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert opts2["adam"].param_groups[0]["betas"] == (0.5, 0.999)


def test_load_state_reads_parts_and_refuses_missing_names(tmp_path: Path) -> None:
    net, opts, _ = _objects(0)
    path = save_state(tmp_path / "s.safetensors", {"net": net}, opts, {"epoch": 4})
    assert load_state(path, {}, {}) == {"epoch": 4}
    with pytest.raises(ValueError, match="no saved modules"):
        load_state(path, {"other": _Net()}, {})
    with pytest.raises(ValueError, match="dot-free"):
        save_state(tmp_path / "t.safetensors", {"a.b": net}, {}, {})
    with pytest.raises(TypeError, match="cannot store"):
        save_state(tmp_path / "t.safetensors", {}, {}, {"bad": object()})
    with pytest.raises(ValueError, match="not an oct-wsss training state"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        load_state(tmp_path / "plain.safetensors", {}, {})


def test_failed_save_keeps_the_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, opts, _ = _objects(0)
    path = save_state(tmp_path / "s.safetensors", {"net": net}, opts, {"epoch": 1})
    before = path.read_bytes()

    def broken(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(state_module, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_state(path, {"net": net}, opts, {"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="unsupported device"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ValueError, match="CUDA is not available"):
                resolve_device(name)
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available"):
            resolve_device("mps")


def test_single_process_dist_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = init_distributed("cpu")
    assert (dist.rank, dist.world_size, dist.is_main, dist.device) == (0, 1, True, torch.device("cpu"))
    net = _Net()
    assert dist.wrap(net) is net
    assert dist.sampler(list(range(4)), shuffle=True, seed=0) is None
    assert dist.mean(2.5) == 2.5
    dist.broadcast(net)
    dist.barrier()
    dist.close()


TORCHRUN_SCRIPT = """
import sys
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset
from oct_wsss.training.distributed import init_distributed

torch.set_num_threads(1)
dist = init_distributed("cpu")
torch.manual_seed(dist.rank)  # different weights per rank: wrap must start every rank from rank 0's
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
ddp = dist.wrap(model)
data = TensorDataset(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.ones(8, 1))
sampler = dist.sampler(data, shuffle=True, seed=0)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
steps = 0
for x, y in DataLoader(data, batch_size=2, sampler=sampler):
    opt.zero_grad()
    torch.nn.functional.mse_loss(ddp(x), y).backward()
    opt.step()
    steps += 1
mean = dist.mean(float(dist.rank))
dist.barrier()
params = {k: v.detach().contiguous() for k, v in model.named_parameters()}
save_file(params | {"mean": torch.tensor(mean), "steps": torch.tensor(steps), "ddp": torch.tensor(ddp is not model)},
          f"{sys.argv[1]}/rank{dist.rank}.safetensors")
dist.close()
"""


def test_torchrun_two_cpu_ranks_end_with_identical_parameters(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT))
    result = run_torchrun(script, str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert r0["steps"].item() == r1["steps"].item() == 2  # 8 samples, 2 ranks, batch 2
    assert r0["ddp"].item() and r0["mean"].item() == r1["mean"].item() == 0.5
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    torch.manual_seed(0)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    assert not torch.equal(fresh[0].weight, r0["0.weight"])  # it trained
