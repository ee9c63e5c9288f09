"""Retinal layers (issue 20): band order on every A-scan, ETDRS thickness on constructed data, the CLI's files and
its refusals (no retina, no physical scale) with nothing half-written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from oct_wsss.propose.layers import (
    BOUNDARIES,
    ETDRS,
    bands_from_boundaries,
    boundaries_from_probs,
    check_order,
    etdrs_sectors,
    etdrs_table,
    fovea_from_thickness,
    ordered_labels,
    thickness_map_um,
)
from oct_wsss.weights import layers_checkpoint

CKPT = layers_checkpoint()
needs_weights = pytest.mark.skipif(CKPT is None, reason="layers.safetensors is not bundled in this install")


def _assert_ordered(bands: np.ndarray, bounds: np.ndarray) -> None:
    assert check_order(bands)
    finite = bounds[np.isfinite(bounds).all(axis=1)] if bounds.ndim == 2 else bounds
    assert (np.diff(finite, axis=0) >= 0).all(), "boundaries must be non-decreasing top to bottom"


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.just(10), st.integers(4, 40), st.integers(1, 12)),
              elements=st.floats(0, 1, width=32)), st.booleans())
def test_band_order_holds_on_every_ascan_for_random_probabilities(raw: np.ndarray, with_image: bool) -> None:
    probs = raw + 1e-6
    probs = probs / probs.sum(axis=0, keepdims=True)
    image = raw[0] if with_image else None
    bands, bounds = ordered_labels(probs, image)
    assert bands.shape == probs.shape[1:] and bounds.shape == (len(BOUNDARIES), probs.shape[2])
    _assert_ordered(bands, bounds)
    # fluid only between ILM and BM
    ilm, bm = bounds[0], bounds[-1]
    rows = np.arange(bands.shape[0])[:, None]
    assert not ((bands == 9) & ((rows < ilm) | (rows >= bm))).any()


def test_ordered_one_hot_bands_come_back_exactly() -> None:
    h, w = 60, 7
    truth_b = np.array([[5 + k * 6 + (x % 3) for x in range(w)] for k in range(8)], dtype=float)
    bands = bands_from_boundaries(truth_b, h)
    probs = np.eye(10)[bands].transpose(2, 0, 1)
    assert np.array_equal(boundaries_from_probs(probs), truth_b)
    out, _ = ordered_labels(probs)
    assert np.array_equal(out, bands)


def test_check_order_catches_a_band_above_the_one_it_must_lie_under() -> None:
    bands = np.repeat(np.arange(9, dtype=np.uint8), 3)[:, None].repeat(2, axis=1)
    assert check_order(bands)
    bands[5, 1] = 7
    assert not check_order(bands)


def test_thickness_of_a_constructed_volume_is_its_known_thickness() -> None:
    n, w, spacing = 25, 101, (0.12, 0.004, 0.06)
    bounds = np.zeros((n, len(BOUNDARIES), w))
    bounds[:, 0] = 100.0
    bounds[:, -1] = 100.0 + 70.0  # 70 px x 4 µm = 280 µm everywhere
    bounds[:, 1:-1] = 130.0
    thick = thickness_map_um(bounds, spacing)
    assert np.allclose(thick, 280.0)
    sectors = etdrs_sectors(thick.shape, spacing, (12.0, 50.0), "OD")
    rows = etdrs_table(thick, sectors)
    assert [r["sector"] for r in rows] == list(ETDRS)
    assert all(r["mean_um"] == 280.0 and r["n_ascans"] > 0 for r in rows)


def test_etdrs_sectors_on_a_known_grid() -> None:
    spacing = (0.1, 0.004, 0.1)  # 0.1 mm between B-scans and between A-scans
    od = etdrs_sectors((61, 61), spacing, (30.0, 30.0), "OD")
    os_ = etdrs_sectors((61, 61), spacing, (30.0, 30.0), "OS")
    name = list(ETDRS)
    assert name[od[30, 30]] == "C0" and name[od[30, 34]] == "C0"  # 0.4 mm from the centre
    assert name[od[40, 30]] == "S1"  # 1 mm towards higher B-scans = superior (B-scan 0 inferior)
    assert name[od[20, 30]] == "I1"
    assert name[od[30, 50]] == "N2" and name[os_[30, 50]] == "T2"  # 2 mm to the right: nasal in OD, temporal in OS
    assert name[od[30, 10]] == "T2" and name[os_[30, 10]] == "N2"
    assert od[30, 0] == -1 and od[0, 0] == -1  # 3 mm and beyond: outside the grid
    # the centre disc holds the grid points within 0.5 mm: (dz, dx) in 0.1 mm steps with dz^2 + dx^2 < 25
    expected = sum(1 for a in range(-5, 6) for b in range(-5, 6) if a * a + b * b < 25)
    assert (od == 0).sum() == expected


def test_fovea_is_the_thinnest_point_of_the_map() -> None:
    zz, xx = np.meshgrid(np.arange(31), np.arange(81), indexing="ij")
    thick = 300 - 150 * np.exp(-((zz - 17) ** 2 / 8 + (xx - 44) ** 2 / 60))
    z, x = fovea_from_thickness(thick)
    assert abs(z - 17) <= 1 and abs(x - 44) <= 1


def test_fovea_is_a_pit_not_a_thin_edge_even_at_the_scan_border() -> None:
    """Like the shared Bonn volume: the pit lies on the last B-scans and the map thins towards one side; the thinnest
    point of the central half (the old rule) landed on that half's edge."""
    spacing = (0.03, 0.004, 0.011)  # 70 B-scans over 2.1 mm, 512 A-scans over 5.6 mm
    zz, xx = np.meshgrid(np.arange(70), np.arange(512), indexing="ij")
    r2 = ((zz - 68) * spacing[0]) ** 2 + ((xx - 250) * spacing[2]) ** 2
    thick = 260 + 0.15 * xx - 90 * np.exp(-r2 / 0.3**2)  # 260 µm on the left, 337 µm on the right, a 90 µm pit
    z, x = fovea_from_thickness(thick, spacing)
    assert abs(z - 68) <= 2 and abs(x - 250) <= 5
    flat = 260 + 0.15 * xx + 0.0 * zz  # thin at one edge, no pit anywhere: the map's centre
    assert fovea_from_thickness(flat, spacing) == (34.5, 255.5)


