"""DFP's guard: a present class whose propagated label comes out empty falls back to the saliency M, and says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oct_wsss.explain.propagation import PropagationParams, minmax, propagate
from oct_wsss.models.dfp import DfpConfig, DfpNet
from oct_wsss.preprocess.inputs import resize, retina_mask, to_unit
from oct_wsss.propose import propose
from oct_wsss.propose.dfp import DfpProposer, dfp_checkpoint
from oct_wsss.synth import make_volume


@pytest.fixture(scope="module")
def empty_propagation(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random DFP whose propagation (kernel 1, threshold 1.0) confirms nothing; every B-scan is "abnormal"."""
    torch.manual_seed(0)
    net = DfpNet(DfpConfig(backbone="resnet18", width=8))
    with torch.no_grad():
        net.head.log_scale.fill_(-10.0)  # r ≈ sigmoid(5) < 1
        net.head.offset.fill_(5.0)
    ckpt = dfp_checkpoint(net, [7], (64, 64), threshold=0.3, present_threshold=0.0,
                          propagation=PropagationParams(kernel=1, threshold=1.0))
    return ckpt.save(tmp_path_factory.mktemp("ckpt") / "dfp.safetensors")


def test_empty_propagated_label_falls_back_to_saliency(empty_propagation) -> None:
    vol = make_volume(3, n_bscans=3, height=96, width=80).volume
    proposer = DfpProposer.from_checkpoint(empty_propagation, device="cpu")
    x = torch.nn.functional.interpolate(torch.from_numpy(np.stack([to_unit(b) for b in vol.data]))[:, None],
                                        size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    saliency, refs, _ = proposer.forward(x)
    expected = []
    for j in range(3):  # the precondition: propagation alone leaves nothing above the label threshold
        s0 = propagate(saliency[j, 0], [r[j] for r in refs], proposer.propagation)
        assert not (resize(s0, (96, 80)) > 0.3).any()
        inside = resize(retina_mask(x[j, 0].numpy()), (96, 80), order=0)
        expected.append((np.clip(resize(minmax(saliency[j, 0]), (96, 80)), 0, 1) * inside) > 0.3)
    off = propose(vol, "dfp", empty_propagation, device="cpu", fallback=False)
    assert not off.labels.any() and off.provenance["fallbacks"]["total"] == 0
    assert off.provenance["params"]["fallback"] is False
    on = propose(vol, "dfp", empty_propagation, device="cpu", keep_scores=True)
    assert all(e.any() for e in expected)
    np.testing.assert_array_equal(on.labels == 7, np.stack(expected))
    fb = on.provenance["fallbacks"]
    assert fb["total"] == 3 and fb["per_bscan"] == {"0": 1, "1": 1, "2": 1}
    assert on.provenance["params"]["fallback"] is True


def test_no_fallback_where_propagation_gives_a_label_or_the_class_is_absent(empty_propagation) -> None:
    vol = make_volume(3, n_bscans=2, height=96, width=80).volume
    loose = propose(vol, "dfp", empty_propagation, device="cpu", propagation_threshold=0.0, kernel=3)
    assert loose.labels.any() and loose.provenance["fallbacks"] == {
        "rule": "empty propagated label -> min-max saliency M", "total": 0, "per_bscan": {}}
    absent = propose(vol, "dfp", empty_propagation, device="cpu", present_threshold=1.0)
    assert not absent.labels.any() and absent.provenance["fallbacks"]["total"] == 0
    # the trainer's path (image-level labels given) takes the same guard
    proposer = DfpProposer.from_checkpoint(empty_propagation, device="cpu")
    soft, _ = proposer.scores(list(vol.data), np.array([[True], [False]]))
    assert (soft[0] > 0.3).any() and not soft[1].any()
