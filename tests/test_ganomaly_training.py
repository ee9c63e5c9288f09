"""GANomaly trainer: healthy-only training, AUC-based best epoch, exact resume, cancel, D re-init, checkpoint."""

from __future__ import annotations

import csv
import functools
import operator
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_torchrun

import oct_wsss.training.ganomaly as trainer
from oct_wsss.checkpoint import Checkpoint
from oct_wsss.evaluate.classification import roc_auc
from oct_wsss.models.ganomaly import Discriminator, GanomalyConfig, Generator, anomaly_score, healthy_counterpart
from oct_wsss.propose.ganomaly import load_generator
from oct_wsss.synth import DEFAULT_PREVALENCE, make_volume
from oct_wsss.training.data import Sample
from oct_wsss.training.errors import TrainingCancelled, TrainingError
from oct_wsss.training.ganomaly import GanomalyTrainConfig, train_ganomaly
from oct_wsss.training.loader import BscanDataset
from oct_wsss.training.state import load_state

REPO = Path(__file__).resolve().parents[1]
CFG = GanomalyConfig(image_size=16, nc=3, nz=8, ngf=4, ndf=4)
OPTS = GanomalyTrainConfig(epochs=3, batch_size=4)
SEED = 1  # with these data the AUC peaks in the middle epoch: the choice differs from "first" and from "last"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP spin contention; module-wide so ``reference`` runs with it too (results
    are bit-identical only at the same thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _samples(seed: int, healthy: bool) -> list[Sample]:
    """4 B-scans of a 64×64 phantom volume; lesion volumes have every lesion type switched on."""
    prevalence = None if healthy else {k: 1.0 for k in DEFAULT_PREVALENCE}
    vol = make_volume(seed, n_bscans=4, height=64, width=64, healthy=healthy, prevalence=prevalence)
    return [Sample(functools.partial(operator.getitem, vol.volume.data, i),
                   frozenset(int(c) for c in np.flatnonzero(vol.image_labels[i]) if c), f"p{seed}", volume=f"v{seed}",
                   bscan=i) for i in range(4)]


@pytest.fixture(scope="module")
def data() -> dict[str, list[Sample]]:
    healthy = _samples(0, True) + _samples(1, True)
    val = _samples(3, True) + _samples(5, True) + _samples(7, False) + _samples(8, False)
    return {"train": healthy + _samples(2, False), "val": val,
            "val_healthy": _samples(4, True)}


@pytest.fixture(scope="module")
def reference(data: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkpoint, Path]:
    """An uninterrupted 3-epoch run the other tests compare against."""
    run = tmp_path_factory.mktemp("reference")
    return train_ganomaly(data["train"], data["val"], CFG, OPTS, run, device="cpu", seed=SEED, log=lambda _: None), run


def _csv(run: Path) -> list[dict[str, str]]:
    with (run / trainer.METRICS_FILE).open(newline="") as f:
        return list(csv.DictReader(f))


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    gen, disc = Generator(CFG), Discriminator(CFG)
    extra = load_state(run / trainer.STATE_FILE, {"generator": gen, "discriminator": disc}, {})
    return {"epoch": torch.tensor(extra["epoch"]), **{f"g.{k}": v for k, v in gen.state_dict().items()},
            **{f"d.{k}": v for k, v in disc.state_dict().items()}}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_config_from_dict() -> None:
    assert GanomalyTrainConfig.from_dict({"epochs": 3, "lr": 0.01}) == GanomalyTrainConfig(epochs=3, lr=0.01)
    assert GanomalyTrainConfig.from_dict(OPTS.to_dict()) == OPTS
    with pytest.raises(ValueError, match="unknown GANomaly training keys: \\['epoch'\\]"):
        GanomalyTrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="batch_size=0"):
        GanomalyTrainConfig(batch_size=0)


def test_no_healthy_samples_is_an_error(data: dict, tmp_path: Path) -> None:
    abnormal = [s for s in data["train"] if not s.healthy]
    with pytest.raises(TrainingError, match="healthy"):
        train_ganomaly(abnormal, data["val"], CFG, OPTS, tmp_path, device="cpu")
    assert not (tmp_path / trainer.CHECKPOINT_FILE).exists()