def _duke(shared_data: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from PIL import Image

    root = shared_data / "duke_dme_chiu2015"
    if not (root / "index.csv").is_file():
        pytest.skip("the shared Duke DME labels are absent")
    rows = list(csv.DictReader(open(root / "index.csv", newline="")))
    return [(r["subject"], np.array(Image.open(root / r["image"]).convert("L")),
             np.array(Image.open(root / r["label"]))) for r in rows]


@needs_weights
def test_band_order_holds_on_every_real_duke_bscan(shared_data: Path) -> None:
    from oct_wsss.propose.layers import LayerModel

    samples = _duke(shared_data)
    model = LayerModel(CKPT, device="cpu")
    by_width: dict[int, list[int]] = {}
    for i, (_, img, _) in enumerate(samples):
        by_width.setdefault(img.shape[1], []).append(i)
    agree = []
    for idx in by_width.values():
        result = model.segment(np.stack([samples[i][1] for i in idx]))
        for j, i in enumerate(idx):
            _assert_ordered(result.bands[j], result.boundaries[j])
            agree.append((result.bands[j] == samples[i][2]).mean())
    assert np.mean(agree) > 0.8  # trained on these B-scans: a sanity floor, not a score


def _write_stack(folder: Path, planes: list[np.ndarray]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, p in enumerate(planes):
        Image.fromarray(p.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@needs_weights
def test_cli_writes_layers_and_boundaries_and_refuses_thickness_without_scale(shared_data: Path, tmp_path: Path,
                                                                               capsys) -> None:
    from oct_wsss.cli import main

    samples = [s for s in _duke(shared_data) if s[0] == "Subject_01"][:3]
    vol = _write_stack(tmp_path / "vol", [s[1] for s in samples])
    out = tmp_path / "out"
    assert main(["layers", str(vol), "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "no physical scale" in text and not (out / "thickness.csv").exists()
    from oct_wsss.io import read_labels

    bands = np.asarray(read_labels(out / "layers.tif"))
    assert bands.dtype == np.uint8 and bands.shape == (3, *samples[0][1].shape)
    assert check_order(bands)
    rows = list(csv.DictReader(open(out / "boundaries.csv", newline="")))
    assert list(rows[0]) == ["bscan", "ascan", "boundary", "y_px"]
    assert len(rows) == 3 * len(BOUNDARIES) * bands.shape[2]
    assert {r["boundary"] for r in rows} == set(BOUNDARIES)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["method"] == "layers" and "patient" not in json.dumps(prov).lower()


@needs_weights
def test_cli_writes_etdrs_thickness_when_the_volume_has_a_scale(shared_data: Path, tmp_path: Path) -> None:
    from oct_wsss.cli import main
    from oct_wsss.io import write_volume
    from oct_wsss.volume import OctVolume

    planes = [s[1] for s in _duke(shared_data) if s[0] == "Subject_01"][:5]
    path = tmp_path / "vol.tif"
    write_volume(OctVolume(np.stack(planes), spacing_mm=(0.12, 0.00387, 0.0114), laterality="OD"), path)
    out = tmp_path / "out"
    assert main(["layers", str(path), "--out", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out / "thickness.csv", newline="")))
    assert [r["sector"] for r in rows] == list(ETDRS)
    values = [float(r["mean_um"]) for r in rows if r["mean_um"]]
    assert values and all(150 < v < 700 for v in values)  # DME retina: thick, but retina


@needs_weights
def test_a_bscan_without_retina_is_refused_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    from oct_wsss.cli import main

    rng = np.random.default_rng(0)
    vol = _write_stack(tmp_path / "vol", [np.zeros((496, 512)), rng.integers(0, 30, (496, 512))])
    out = tmp_path / "out"
    assert main(["layers", str(vol), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no retina" in err and "\n" == err[-1] and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_drusen_ped_and_ez_rules_on_constructed_boundaries() -> None:
    from oct_wsss.classes import DRUSEN, EZ, PED
    from oct_wsss.propose.layer_lesions import lesions_from_boundaries

    h, w, spacing = 200, 200, (0.12, 0.004, 0.01)  # 4 µm rows, 10 µm columns
    b = np.zeros((len(BOUNDARIES), w))
    b[:5] = np.arange(5)[:, None] * 10 + 20
    b[BOUNDARIES.index("ISM_ISE")] = 80
    b[BOUNDARIES.index("ISE_OS")] = 83
    b[BOUNDARIES.index("RPE")] = 100
    b[BOUNDARIES.index("BM")] = 104
    b[BOUNDARIES.index("RPE"), 50:60] = 95  # druse: 5 px up over 100 µm -> rows 96..99 in 10 columns
    b[BOUNDARIES.index("RPE"), 120:160] = 70  # PED: 30 px (120 µm) up over 400 µm -> rows 71..99 in 40 columns
    b[BOUNDARIES.index("ISE_OS"), 10:25] = 80  # EZ absent over 150 µm -> 3 rows x 15 columns
    b[BOUNDARIES.index("ISE_OS"), 30:35] = 80  # absent over 50 µm only: not a disruption
    labels = lesions_from_boundaries(np.zeros((h, w), np.uint8), b, spacing)
    assert (labels == DRUSEN).sum() == 4 * 10
    assert (labels == PED).sum() == 29 * 40
    assert (labels == EZ).sum() == 3 * 15 and not (labels[:, 30:35] == EZ).any()


@needs_weights
def test_bundled_layers_checkpoint_is_small_and_has_a_card() -> None:
    from oct_wsss.checkpoint import Checkpoint
    from oct_wsss.weights import model_card

    assert CKPT.stat().st_size <= 10 * 2**20
    ckpt = Checkpoint.load(CKPT, expect_method="layers")
    assert ckpt.meta["params"]["bands"][9] == "fluid"
    card = model_card(CKPT)
    assert card is not None
    text = card.read_text()
    for needed in ("Not for clinical use", "Chiu", "leave-one-patient-out", "training/layers_train.py", "wall time"):
        assert needed in text, needed
    assert "__" not in text, "unfilled placeholder in the card"


def test_a_row_scale_checkpoint_sees_the_rows_at_their_own_scale(tmp_path: Path) -> None:
    import torch

    from oct_wsss.checkpoint import Checkpoint
    from oct_wsss.models.layers import LayerNet, LayerNetConfig
    from oct_wsss.propose.layers import LayerModel

    assert LayerNetConfig(scale=0.5).input_size(496, 512) == (248, 256)
    assert LayerNetConfig(scale=0.5, row_scale=1.0).input_size(496, 512) == (496, 256)
    with pytest.raises(ValueError, match="row_scale 1.5"):
        LayerNetConfig(row_scale=1.5)
    config = LayerNetConfig(width=4, depth=2, scale=0.5, row_scale=1.0)
    torch.manual_seed(0)
    ckpt = Checkpoint.new(LayerNet(config).state_dict(), method="layers", architecture=config.to_dict(),
                          classes=[0, 7], input_size=[96, 32], normalisation={"scale": 0.5, "row_scale": 1.0})
    model = LayerModel(ckpt.save(tmp_path / "rows.safetensors"))
    seen = []
    model.net.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    bscans = np.random.default_rng(0).integers(0, 255, (2, 96, 64)).astype(np.uint8)
    result = model.segment(bscans, require_retina=False)
    assert seen == [(96, 32)] and result.bands.shape == (2, 96, 64)


def _layers_train():
    """training/layers_train.py as a module."""
    import importlib.util

    script = Path(__file__).parents[1] / "training" / "layers_train.py"
    spec = importlib.util.spec_from_file_location("layers_train", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phantom_band_truth_follows_the_generators_boundaries() -> None:
    """training/layers_train.py's phantom bands: ordered down every A-scan, every band present, SRF/IRF as fluid."""
    from oct_wsss.classes import IRF, SRF
    from oct_wsss.synth import make_volume

    module = _layers_train()
    case = make_volume(3, n_bscans=2, width=96, prevalence={"srf": 1.0, "irf": 1.0})
    bands = module.phantom_bands(case)
    assert bands.shape == case.labels.shape and set(np.unique(bands)) >= set(range(9))
    fluid = np.isin(case.labels, (SRF, IRF))
    assert fluid.any() and (bands[fluid] == 9).all() and (bands[~fluid] != 9).all()
    layered = np.where(fluid, 0, bands).astype(int)
    tissue = np.maximum.accumulate(layered, axis=1)  # fluid rows take the band above them
    assert (np.diff(np.where(fluid, tissue, layered), axis=1) >= 0).all()
    ilm = np.asarray(case.layers["ILM"])
    assert abs(int((bands[0, :, 40] > 0).argmax()) - float(np.ceil(ilm[0, 40]))) <= 1


def test_the_boundary_weight_counts_band_edges_more() -> None:
    """layers_train's loss: without a boundary weight it is the class-weighted cross-entropy; with weight w the two
    pixels on either side of a band edge count 1 + w times, so the same mistake costs more at an edge."""
    import torch
    import torch.nn.functional as F

    loss = _layers_train().weighted_cross_entropy
    y = torch.tensor([[[0], [0], [0], [1], [1], [1]]])  # one A-scan, the edge between rows 2 and 3
    target = F.one_hot(y, 2).permute(0, 3, 1, 2).float()
    weights = torch.tensor([1.0, 2.0])
    logits = torch.randn(1, 2, 6, 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss(logits, target, weights, 0.0), F.cross_entropy(logits, y, weight=weights))
    nll = F.cross_entropy(logits, y, reduction="none")[0, :, 0]
    w = weights[y[0, :, 0]] * torch.tensor([1.0, 1.0, 11.0, 11.0, 1.0, 1.0])
    assert torch.allclose(loss(logits, target, weights, 10.0), (nll * w).sum() / w.sum())
    wrong = torch.zeros(1, 2, 6, 1)
    wrong[0, 0] = 2.0  # says band 0 everywhere: wrong on rows 3-5 only
    at_edge, inside = wrong.clone(), wrong.clone()
    at_edge[0, :, 3, 0] = torch.tensor([0.0, 2.0])  # right on the edge row; right on an interior row
    inside[0, :, 5, 0] = torch.tensor([0.0, 2.0])
    assert loss(at_edge, target, weights, 10.0) < loss(inside, target, weights, 10.0)


def test_area_targets_keep_a_bands_depth_where_nearest_loses_a_row() -> None:
    """layers_train's targets at half resolution: by area each band keeps its native depth whether its edge falls on an
    even or an odd row; nearest takes the upper of each two rows, so an edge on an odd row comes out one row low."""
    module = _layers_train()
    for edge in (20, 21):
        label = np.zeros((64, 32), np.uint8)
        label[edge:] = 1
        sample = {"image": np.random.default_rng(0).random((64, 32)).astype(np.float32), "label": label}
        _, area = module._half(sample, area=True)
        _, nearest = module._half(sample, area=False)
        assert area.shape == (10, 32, 16)
        assert float(area[1, :, 0].sum()) * 2 == 64 - edge
        assert float(nearest[1, :, 0].sum()) * 2 == 64 - edge - (edge % 2)
