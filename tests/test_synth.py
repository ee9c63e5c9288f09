"""The synthetic OCT phantom: shapes, determinism, ground truth, reflectivity order, dataset layout."""

from __future__ import annotations

import csv
import json
import time

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage

from oct_wsss.classes import DRUSEN, EZ, HRF, IRF, LESION_IDS, PED, SRF
from oct_wsss.synth import DEFAULT_PREVALENCE, SyntheticVolume, make_volume, write_dataset

ALL = {k: 1.0 for k in DEFAULT_PREVALENCE}
SMALL = {"n_bscans": 13, "height": 496, "width": 256}


@pytest.fixture(scope="module")
def sick() -> SyntheticVolume:
    """A full-size volume with every lesion class (timed, the time is printed, never asserted)."""
    t0 = time.perf_counter()
    s = make_volume(7, prevalence=ALL)
    print(f"\nmake_volume 49x496x512 with all lesions: {time.perf_counter() - t0:.2f} s")
    return s


@pytest.fixture(scope="module")
def healthy() -> SyntheticVolume:
    return make_volume(11, healthy=True)


def _band(s: SyntheticVolume, top: str, bottom: str, margin: float = 1.0) -> np.ndarray:
    """Pixels strictly inside a band (away from its boundaries and from any lesion)."""
    y = np.arange(s.labels.shape[1])[None, :, None] + 0.5
    m = (y > s.layers[top][:, None, :] + margin) & (y < s.layers[bottom][:, None, :] - margin) & (s.labels == 0)
    return s.volume.data[m].astype(float)


def test_shape_dtype_and_metadata(sick: SyntheticVolume) -> None:
    v = sick.volume
    assert v.data.shape == (49, 496, 512) and v.data.dtype == np.uint8
    assert sick.labels.shape == v.data.shape and sick.labels.dtype == np.uint8
    assert sick.image_labels.shape == (49, 8) and sick.image_labels.dtype == bool
    assert v.source == {"format": "synthetic", "seed": 7} and v.patient == {} and v.laterality == "OD"
    assert set(np.unique(sick.labels)) <= {0, *LESION_IDS} and not (sick.labels == 7).any()
    for name in ("ILM", "RPE", "BM"):
        assert sick.layers[name].shape == (49, 512) and sick.layers[name].dtype == np.float32
    assert np.all(sick.layers["ILM"] < sick.layers["RPE"]) and np.all(sick.layers["RPE"] < sick.layers["BM"])
    json.dumps(sick.params)  # JSON-serialisable


def test_configurable_geometry() -> None:
    s = make_volume(1, **SMALL, laterality="OS", spacing_mm=(0.24, 0.0039, 0.022))
    assert s.volume.data.shape == (13, 496, 256) and s.volume.laterality == "OS"
    assert s.volume.spacing_mm == (0.24, 0.0039, 0.022)
    with pytest.raises(ValueError):
        make_volume(1, prevalence={"cnv": 1.0})


def test_determinism() -> None:
    a, b, c = (make_volume(s, **SMALL) for s in (5, 5, 6))
    assert a.volume.data.tobytes() == b.volume.data.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes() and a.params == b.params
    assert a.volume.data.tobytes() != c.volume.data.tobytes()


def test_healthy_has_no_lesions(healthy: SyntheticVolume) -> None:
    assert not healthy.labels.any()
    assert not healthy.image_labels[:, 1:].any() and healthy.image_labels[:, 0].all()
    assert healthy.params["placed"] == [] and healthy.params["healthy"]


def test_every_class_appears_with_prevalence_one(sick: SyntheticVolume) -> None:
    present = set(np.unique(sick.labels))
    for cid in (SRF, IRF, PED, EZ, HRF, DRUSEN):
        assert cid in present, cid
    assert sick.params["placed"] == sorted(DEFAULT_PREVALENCE)


def test_prevalence_zero_gives_no_lesions() -> None:
    s = make_volume(3, **SMALL, prevalence={k: 0.0 for k in DEFAULT_PREVALENCE})
    assert not s.labels.any()


def test_image_labels_match_labels(sick: SyntheticVolume) -> None:
    for b in range(sick.labels.shape[0]):
        for cid in range(8):
            assert sick.image_labels[b, cid] == (cid == 0 or bool((sick.labels[b] == cid).any()))


