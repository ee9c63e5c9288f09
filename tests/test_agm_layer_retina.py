"""AGM with the layer model's retina (issue 20 item 3): the anomaly input and the CAM damping use ILM-to-BM of the
layer model instead of the intensity heuristic, in training and in proposals, and the checkpoint records it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_agm_recipe, write_recipe

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.cli import main
from oct_wsss.models.layers import LayerNet, LayerNetConfig
from oct_wsss.preprocess.inputs import resize, retina_mask
from oct_wsss.propose import propose
from oct_wsss.propose.agm import AgmProposer
from oct_wsss.propose.layers import LayerModel, default_checkpoint
from oct_wsss.propose.layers import retina_mask as layer_retina
from oct_wsss.synth import make_volume
from oct_wsss.training.agm import AgmTrainConfig
from oct_wsss.training.data import Sample
from oct_wsss.training.loader import BscanDataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("agm-layers")
    raw = tiny_agm_recipe(tmp, retina="layers")
    raw["data"]["generate"].update(height=128, width=128)
    raw["input_size"] = [64, 64]
    assert main(["train", str(write_recipe(tmp, raw))]) == 0
    return tmp / "run" / "agm.safetensors"


def test_checkpoint_records_the_layer_retina_and_proposes_with_it(trained: Path) -> None:
    ckpt = Checkpoint.load(trained, expect_method="agm")
    assert ckpt.meta["params"]["retina"] == "layers"
    assert ckpt.meta["params"]["layers_sha256"] == LayerModel().checkpoint.sha256
    proposer = AgmProposer.from_checkpoint(ckpt, device="cpu")
    assert proposer.retina == "layers"
    vol = make_volume(7, n_bscans=2, height=128, width=128).volume
    result = propose(vol, "agm", trained, device="cpu")
    assert result.labels.shape == vol.shape and result.done.all()
    params = result.provenance["params"]
    assert params["retina"] == "layers" and params["layers_checkpoint"].startswith("layers-")


def test_layer_retina_changes_the_scores(trained: Path) -> None:
    bscan = make_volume(3, n_bscans=1, height=128, width=128).volume.data[0]
    with_layers = AgmProposer.from_checkpoint(trained, device="cpu")
    heuristic = AgmProposer.from_checkpoint(trained, device="cpu")
    heuristic.retina = None
    present = np.ones((1, len(with_layers.classes)), bool)
    a, _ = with_layers.scores([bscan], present)
    b, _ = heuristic.scores([bscan], present)
    assert a.shape == b.shape == (1, 2, 128, 128)
    assert not np.allclose(a, b)
    harmonised = AgmProposer.from_checkpoint(trained, device="cpu", intensity="harmonised-layers")
    c, _ = harmonised.scores([bscan], present)  # the layer masks serve the harmonisation and the retina alike
    assert np.isfinite(c).all() and not np.allclose(a, c)


def test_dataset_takes_the_retina_from_the_layer_model(tmp_path: Path) -> None:
    case = make_volume(2, n_bscans=1, height=128, width=128)
    path = tmp_path / "b.png"
    from PIL import Image

    Image.fromarray(case.volume.data[0]).save(path)
    sample = Sample(image=path, labels=frozenset(), patient="p")
    model = LayerModel()
    item = BscanDataset([sample], (1,), (64, 64), layers=model)[0]
    expected = resize(layer_retina(case.volume.data[0], model=model)[0], (64, 64), order=0)
    np.testing.assert_array_equal(item["retina"][0].numpy() > 0.5, expected)
    plain = BscanDataset([sample], (1,), (64, 64))[0]
    np.testing.assert_array_equal(plain["retina"][0].numpy() > 0.5, retina_mask(plain["image"][0].numpy()))


def test_another_layer_model_than_the_trained_one_warns(trained: Path, tmp_path: Path) -> None:
    config = LayerNetConfig(width=4, depth=2, scale=0.5)
    torch.manual_seed(0)
    other = Checkpoint.new(LayerNet(config).state_dict(), method="layers", architecture=config.to_dict(),
                           classes=[0, 7], input_size=[64, 64], normalisation={"scale": 0.5})
    path = other.save(tmp_path / "other-layers.safetensors")
    with pytest.warns(UserWarning, match="trained with the retina of layer model"):
        AgmProposer.from_checkpoint(trained, device="cpu", layers_checkpoint=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AgmProposer.from_checkpoint(trained, device="cpu", layers_checkpoint=default_checkpoint())


def test_unknown_retina_source_is_refused() -> None:
    with pytest.raises(ValueError, match="retina must be None or 'layers'"):
        AgmTrainConfig(retina="tissue")
