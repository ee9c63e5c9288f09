"""Dataset adapters for RETOUCH, AROI, the AGM reference datasets root and the Bonn RPE/BM line maps, plus the
drusen derivation from RPE and Bruch's membrane lines.

The layout is the specification: the folders these tests write into ``tmp_path`` are exactly what each adapter
reads on disk (folder and file names, pixel encodings, CSV columns). Where ``../shared/data`` holds real files of a
kind (the Bonn drusen volume), the adapter is tested on those too; the data are read by path, never copied.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import imageio.v3 as iio
import io_builders as b
import numpy as np
import pytest

from oct_wsss.classes import DRUSEN, FLUID, IRF, PED, SRF
from oct_wsss.training.data import LabelledSet, patient_split
from oct_wsss.training.datasets import layouts, load_dataset
from oct_wsss.training.datasets.aroi import load_aroi
from oct_wsss.training.datasets.bonn import load_bonn
from oct_wsss.training.datasets.drusen import drusen_masks, lines_from_layer_map
from oct_wsss.training.datasets.retouch import load_retouch


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.asarray(array, np.uint8))
    return path


def _no_leak(ds: LabelledSet) -> None:
    train, val = patient_split(ds.samples, 0.5, seed=1)
    assert train and val and not {s.patient for s in train} & {s.patient for s in val}
    assert len(train) + len(val) == len(ds.samples)


def test_new_layouts_registered() -> None:
    assert {"retouch", "aroi", "agm", "bonn"} <= set(layouts())


# ----------------------------------------------------------------------------------------------------- RETOUCH
def _retouch(root: Path) -> Path:
    """RETOUCH-TrainingSet-<Vendor>/<CASE>/{oct,reference}.{mhd,raw}; reference 1 IRF, 2 SRF, 3 PED (itk-written)."""
    rng = np.random.default_rng(0)
    for vendor, case, dtype in (("Cirrus", "TRAIN001", np.uint8), ("Spectralis", "TRAIN025", np.uint16),
                                ("Topcon", "TRAIN049", np.uint8)):
        vol = rng.integers(0, 200, (3, 10, 12)).astype(dtype)
        ref = np.zeros((3, 10, 12), np.uint8)
        ref[0, 2:4, 2:5] = 1  # B-scan 0: IRF
        ref[1, 6:8, 3:9] = 2  # B-scan 1: SRF and PED
        ref[1, 8, 3:9] = 3
        b.build_retouch(root / f"RETOUCH-TrainingSet-{vendor}" / case, vol, reference=ref)
    return root


def test_retouch_layout(tmp_path: Path) -> None:
    root = _retouch(tmp_path / "retouch")
    ds = load_dataset({"layout": "retouch", "root": str(root)})
    assert ds.classes == (SRF, IRF, PED) and len(ds.samples) == 9
    assert ds.info["cases_per_vendor"] == {"Cirrus": 1, "Spectralis": 1, "Topcon": 1}
    assert sorted({s.patient for s in ds.samples}) == ["Cirrus/TRAIN001", "Spectralis/TRAIN025", "Topcon/TRAIN049"]
    first, second, third = ds.samples[:3]
    assert first.labels == {IRF} and second.labels == {SRF, PED} and third.healthy
    mask = pickle.loads(pickle.dumps(second)).load_mask()
    assert mask.dtype == np.uint8 and int((mask == SRF).sum()) == 12 and int((mask == PED).sum()) == 6
    assert int((first.load_mask() == IRF).sum()) == 6
    assert first.load_image().shape == (10, 12) == mask.shape
    _no_leak(ds)
    only = load_retouch(root, vendors=["spectralis"])
    assert {s.patient for s in only.samples} == {"Spectralis/TRAIN025"}
    assert len(load_retouch(root / "RETOUCH-TrainingSet-Topcon" / "TRAIN049").samples) == 3  # one case as root
    with pytest.raises(ValueError, match="unknown vendor"):
        load_retouch(root, vendors=["Optovue"])
    (root / "RETOUCH-TrainingSet-Topcon" / "TRAIN049" / "reference.mhd").unlink()
    with pytest.raises(ValueError, match="TRAIN049 has no reference.mhd"):
        load_retouch(root)
    with pytest.raises(ValueError, match=r"no <case>/oct\.mhd"):
        load_retouch(_png(tmp_path / "other" / "x.png", np.zeros((2, 2))).parent)


# -------------------------------------------------------------------------------------------------------- AROI
def _aroi(root: Path) -> Path:
    """24 patient/patient<N>/raw/labeled/patient<N>_raw<NNNN>.png + patient<N>/mask/number/<same name>;
    mask ids 0-4 layer bands, 5 PED, 6 SRF, 7 IRF."""
    for n, bscans in ((1, {40: (6,), 41: ()}), (2, {12: (5, 7)}), (3, {7: (7,)})):
        base = root / "24 patient" / f"patient{n}"
        for k, lesions in bscans.items():
            name = f"patient{n}_raw{k:04d}.png"
            mask = np.repeat(np.arange(5, dtype=np.uint8), 2)[:, None].repeat(6, 1)  # layer bands 0..4
            for j, v in enumerate(lesions):
                mask[2 + 2 * j, 1:4] = v
            _png(base / "raw" / "labeled" / name, np.full((10, 6), 70))
            _png(base / "mask" / "number" / name, mask)
            _png(base / "mask" / "colour" / name, np.full((10, 6), 255))
    return root


def test_aroi_layout(tmp_path: Path) -> None:
    root = _aroi(tmp_path / "AROI - online")
    ds = load_dataset({"layout": "aroi", "root": str(root)})
    assert ds.classes == (SRF, IRF, PED) and ds.info["patients"] == 3
    by = {(s.patient, s.bscan): s for s in ds.samples}
    assert by[("patient1", 40)].labels == {SRF} and by[("patient1", 41)].healthy
    assert by[("patient2", 12)].labels == {PED, IRF} and by[("patient3", 7)].labels == {IRF}
    mask = pickle.loads(pickle.dumps(by[("patient2", 12)])).load_mask()
    assert set(np.unique(mask)) == {0, PED, IRF} and int((mask == PED).sum()) == 3  # layer bands -> background
    _no_leak(ds)
    custom = load_aroi(root, encoding={6: "fluid", 7: "fluid"})
    assert custom.classes == (FLUID,) and {s.bscan for s in custom.samples if s.labels} == {40, 12, 7}
    (root / "24 patient" / "patient3" / "mask" / "number" / "patient3_raw0007.png").unlink()
    with pytest.raises(ValueError, match="has no class-id mask"):
        load_aroi(root)


def test_aroi_colour_mask_refused(tmp_path: Path) -> None:
    base = tmp_path / "patient9"
    _png(base / "raw" / "labeled" / "patient9_raw0001.png", np.zeros((4, 4)))
    _png(base / "mask" / "number" / "patient9_raw0001.png", np.full((4, 4), 200))
    with pytest.raises(ValueError, match="colour mask"):
        load_aroi(tmp_path)


# ------------------------------------------------------------------------------------- AGM reference datasets root
def _agm_root(root: Path) -> Path:
    """datasets/RESC/{train,valid}/{original_images,label_images,gan_healthy} + RESC/mask/{train,valid},
    datasets/2015_BOE_Chiu/segment_annotation/{images,labels,mask,gan_healthy} + train.csv/valid.csv (index, path,
    label; paths relative to the folder above datasets/), datasets/oct_kaggle/{train,test}/{0.normal,1.abnormal}."""
    for split, stem, value in (("train", "P1_1", 191), ("train", "P2_1", 128), ("valid", "P3_1", 0)):
        label = np.zeros((6, 8), np.uint8)
        label[2, 1:4] = value
        for sub, array in (("original_images", np.full((6, 8), 50)), ("label_images", label),
                           ("gan_healthy", np.full((6, 8), 40))):
            _png(root / "RESC" / split / sub / f"{stem}.png", array)
        _png(root / "RESC" / "mask" / split / f"{stem}.png", np.full((6, 8), 255))
    seg = root / "2015_BOE_Chiu" / "segment_annotation"
    rows = []
    for subject, fluid in ((1, 1), (2, 0)):
        name = f"Subject_{subject:02d}_3.png"
        label = np.zeros((6, 8), np.uint8)
        label[1, 1:3] = 255 * fluid
        for sub, array in (("images", np.full((6, 8), 20)), ("labels", label), ("mask", np.full((6, 8), 255)),
                           ("gan_healthy", np.zeros((6, 8)))):
            _png(seg / sub / name, array)
        rows.append([len(rows), f"{root.name}/2015_BOE_Chiu/segment_annotation/images/{name}", fluid])
    for split, table in (("train", rows[:1]), ("valid", rows[1:])):
        with open(seg / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["", "path", "label"], *table])
    for split, folder, stem in (("train", "0.normal", "NORMAL-11-1"), ("test", "1.abnormal", "CNV-12-1"),
                                ("test", "0.normal", "NORMAL-13-1")):
        _png(root / "oct_kaggle" / split / folder / f"{stem}.jpeg", np.zeros((6, 8)))
    return root


def test_agm_reference_root(tmp_path: Path) -> None:
    root = _agm_root(tmp_path / "datasets")
    resc = load_dataset({"layout": "agm", "root": str(root), "dataset": "resc", "split": "all"})
    assert resc.name == "agm:resc:all" and resc.classes == (SRF, PED)
    assert {s.image.stem: s.labels for s in resc.samples} == {"P1_1": {SRF}, "P2_1": {PED}, "P3_1": frozenset()}
    assert set(resc.info["gan_healthy"]) == set(resc.info["retina_masks"]) == {"P1_1", "P2_1", "P3_1"}
    duke = load_dataset({"layout": "agm", "root": str(root), "dataset": "duke", "split": "train"})
    assert [(s.patient, s.labels) for s in duke.samples] == [("Subject_01", {FLUID})]
    assert int((duke.samples[0].load_mask() == FLUID).sum()) == 2 and set(duke.info["gan_healthy"]) == {
        "Subject_01_3", "Subject_02_3"}
    valid = load_dataset({"layout": "agm", "root": str(root), "dataset": "kaggle", "split": "valid"})
    assert sorted((s.patient, bool(s.labels)) for s in valid.samples) == [("12", True), ("13", False)]
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset({"layout": "agm", "root": str(root), "dataset": "retouch"})
    (tmp_path / "bare").mkdir()
    _png(tmp_path / "bare" / "x.png", np.zeros((2, 2)))
    with pytest.raises(FileNotFoundError, match="RESC is missing"):
        load_dataset({"layout": "agm", "root": str(tmp_path / "bare")})


# ------------------------------------------------------------------------------------------------------ drusen
def test_drusen_from_constructed_rpe_bm_pair() -> None:
    """BM flat at row 40, RPE normally 4 px above it; a druse raises the RPE by e = 1..5..1 px over 10 columns.
    Known area: sum(e - 1) = 20 px (pixels strictly between the raised RPE and its normal position)."""
    width, height = 60, 64
    bm = np.full((1, width), 40.0)
    rpe = bm - 4
    elevation = np.array([1, 2, 3, 4, 5, 5, 4, 3, 2, 1])
    rpe[0, 20:30] -= elevation
    mask = drusen_masks(rpe, bm, height)
    assert mask.shape == (1, height, width) and mask.dtype == bool
    assert int(mask.sum()) == int((elevation - 1).sum()) == 20
    assert mask[0].sum(axis=0)[20:30].tolist() == (elevation - 1).tolist()
    assert not mask[0, :, :20].any() and not mask[0, :, 30:].any()
    column = np.flatnonzero(mask[0, :, 24])  # e = 5 at column 24: rows 32..35 (RPE at 31, normal RPE at 36)
    assert column.tolist() == [32, 33, 34, 35]
    assert drusen_masks(rpe, bm, height, minimum_height=5).sum() == 0  # the druse's peak is 4 px: filtered
    flat = drusen_masks(np.full((2, width), 30.0), np.full((2, width), 34.0), height)
    assert not flat.any()  # RPE at its normal distance everywhere: no drusen


def test_drusen_lines_and_errors() -> None:
    plane = np.zeros((12, 5), np.uint8)
    plane[3, :4] = 255
    plane[4, 2] = 170  # a second RPE value, as in a few Bonn B-scans
    plane[8, :] = 127
    rpe, bm = lines_from_layer_map(plane, (255, 170), (127,))
    assert rpe[:2].tolist() == [3.0, 3.0] and rpe[2] == 3.5 and np.isnan(rpe[4]) and bm.tolist() == [8.0] * 5
    with pytest.raises(ValueError, match="swapped"):
        drusen_masks(np.full((1, 6), 10.0), np.full((1, 6), 4.0), 20)
    with pytest.raises(ValueError, match="fewer than 3"):
        drusen_masks(np.full((1, 6), np.nan), np.full((1, 6), 4.0), 20)


def test_drusen_measured_by_measure_labels() -> None:
    """Quantify reports drusen area / volume like every other class (measure_labels is generic by class id)."""
    from oct_wsss.evaluate.measure import measure_labels

    bm = np.full((2, 60), 40.0)
    rpe = bm - 4
    rpe[:, 20:30] -= np.array([1, 2, 3, 4, 5, 5, 4, 3, 2, 1])
    labels = drusen_masks(rpe, bm, 64).astype(np.uint8) * DRUSEN
    m = measure_labels(labels, (0.1, 0.004, 0.01))
    assert [r["pixels"] for r in m.bscans if r["class"] == "drusen"] == [20, 20]
    assert m.bscans[0]["area_mm2"] == pytest.approx(20 * 0.004 * 0.01)
    assert m.volume[0]["class"] == "drusen" and m.volume[0]["volume_mm3"] == pytest.approx(40 * 0.004 * 0.01 * 0.1)


# -------------------------------------------------------------------------------------------------------- Bonn
def _bonn(root: Path, form: tuple[str, str] = ("bscans", "rpe_bm_layers")) -> Path:
    """ROOT/bscans/NNN.png + ROOT/rpe_bm_layers/NNN.png (RPE drawn 255, BM 127, one pixel per column)."""
    for n, raise_px in ((1, 0), (2, 3), (3, 0)):
        lines = np.zeros((30, 20), np.uint8)
        lines[20, :] = 127
        lines[16, :] = 255
        if raise_px:
            lines[16, 8:12] = 0
            lines[16 - raise_px, 8:12] = 255
        name = f"{n:03d}.png" if form[0] == "bscans" else f"{n}-Input.tif"
        _png(root / form[0] / name, np.full((30, 20), 60))
        _png(root / form[1] / (f"{n:03d}.png" if form[0] == "bscans" else f"{n}-layers.png"), lines)
    return root


def test_bonn_layout_in_tmp(tmp_path: Path) -> None:
    for form in (("bscans", "rpe_bm_layers"), ("OCT-Volume-Scan", "RPE-BM-Layers")):
        root = _bonn(tmp_path / form[0] / "eye1", form)
        ds = load_dataset({"layout": "bonn", "root": str(root)})
        assert ds.classes == (DRUSEN,) and [s.bscan for s in ds.samples] == [1, 2, 3]
        assert [bool(s.labels) for s in ds.samples] == [False, True, False]
        mask = pickle.loads(pickle.dumps(ds.samples[1])).load_mask()
        assert set(np.unique(mask)) == {0, DRUSEN} and int((mask == DRUSEN).sum()) == 4 * 2  # e = 3: 2 px x 4 columns
        assert ds.info["drusen_pixels"] == 8 and {s.patient for s in ds.samples} == {"eye1"}
    with pytest.raises(ValueError, match="neither bscans"):
        load_bonn(_png(tmp_path / "x" / "a.png", np.zeros((2, 2))).parent)


def test_bonn_real_volume(shared_data: Path) -> None:
    """The shared Bonn volume (B-scans 1-70, expert RPE/BM lines): drusen derived on every B-scan it has, and the
    folder opens with the XML's physical scale; a fixed count guards the derivation against silent changes."""
    from oct_wsss.evaluate.measure import measure_labels
    from oct_wsss.io import read_volume

    root = shared_data / "bonn_drusen_volume"
    if not root.is_dir():
        pytest.skip(f"{root} is missing from the shared data")
    ds = load_bonn(root)
    assert len(ds.samples) == 70 and [s.bscan for s in ds.samples][:3] == [1, 2, 3]
    masks = np.stack([s.load_mask() for s in ds.samples])
    assert set(np.unique(masks)) == {0, DRUSEN}
    assert ds.info["drusen_pixels"] == int((masks == DRUSEN).sum()) == 51_556
    vol = read_volume(root)
    assert vol.data.shape == masks.shape == (70, 496, 512)
    assert vol.spacing_mm[1:] == pytest.approx((0.003872, 0.011182), rel=1e-3)
    volume_mm3 = measure_labels(masks, vol.spacing_mm).volume[0]["volume_mm3"]
    assert volume_mm3 == pytest.approx(51_556 * np.prod(vol.spacing_mm), rel=1e-3)