def test_best_epoch_by_val_auc(reference: tuple[Checkpoint, Path], data: dict) -> None:
    ckpt, run = reference
    rows = _csv(run)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    aucs = [float(r["val_auc"]) for r in rows]
    assert len(set(aucs)) > 1  # else any epoch would do
    training = ckpt.meta["training"]
    assert training["selection"] == "val_auc"
    assert training["best_epoch"] == int(np.argmax(aucs))
    assert ckpt.meta["metrics"]["val_auc"] == pytest.approx(max(aucs), abs=1e-12)
    assert training["n_healthy_bscans"] == 8 and training["n_val_abnormal"] == sum(not s.healthy for s in data["val"])
    assert [float(r["loss_rec"]) for r in rows][-1] < float(rows[0]["loss_rec"])  # it learns to reconstruct


def test_best_epoch_by_reconstruction_without_abnormal_val(data: dict, tmp_path: Path) -> None:
    ckpt = train_ganomaly(data["train"], data["val_healthy"], CFG, OPTS, tmp_path, device="cpu", log=lambda _: None)
    recs = [float(r["val_rec"]) for r in _csv(tmp_path)]
    assert ckpt.meta["training"]["selection"] == "val_rec"
    assert ckpt.meta["training"]["best_epoch"] == int(np.argmin(recs))
    assert ckpt.meta["metrics"] == {"val_auc": None, "val_rec": pytest.approx(min(recs), abs=1e-12)}


def test_checkpoint_loads_and_reproduces_the_best_epochs_auc(reference: tuple[Checkpoint, Path], data: dict) -> None:
    ckpt, run = reference
    loaded = Checkpoint.load(run / trainer.CHECKPOINT_FILE, expect_method="ganomaly")
    meta = loaded.meta
    assert meta["architecture"] == CFG.to_dict() and meta["classes"] == [] and meta["input_size"] == [16, 16]
    assert meta["normalisation"] == {"input": "unit", "model": "[-1,1]"} and meta["training"]["seed"] == SEED
    assert {k.split(".")[0] for k in loaded.state_dict} == {"generator", "discriminator"}
    gen = load_generator(loaded)
    assert not gen.training and gen.config == CFG

    images = torch.cat([b["image"] for b in torch.utils.data.DataLoader(
        BscanDataset(data["val"], (), (16, 16)), batch_size=OPTS.batch_size)])  # the trainer's batches
    x = (images * 2 - 1).expand(-1, 3, -1, -1)
    with torch.inference_mode():
        scores = torch.cat([anomaly_score(*gen(chunk)[1:]) for chunk in x.split(OPTS.batch_size)])
        ref_out = load_generator(ckpt)(x)[0]
        counterpart = healthy_counterpart(gen, images)
    assert torch.equal(gen(x)[0], ref_out)
    abnormal = np.array([not s.healthy for s in data["val"]])
    assert roc_auc(scores.numpy(), abnormal) == pytest.approx(meta["metrics"]["val_auc"], abs=1e-9)
    assert counterpart.shape == images.shape and 0 <= counterpart.min() <= counterpart.max() <= 1


def test_resume_equals_uninterrupted(reference: tuple[Checkpoint, Path], data: dict, tmp_path: Path) -> None:
    ckpt, run = reference
    first = GanomalyTrainConfig.from_dict({**OPTS.to_dict(), "epochs": 1})
    train_ganomaly(data["train"], data["val"], CFG, first, tmp_path, device="cpu", seed=SEED, log=lambda _: None)
    lines: list[str] = []
    resumed = train_ganomaly(data["train"], data["val"], CFG, OPTS, tmp_path, device="cpu", seed=SEED, log=lines.append)
    assert any("resuming after epoch 1" in line for line in lines)
    _assert_same(_final_weights(tmp_path), _final_weights(run))
    _assert_same(resumed.state_dict, ckpt.state_dict)
    assert resumed.meta["training"] == ckpt.meta["training"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _csv(tmp_path)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _csv(run)]


