"""HRF proposer: iterative inference (threshold, cap), occlusion, classical fallback, CLI with instances.csv."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.classes import HRF
from oct_wsss.models.cct import Cct, CctConfig
from oct_wsss.propose import ProposalError, propose
from oct_wsss.propose.hrf import CLASSICAL_WARNING, HrfProposer
from oct_wsss.propose.hrf_refine import Crop, classical_region, prompt_box
from oct_wsss.propose.registry import write_proposal
from oct_wsss.synth import make_volume

SIZE = [96, 128]


def _ckpt(tmp: Path, bias: float) -> Path:
    torch.manual_seed(0)
    net = Cct(CctConfig.variant("cct_2", dim=16, heads=2, conv_channels=8, input_size=SIZE))
    with torch.no_grad():
        net.head.bias.fill_(bias)  # a random-weight classifier whose HRF probability we set
    path = tmp / f"hrf-{bias}.safetensors"
    Checkpoint.new(net.state_dict(), method="hrf-cct", architecture={"cct": net.config.to_dict()}, classes=[HRF],
                   input_size=SIZE, normalisation={"mean": 0.2, "std": 0.2}).save(path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("hrf")
    return {"always": _ckpt(tmp, 20.0), "never": _ckpt(tmp, -20.0), "mid": _ckpt(tmp, 1.0)}


@pytest.fixture(scope="module")
def phantom():
    return make_volume(3, n_bscans=2, height=SIZE[0], width=SIZE[1], prevalence={"hrf": 1.0})


def _proposer(path: Path, **kw) -> HrfProposer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HrfProposer.from_checkpoint(path, device="cpu", **kw)


def test_stops_at_the_cap(ckpts, phantom) -> None:
    p = _proposer(ckpts["always"], iterations=3)
    mask, records, probs = p.segment(phantom.volume.data[0], 0, (0.1, 0.0039, 0.0114))
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert len(probs) == 4 and min(probs) > 0.05  # never below the threshold: the cap ended it
    assert mask.sum() == sum(r["area_px"] for r in records)
    r0 = records[0]
    assert r0["area_um2"] == pytest.approx(r0["area_px"] * 3.9 * 11.4, rel=1e-3)


def test_stops_on_the_threshold(ckpts, phantom) -> None:
    p = _proposer(ckpts["never"], iterations=6)
    mask, records, probs = p.segment(phantom.volume.data[0])
    assert records == [] and not mask.any() and len(probs) == 1 and probs[0] < 0.05
    p0 = _proposer(ckpts["mid"], iterations=1).segment(phantom.volume.data[0])[2][0]
    assert 0.5 < p0 < 0.9
    assert _proposer(ckpts["mid"], threshold=0.9).segment(phantom.volume.data[0])[1] == []  # p0 below 0.9: stop
    assert len(_proposer(ckpts["mid"], threshold=0.5, iterations=1).segment(phantom.volume.data[0])[1]) == 1


def test_occlusion_removes_found_foci_from_the_next_input(ckpts, phantom) -> None:
    p = _proposer(ckpts["always"], iterations=2)
    inputs: dict[int, np.ndarray] = {}
    mask, records, _ = p.segment(phantom.volume.data[1], on_input=lambda it, img: inputs.setdefault(it, img))
    fill = float(inputs[0].mean())
    first = np.zeros(mask.shape, bool)
    first[records[0]["peak_y"], records[0]["peak_x"]] = True
    seen_seed = inputs[0][first][0]
    assert np.allclose(inputs[1][mask & (inputs[0] != inputs[1])], fill)
    region1 = mask.copy()
    second = inputs[2][region1]  # after both iterations every found pixel is the image mean
    assert np.allclose(second, fill) and not np.isclose(seen_seed, fill)
    assert records[1]["peak_y"] * 1000 + records[1]["peak_x"] != records[0]["peak_y"] * 1000 + records[0]["peak_x"]


def test_classical_fallback_warns_and_is_in_provenance(ckpts, phantom, tmp_path) -> None:
    with pytest.warns(UserWarning, match="classical"):
        proposer = HrfProposer.from_checkpoint(ckpts["always"], device="cpu", iterations=2)
    result = propose(phantom.volume, proposer=proposer)
    assert result.provenance["refiner"] == "classical" and result.provenance["sam2"] is None
    assert set(np.unique(result.labels)) <= {0, HRF} and (result.labels == HRF).any()
    files = write_proposal(result, tmp_path / "out")
    rows = list(csv.DictReader(files["instances"].open()))
    assert len(rows) == 4 and {r["bscan"] for r in rows} == {"0", "1"} and rows[0]["sam_score"] == ""
    prov = json.loads(files["provenance"].read_text())
    assert prov["refiner"] == "classical" and len(prov["instances"]) == 4
    assert CLASSICAL_WARNING.startswith("HRF proposer")


def test_cli_propose_hrf(ckpts, phantom, tmp_path, capsys) -> None:
    from oct_wsss.cli import main
    from oct_wsss.io import read_volume, write_volume

    vol = write_volume(phantom.volume, tmp_path / "v.tif")
    assert read_volume(vol).n_bscans == 2
    out = tmp_path / "out"
    rc = main(["propose", str(vol), "--method", "hrf", "--checkpoint", str(ckpts["always"]), "--out", str(out),
               "--device", "cpu", "--iterations", "1", "--crop-size", "48", "--box-size", "6"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} >= {"labels.tif", "provenance.json", "instances.csv"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["params"]["crop_size"] == 48 and prov["params"]["iterations"] == 1
    rc = main(["propose", str(vol), "--method", "hrf", "--checkpoint", str(ckpts["always"]), "--out", str(out),
               "--sam2-checkpoint", str(tmp_path / "missing.pt")])
    assert rc == 2 and "SAM 2" in capsys.readouterr().err


def test_wrong_checkpoint_and_bad_options(ckpts, tmp_path) -> None:
    other = tmp_path / "agm.safetensors"
    Checkpoint.new({"w": torch.zeros(1)}, method="student", architecture={}, classes=[HRF], input_size=SIZE,
                   normalisation={}).save(other)
    with pytest.raises(CheckpointError, match="hrf-cct"):
        HrfProposer.from_checkpoint(other)
    with pytest.raises(ProposalError, match="crop size"):
        _proposer(ckpts["always"], crop_size=2)


def test_crop_box_and_classical_region() -> None:
    crop = Crop.around((2, 120), 50, (96, 128))
    assert (crop.y0, crop.x0, crop.size_y, crop.size_x) == (0, 78, 50, 50)
    assert prompt_box((2, 120), crop, 4) == (40.5, 0.5, 44.5, 4.5)
    img = np.full((50, 50), 0.2, np.float32)
    yy, xx = np.mgrid[:50, :50]
    img[(yy - 20) ** 2 + (xx - 30) ** 2 <= 9] = 0.9  # a 29-px focus
    region = classical_region(img, (21, 29), box=4)
    assert region[20, 30] and 20 <= region.sum() <= 40 and not region[0, 0]
    flat = classical_region(np.full((50, 50), 0.5, np.float32), (25, 25), box=4)
    assert flat.sum() == 16  # nothing brighter than the background: the box square
