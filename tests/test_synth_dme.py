"""Generator v5: DME cyst clusters between ILM and ELM, and the device-look randomisation keeping masks aligned."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from oct_wsss.classes import IRF
from oct_wsss.synth import look as devlook
from oct_wsss.synth import make_volume

ONLY_IRF = {"irf": 1.0, "srf": 0.0, "ped": 0.0, "ez": 0.0, "hrf": 0.0, "drusen": 0.0}
SMALL = {"n_bscans": 9, "prevalence": ONLY_IRF}


def _dme_volume(look=None):
    """The first seed whose volume holds DME clusters (seeded, so always the same one)."""
    for seed in range(20):
        v = make_volume(seed, look=look, **SMALL)
        if any(les["kind"] == "dme" for les in v.params["lesions"]):
            return v
    raise AssertionError("no DME cluster in 20 seeds")


@pytest.fixture(scope="module")
def dme_vol():
    return _dme_volume()


def _rows(v):
    return np.arange(v.labels.shape[1])[None, :, None] + 0.5


def test_cysts_lie_between_ilm_and_elm(dme_vol) -> None:
    """Every IRF pixel is below the ILM and above the ELM; some cyst column fills most of the retinal thickness."""
    y, irf = _rows(dme_vol), dme_vol.labels == IRF
    ilm, elm = dme_vol.layers["ILM"][:, None, :], dme_vol.layers["ELM"][:, None, :]
    assert irf.sum() > 500
    assert not (irf & ((y < ilm) | (y > elm))).any()
    share = irf.sum(1) / np.maximum(dme_vol.layers["ELM"] - dme_vol.layers["ILM"], 1)
    assert share.max() > 0.5


def test_cyst_mask_matches_the_dark_pixels(dme_vol) -> None:
    """Cyst interiors are vitreous-dark; inside the retina, the darkest smoothed pixels are mostly cyst."""
    data = dme_vol.volume.data.astype(np.float32)
    irf = dme_vol.labels == IRF
    y = _rows(dme_vol)
    vitreous = data[y < dme_vol.layers["ILM"][:, None, :] - 10]
    inner = ndimage.binary_erosion(irf, np.ones((1, 5, 5), bool))
    assert np.median(data[inner]) < 1.6 * np.median(vitreous) + 5
    smooth = ndimage.uniform_filter(data, (1, 7, 7))
    retina = (y > dme_vol.layers["ILM"][:, None, :] + 3) & (y < dme_vol.layers["ELM"][:, None, :] - 3)
    dark = retina & (smooth < np.percentile(smooth[retina], 3))
    assert irf[dark].mean() > 0.7


def test_septa_are_bright_and_not_fluid(dme_vol) -> None:
    """Septa (tissue between confluent lobes) are labelled background and brighter than the cysts around them."""
    from oct_wsss.synth import anatomy, dme

    p = dme_vol.params
    grid = anatomy.make_grid(SMALL["n_bscans"], 512, dme_vol.volume.spacing_mm, "OD", tuple(p["geometry"]["fovea_mm"]))
    clusters = [les for les in p["lesions"] if les["kind"] == "dme"]
    septa = np.stack([dme.masks(i, 496, dme_vol.layers, clusters, grid)[1] for i in range(SMALL["n_bscans"])])
    assert septa.sum() > 20 and not (dme_vol.labels[septa] == IRF).any()
    near = ndimage.binary_dilation(septa, np.ones((1, 5, 5), bool)) & (dme_vol.labels == IRF)
    assert dme_vol.volume.data[septa].mean() > dme_vol.volume.data[near].mean() + 10


def test_lateral_resampling_keeps_the_mask_aligned(dme_vol) -> None:
    """A look that only changes the A-scan count gives exactly the resampled image, labels and layers."""
    seed = dme_vol.params["seed"]
    wide = make_volume(seed, look={"n_ascans": 900}, **SMALL)
    data, labels, layers = devlook.resample_lateral(dme_vol.volume.data, dme_vol.labels, dme_vol.layers, 900)
    assert wide.volume.data.shape == (9, 496, 900)
    assert np.array_equal(wide.volume.data, data) and np.array_equal(wide.labels, labels)
    assert np.allclose(wide.layers["ILM"], layers["ILM"])
    assert wide.volume.spacing_mm[2] == pytest.approx(dme_vol.volume.spacing_mm[2] * 512 / 900)
    inner = ndimage.binary_erosion(wide.labels == IRF, np.ones((1, 5, 5), bool))
    y = _rows(wide)
    retina = (y > wide.layers["ILM"][:, None, :] + 3) & (y < wide.layers["ELM"][:, None, :] - 3) & (wide.labels == 0)
    assert np.median(wide.volume.data[inner]) < 0.6 * np.median(wide.volume.data[retina])


def test_vertical_shift_renders_real_vitreous_and_choroid(dme_vol) -> None:
    """Placing BM low moves anatomy and mask together; the rows above are speckled vitreous, not a flat band."""
    low = make_volume(dme_vol.params["seed"], look={"bm_row_fraction": 0.82}, **SMALL)
    assert np.median(low.layers["BM"][:, 200:300]) > np.median(dme_vol.layers["BM"][:, 200:300]) + 15
    y = _rows(low)
    irf = low.labels == IRF
    assert not (irf & (y < low.layers["ILM"][:, None, :])).any()
    top = low.volume.data[:, :60].astype(np.float32)
    assert 15 < top.mean() < 40 and top.std() > 8 and np.ptp(top.mean(axis=2), axis=1).max() < 20
    edge = np.array([low.volume.data[i, int(low.layers["ILM"][i, c]) + 4, c] > low.volume.data[i, 30, c]
                     for i in range(9) for c in range(100, 412, 8)])
    assert edge.mean() > 0.8  # the tissue starts where the ILM layer says


def test_random_looks_reproduce_and_vary() -> None:
    """Same seed, same bytes; the profile, width and display differ between seeds; unknown looks are refused."""
    a, b = (make_volume(3, n_bscans=3, look="random") for _ in range(2))
    assert np.array_equal(a.volume.data, b.volume.data) and np.array_equal(a.labels, b.labels)
    looks = [make_volume(s, n_bscans=2, height=128, width=128, look="random").params["look"] for s in range(8)]
    assert len({lk["profile"] for lk in looks}) >= 2 and len({lk["n_ascans"] for lk in looks}) == 8
    assert all(500 <= lk["n_ascans"] <= 1024 for lk in looks)
    with pytest.raises(ValueError, match="unknown device look"):
        make_volume(0, n_bscans=1, look="oct-9000")


def test_padding_rows_are_255_and_background() -> None:
    """Duke-like padding: whole rows at 255, labelled background, the rest of the B-scan untouched."""
    v = make_volume(4, look={"padding": 1.0}, **SMALL)
    full = (v.volume.data == 255).all(axis=2)
    assert full.any(axis=1).all()
    assert not v.labels[full].any()