def test_resume_with_other_settings_is_refused(reference: tuple[Checkpoint, Path], data: dict, tmp_path: Path) -> None:
    shutil.copy(reference[1] / trainer.STATE_FILE, tmp_path / trainer.STATE_FILE)
    other = GanomalyTrainConfig.from_dict({**OPTS.to_dict(), "lr": 0.01})
    with pytest.raises(TrainingError, match="other settings"):
        train_ganomaly(data["train"], data["val"], CFG, other, tmp_path, device="cpu", seed=SEED, log=lambda _: None)


def test_cancel_keeps_the_last_complete_state(reference: tuple[Checkpoint, Path], data: dict, tmp_path: Path) -> None:
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) == 4  # 2 steps per epoch: the 2nd step of epoch 2

    with pytest.raises(TrainingCancelled):
        train_ganomaly(data["train"], data["val"], CFG, OPTS, tmp_path, device="cpu", seed=SEED, log=lambda _: None,
                       cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == [trainer.METRICS_FILE, trainer.STATE_FILE]
    assert _final_weights(tmp_path)["epoch"].item() == 0 and len(_csv(tmp_path)) == 1
    ckpt = train_ganomaly(data["train"], data["val"], CFG, OPTS, tmp_path, device="cpu", seed=SEED, log=lambda _: None)
    _assert_same(ckpt.state_dict, reference[0].state_dict)  # cancelled + resumed = uninterrupted

    fresh = tmp_path / "fresh"
    with pytest.raises(TrainingCancelled):
        train_ganomaly(data["train"], data["val"], CFG, OPTS, fresh, device="cpu", log=lambda _: None,
                       cancel=lambda: True)
    assert sorted(p.name for p in fresh.iterdir()) == [trainer.METRICS_FILE]


def test_discriminator_is_reinitialised_when_its_loss_collapses(
        reference: tuple[Checkpoint, Path], data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bn_biases = [k for k in _final_weights(reference[1]) if k.startswith("d.") and k.endswith(".bias")]
    assert bn_biases and any(_final_weights(reference[1])[k].abs().max() > 0 for k in bn_biases)  # D trained
    assert {r["d_reinit"] for r in _csv(reference[1])} == {"0"}

    monkeypatch.setattr(trainer, "D_COLLAPSE", float("inf"))  # every step counts as a collapse
    lines: list[str] = []
    train_ganomaly(data["train"], data["val"], CFG, OPTS, tmp_path, device="cpu", seed=SEED, log=lines.append)
    assert [r["d_reinit"] for r in _csv(tmp_path)] == ["2", "2", "2"]
    assert any("re-initialised" in line for line in lines)
    final = _final_weights(tmp_path)
    assert all(final[k].abs().max() == 0 for k in bn_biases)  # DCGAN init sets BN biases to exactly 0


GAN_TORCHRUN = """
import os
import sys
from pathlib import Path
import torch
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[2])
from test_ganomaly_training import CFG, GanomalyTrainConfig, _samples
from oct_wsss.training.ganomaly import train_ganomaly

torch.set_num_threads(1)
out = Path(sys.argv[1])
train, val = _samples(0, True) + _samples(1, True), _samples(3, True) + _samples(7, False)
ckpt = train_ganomaly(train, val, CFG, GanomalyTrainConfig(epochs=2, batch_size=2), out / "run", device="cpu",
                      seed=1, log=lambda _: None)
save_file(ckpt.state_dict, str(out / f"rank{os.environ['RANK']}.safetensors"))
"""


@pytest.mark.slow
def test_ganomaly_under_torchrun_keeps_ranks_identical(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    script = tmp_path / "gan.py"
    script.write_text(textwrap.dedent(GAN_TORCHRUN))
    result = run_torchrun(script, str(tmp_path), str(Path(__file__).parent), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same(load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors"))
    assert len(_csv(tmp_path / "run")) == 2
    assert (tmp_path / "run" / trainer.CHECKPOINT_FILE).is_file()