@pytest.mark.parametrize("cid", [SRF, IRF, PED])
def test_lesions_are_3d_and_continuous(sick: SyntheticVolume, cid: int) -> None:
    """A 3-D lesion spans at least two consecutive B-scans and overlaps itself between them."""
    lab3, n = ndimage.label(sick.labels == cid)
    spans = [np.unique(np.nonzero(lab3 == k)[0]) for k in range(1, n + 1)]
    longest = max(spans, key=len)
    assert len(longest) >= 2 and np.all(np.diff(longest) == 1)


def test_layer_reflectivity_order(healthy: SyntheticVolume) -> None:
    mean = {name: _band(healthy, *b).mean() for name, b in {
        "NFL": ("ILM", "NFL_GCL"), "INL": ("IPL_INL", "INL_OPL"), "OPL": ("INL_OPL", "OPL_ONL"),
        "ONL": ("OPL_ONL", "ELM"), "RPE": ("RPE", "RPE_BOTTOM"), "EZ": ("EZ", "OS")}.items()}
    y = np.arange(healthy.labels.shape[1])[None, :, None]
    vitreous = healthy.volume.data[y < healthy.layers["ILM"][:, None, :] - 5].mean()
    assert mean["RPE"] > mean["ONL"] and mean["INL"] < mean["OPL"] and mean["NFL"] > mean["INL"]
    assert mean["EZ"] > mean["ONL"] and mean["ONL"] < mean["OPL"] and vitreous < mean["ONL"]


def test_fluid_darker_and_hrf_brighter(sick: SyntheticVolume) -> None:
    data = sick.volume.data.astype(float)
    retina = _band(sick, "ILM", "ELM").mean()
    inner = np.ones((1, 3, 3), bool)  # the fluid's interior: its rim is blurred with the bright EZ/RPE
    assert data[ndimage.binary_erosion(sick.labels == SRF, inner)].mean() < 0.7 * retina
    assert data[ndimage.binary_erosion(sick.labels == IRF, inner)].mean() < 0.7 * retina
    assert data[sick.labels == SRF].mean() < retina and data[sick.labels == IRF].mean() < retina
    assert data[sick.labels == HRF].mean() > _band(sick, "INL_OPL", "ELM").mean() + 30


def test_hrf_foci_sizes(sick: SyntheticVolume) -> None:
    for b in np.flatnonzero(sick.image_labels[:, HRF]):
        lab, n = ndimage.label(sick.labels[b] == HRF)
        for sl in ndimage.find_objects(lab):
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            assert 2 <= max(h, w) <= 10 and min(h, w) >= 1, (b, h, w)


