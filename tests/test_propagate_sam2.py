"""The SAM 2 propagation engine: SAM 2's video predictor (random weights, packaged tiny config; no downloads) carries a
mask across a tiny volume's B-scans through the same streaming and stop rules as the flow engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oct_wsss.propose.propagate import propagate
from oct_wsss.propose.proposal import ProposalError

pytest.importorskip("sam2")


def test_the_engine_needs_a_checkpoint() -> None:
    from oct_wsss.propose.propagate_sam2 import build_video_predictor

    with pytest.raises(ProposalError, match="--sam2-checkpoint"):
        build_video_predictor(None)


@pytest.mark.slow  # four SAM 2 frame encodings on a CPU: 100-180 s on two shared cores
def test_sam2_video_engine_runs_on_a_tiny_volume() -> None:
    from oct_wsss.napari._imports import hide_triton
    from oct_wsss.propose.propagate_sam2 import build_video_predictor, sam2_engine
    from oct_wsss.synth import make_volume

    hide_triton()
    torch.manual_seed(0)
    predictor = build_video_predictor(None, allow_random=True)
    data = make_volume(9, n_bscans=3, height=128, width=160).volume.data
    labels = np.zeros(data.shape, np.uint8)
    labels[1, 40:60, 50:90] = 2
    res = propagate(data, labels, 1, 0, 2, engine="sam2", engine_fn=sam2_engine(predictor), min_confidence=0.0,
                    min_area=0)
    assert res.proposed.tolist() == [True, False, True] and (res.labels[1] == labels[1]).all()
    assert set(res.confidence) == {0, 2} and all(0.0 <= c[2] <= 1.0 for c in res.confidence.values())
    assert res.provenance["engine"] == "sam2" and {s.reason for s in res.stops} == {"range end"}


@pytest.mark.slow  # two SAM 2 frame encodings on a CPU: ~25 s on two shared cores
def test_cli_sam2_provenance_names_the_checkpoint_by_its_sha256(tmp_path) -> None:
    import hashlib
    import json

    import tifffile

    from oct_wsss.cli import main
    from oct_wsss.io import write_labels
    from oct_wsss.napari._imports import hide_triton
    from oct_wsss.propose.propagate_sam2 import build_video_predictor
    from oct_wsss.synth import make_volume

    hide_triton()
    torch.manual_seed(0)
    pt = tmp_path / "sam2_random.pt"
    torch.save({"model": build_video_predictor(None, allow_random=True).state_dict()}, pt)
    data = make_volume(9, n_bscans=2, height=128, width=160).volume.data
    tifffile.imwrite(tmp_path / "vol.tif", data)
    labels = np.zeros(data.shape, np.uint8)
    labels[0, 40:60, 50:90] = 2
    write_labels(tmp_path / "in.tif", labels)
    out = tmp_path / "out"
    assert main(["propagate", str(tmp_path / "vol.tif"), "--labels", str(tmp_path / "in.tif"), "--from", "0",
                 "--to", "0:1", "--out", str(out), "--engine", "sam2", "--sam2-checkpoint", str(pt),
                 "--min-confidence", "0", "--device", "cpu"]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["sam2"] == {"config": "sam2.1_hiera_t", "checkpoint": "sam2_random.pt",
                            "sha256": hashlib.sha256(pt.read_bytes()).hexdigest()}
    assert str(tmp_path) not in (out / "provenance.json").read_text()