def test_write_dataset_layout(tmp_path) -> None:
    out = write_dataset(tmp_path / "ds", 5, healthy_fraction=0.4, seed=3, n_bscans=4, width=128)
    with open(out / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["volume", "bscan", "image", "mask", "patient",
                             "srf", "irf", "ped", "ez", "hrf", "drusen", "fluid"]
    assert len(rows) == 20 and rows[0]["volume"] == "synth_0000" and rows[0]["patient"] == "P0000"
    assert rows[0]["image"] == "synth_0000/bscans/000.png" and rows[0]["mask"] == "synth_0000/masks/000.png"
    gen = json.loads((out / "generation.json").read_text())
    assert sum(v["healthy"] for v in gen["volumes"]) == 2
    for row in rows[:8]:
        img, mask = iio.imread(out / row["image"]), iio.imread(out / row["mask"])
        assert img.shape == mask.shape == (496, 128) and img.dtype == mask.dtype == np.uint8
        for key, cid in (("srf", SRF), ("irf", IRF), ("ped", PED), ("ez", EZ), ("hrf", HRF), ("drusen", DRUSEN)):
            assert int(row[key]) == int((mask == cid).any())
        assert row["fluid"] == "0"
    side = json.loads((out / "synth_0001" / "volume.json").read_text())
    assert set(side) == {"spacing_mm", "laterality", "meta"} and len(side["spacing_mm"]) == 3
    # each volume is reproducible alone from its recorded seed and arguments
    v = gen["volumes"][1]
    again = make_volume(v["seed"], healthy=v["healthy"], **v["make_kwargs"])
    assert np.array_equal(again.volume.data[2], iio.imread(out / "synth_0001" / "bscans" / "002.png"))
    assert write_dataset(tmp_path / "ds2", 5, healthy_fraction=0.4, seed=3, n_bscans=4, width=128)
    assert (tmp_path / "ds2" / "labels.csv").read_bytes() == (out / "labels.csv").read_bytes()


def test_irf_cysts_are_dark_holes(sick: SyntheticVolume) -> None:
    """Cyst interiors are near-vitreous dark, well below the surrounding retina (Duke fluid p50 46)."""
    data = sick.volume.data
    interior = ndimage.binary_erosion(sick.labels == IRF, np.ones((1, 3, 3), bool))
    retina = _band(sick, "ILM", "ELM")
    assert np.median(data[interior]) < 0.6 * np.median(retina)


def test_drusen_lift_decays_toward_the_ilm() -> None:
    """Over drusen the RPE rises by the druse height; the ILM barely moves (displacement decays upward)."""
    s = make_volume(2, prevalence={"drusen": 1.0, **{k: 0.0 for k in ("srf", "irf", "ped", "ez", "hrf")}})
    flat = make_volume(2, healthy=True)
    rpe_lift = flat.layers["RPE"] - s.layers["RPE"]
    ilm_lift = flat.layers["ILM"] - s.layers["ILM"]
    top = rpe_lift > 0.8 * rpe_lift.max()
    assert rpe_lift.max() >= 5 and np.all(ilm_lift[top] < 0.4 * rpe_lift[top])
    assert np.allclose(s.layers["BM"], flat.layers["BM"])


def test_vitreous_histogram_near_duke(healthy: SyntheticVolume) -> None:
    """Duke vitreous: mean 25.1, sd 16.3, 12.2 % exact zeros, almost no values 1-4."""
    y = np.arange(healthy.labels.shape[1])[None, :, None]
    v = healthy.volume.data[y < healthy.layers["ILM"][:, None, :] - 5]
    assert 0.08 < np.mean(v == 0) < 0.17 and 20 < v.mean() < 31 and 11 < v.std() < 20
    assert np.mean((v >= 1) & (v <= 4)) < 0.03  # 2.2 % for seed 11, whose display offset (+5.8) is near the top


def test_band_thickness_varies_laterally_but_bounded(healthy: SyntheticVolume) -> None:
    """Outside the foveal pit, INL and ONL thickness vary along and across B-scans (smooth maps plus
    boundary irregularity) by a few percent, never collapsing or doubling."""
    for top, bottom in (("IPL_INL", "INL_OPL"), ("OPL_ONL", "ELM")):
        t = (healthy.layers[bottom] - healthy.layers[top])[:8, 40:-40]  # a peripheral strip
        rel = t / ndimage.uniform_filter(t, (1, 151), mode="nearest")
        assert 0.02 < rel.std() < 0.25 and 0.5 < rel.min() and rel.max() < 1.6, (top, rel.std())


def test_nfl_thicker_nasally_following_laterality() -> None:
    od, os_ = (make_volume(5, **SMALL, healthy=True, laterality=lat) for lat in ("OD", "OS"))
    for s, nasal_right in ((od, True), (os_, False)):
        nfl = s.layers["NFL_GCL"] - s.layers["ILM"]
        right, left = np.median(nfl[:, -60:]), np.median(nfl[:, :60])
        assert (right > 1.4 * left) if nasal_right else (left > 1.4 * right), (s.volume.laterality, left, right)


def test_vessel_shadows_darken_below(healthy: SyntheticVolume) -> None:
    """Columns under a superficial vessel are darker below BM than columns 8-15 px beside them."""
    from oct_wsss.synth import anatomy, vessels

    geom = healthy.params["geometry"]
    grid = anatomy.make_grid(49, 512, healthy.volume.spacing_mm, "OD", tuple(geom["fovea_mm"]))
    chord = vessels.vessel_map(grid, healthy.params["vessels"])[0]
    y = np.arange(496)[:, None] + 0.5
    under, beside = [], []
    for i in range(49):
        below = (y > healthy.layers["BM"][i]) & (y < healthy.layers["BM"][i] + 40)
        col = (healthy.volume.data[i] * below).sum(axis=0) / below.sum(axis=0)
        v = chord[i] > 0.6
        near = np.zeros_like(v)
        for shift in range(8, 16):
            near |= np.roll(v, shift) | np.roll(v, -shift)
        under += list(col[v])
        beside += list(col[near & (chord[i] == 0)])
    assert len(under) > 50 and np.mean(under) < 0.9 * np.mean(beside)
    assert np.mean(under) > 0.4 * np.mean(beside)  # a shadow, not a black stripe


def test_irf_can_be_large_and_multilobed() -> None:
    """Severe cases reach ~100 px; some cysts come as groups of 2-3 overlapping lobes."""
    from oct_wsss.synth import anatomy, lesions

    grid = anatomy.make_grid(49, 512, (0.1205, 0.003872, 0.011182), "OD", (0.0, 0.0))
    heights, groups = [], []
    for seed in range(40):
        plan = [les for les in lesions.plan_lesions(np.random.default_rng(seed), grid, {"irf": True}, grid.px_per_um)
                if les["kind"] == "irf"]  # the DME clusters: tests/test_synth_dme.py
        heights += [les["height_px"] for les in plan]
        groups += [sum(les["group"] == g for les in plan) for g in {les["group"] for les in plan}]
    assert 60 < max(heights) <= 100 and 2 <= max(groups) <= 3


def test_dme_cysts_come_in_lobed_clusters() -> None:
    """Duke DME's fluid B-scans (training/phantom_realism.py): median 4 pieces, the largest holds 56 % of the fluid,
    area-weighted solidity 0.87. A single smooth pocket (generator v3: 2 pieces, 96 %, 0.95) fails this."""
    from oct_wsss.synth.realism import fluid_stats

    rows = []
    for seed in (0, 1, 2):
        v = make_volume(seed, n_bscans=25, prevalence={"irf": 1.0, "srf": 0.0})
        rows += [fluid_stats(lab == IRF) for lab in v.labels if (lab == IRF).sum() >= 20]
    assert len(rows) >= 10
    assert np.median([r["pieces"] for r in rows]) >= 3
    assert np.median([r["largest"] for r in rows]) < 0.8
    assert 0.75 < np.nanmedian([r["solidity"] for r in rows]) < 0.93


def test_drusen_come_as_fields_of_small_drusen() -> None:
    """The Bonn eye: ~16 drusen per B-scan, width median 7 px, height median 3 px; the phantom draws 40-600 drusen
    per volume, mostly small (generator v3 had 3-13 per volume: one or two per B-scan, width median 23 px)."""
    from oct_wsss.synth.realism import drusen_stats

    counts, sizes = [], []
    for seed in (0, 1, 2):
        v = make_volume(seed, n_bscans=25, prevalence={"drusen": 1.0})
        for lab in v.labels:
            found = drusen_stats(lab == DRUSEN)
            counts += [len(found)] if found else []
            sizes += found
    widths, heights = np.array(sizes).T
    assert np.percentile(counts, 90) >= 6 and 4 <= np.median(widths) <= 14 and 2 <= np.median(heights) <= 6


def test_recipe_refuses_a_phantom_folder_of_another_generator_version(tmp_path) -> None:
    """A cached phantom folder from an older generator would silently mix phantoms into a run: a clear error."""
    from oct_wsss.training import Recipe
    from oct_wsss.training.errors import TrainingError

    root = write_dataset(tmp_path / "ds", 2, seed=0, n_bscans=2, height=64, width=64)
    recipe = Recipe.from_dict({"method": "student", "classes": ["srf"], "input_size": [64, 64],
                               "data": {"layout": "synth", "root": str(root), "generate": {"volumes": 2}}})
    recipe.base = tmp_path
    assert recipe.dataset("data") is not None
    record = json.loads((root / "generation.json").read_text())
    (root / "generation.json").write_text(json.dumps(record | {"generator_version": "0"}))
    with pytest.raises(TrainingError, match="generator v0.*delete the folder"):
        recipe.dataset("data")
