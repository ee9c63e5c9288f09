"""Dataset adapters (``oct_wsss.training.datasets``): resc, duke (three forms), kermany, csv.

The folders these tests write into ``tmp_path`` are the specification of each layout: file names, folder names,
pixel encodings and CSV columns exactly as the adapters expect them on disk. The real shared Duke copy is tested
too where ``../shared/data/duke_dme_chiu2015`` exists (it is never copied into the project).
"""

from __future__ import annotations

import csv
import pickle
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import scipy.io

from oct_wsss.classes import DRUSEN, FLUID, PED, SRF
from oct_wsss.training.data import LabelledSet, patient_split
from oct_wsss.training.datasets import layouts, load_dataset
from oct_wsss.training.datasets.duke import load_duke
from oct_wsss.training.datasets.kermany import load_kermany
from oct_wsss.training.datasets.manifest import load_csv
from oct_wsss.training.datasets.resc import load_resc

SHARED_DUKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "duke_dme_chiu2015"


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.asarray(array, np.uint8))
    return path


def _bitmap(*values: int, shape: tuple[int, int] = (6, 8)) -> np.ndarray:
    """A tiny label bitmap: one row block per value, the rest background."""
    out = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        out[i, : 2 + i] = v
    return out


def _no_leak(ds: LabelledSet) -> None:
    train, val = patient_split(ds.samples, 0.5, seed=1)
    assert train and val
    assert not {s.patient for s in train} & {s.patient for s in val}
    assert len(train) + len(val) == len(ds.samples)


# --------------------------------------------------------------------------------------------------------- RESC
def _resc(root: Path) -> Path:
    """RESC/{train,valid}/{original_images,label_images}/<patient>_<n>.bmp; 191 SRF, 128 PED, 255 edema area."""
    bitmaps = {("train", "P1_1"): _bitmap(191, 255), ("train", "P1_2"): _bitmap(128),
               ("train", "P1_10"): _bitmap(), ("train", "P2_1"): _bitmap(255),
               ("train", "P3_1"): _bitmap(191, 128), ("valid", "P9_1"): _bitmap(191)}
    for (split, stem), labels in bitmaps.items():
        _png(root / split / "original_images" / f"{stem}.bmp", np.full((6, 8), 40))
        _png(root / split / "label_images" / f"{stem}.bmp", labels)
    return root


def test_resc_labels_masks_and_patients(tmp_path: Path) -> None:
    ds = load_resc(_resc(tmp_path / "RESC"), split="train")
    assert ds.classes == (SRF, PED) and ds.info["labels_from"] == "label_images"
    names = [s.image.stem for s in ds.samples]
    assert names == ["P1_1", "P1_2", "P1_10", "P2_1", "P3_1"]  # natural order
    by = {s.image.stem: s for s in ds.samples}
    assert by["P1_1"].labels == {SRF} and by["P1_2"].labels == {PED} and by["P3_1"].labels == {SRF, PED}
    assert by["P2_1"].healthy and by["P1_10"].healthy  # 255 (retinal edema area) is background
    assert [by[k].patient for k in ("P1_1", "P1_10", "P2_1")] == ["P1", "P1", "P2"]
    assert by["P1_10"].bscan == 10
    mask = pickle.loads(pickle.dumps(by["P1_1"])).load_mask()  # loader survives pickling (DataLoader workers)
    raw = _bitmap(191, 255)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, SRF}
    assert (mask[raw == 191] == SRF).all() and (mask[raw == 255] == 0).all()
    assert set(np.unique(by["P3_1"].load_mask())) == {0, SRF, PED}
    assert by["P1_1"].load_image().shape == (6, 8)
    _no_leak(ds)
    both = load_dataset({"layout": "resc", "root": "RESC", "split": "all"}, base=tmp_path)
    assert len(both.samples) == 6 and {s.patient for s in both.samples} >= {"P9"}
    assert [s.patient for s in load_resc(tmp_path / "RESC", split="valid").samples] == ["P9"]


def test_resc_npy_labels_pickle_refused_unless_trusted(tmp_path: Path) -> None:
    root = _resc(tmp_path / "RESC")
    table = {stem: np.array([0, 0]) for stem in ("P1_1", "P1_2", "P1_10", "P2_1", "P3_1", "P9_1")}
    table["P2_1"] = np.array([0, 1])  # disagrees with its bitmap, so we can tell which source was used
    np.save(root / "resc_cls_labels.npy", table, allow_pickle=True)
    with pytest.warns(UserWarning, match="trust_pickle"):
        untrusted = load_resc(root)
    assert {s.image.stem: s.labels for s in untrusted.samples}["P2_1"] == frozenset()
    trusted = load_resc(root, trust_pickle=True)
    assert trusted.info["labels_from"] == "resc_cls_labels.npy"
    labels = {s.image.stem: s.labels for s in trusted.samples}
    assert labels["P2_1"] == {PED} and labels["P1_1"] == frozenset()
    for bitmap in (root / "train" / "label_images").iterdir():
        bitmap.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="trust_pickle"):
            load_resc(root)
    assert load_resc(root, trust_pickle=True).samples[0].mask is None


def test_resc_patient_folders_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "RESC"
    for patient in ("patA", "patB"):
        for n in (1, 2):
            _png(root / "train" / "original_images" / patient / f"{n}.png", np.zeros((4, 4)))
            _png(root / "train" / "label_images" / patient / f"{n}.png", _bitmap(191, shape=(4, 4)))
    ds = load_resc(root)
    assert [s.patient for s in ds.samples] == ["patA", "patA", "patB", "patB"]
    assert all(s.labels == {SRF} for s in ds.samples)
    assert {s.patient for s in load_resc(root, patient_pattern=r"pat(\w)/").samples} == {"A", "B"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_resc(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_resc(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="valid"):
        load_resc(root, split="valid")
    with pytest.raises(ValueError, match="split"):
        load_resc(root, split="test")


# --------------------------------------------------------------------------------------------------------- Duke
def _duke_reference(datasets: Path) -> Path:
    """datasets/2015_BOE_Chiu/segment_annotation/{images,labels}/<name>.png + train.csv/valid.csv (index,path,label);
    CSV paths are relative to the folder above datasets/ (the reference code's working directory)."""
    seg = datasets / "2015_BOE_Chiu" / "segment_annotation"
    rows = {"train": [], "valid": []}
    for subject, split in ((1, "train"), (2, "train"), (3, "valid")):
        for n, fluid in ((5, True), (6, False)):
            name = f"Subject_{subject:02d}_{n}.png"
            label = np.zeros((6, 8), np.uint8)
            label[1, 2:5] = 255 if fluid else 0
            label[4, 0] = 100  # below the reference's 150 cut: background
            _png(seg / "images" / name, np.full((6, 8), 30))
            _png(seg / "labels" / name, label)
            path = f"datasets/2015_BOE_Chiu/segment_annotation/images/{name}"
            rows[split].append([len(rows[split]), path, int(fluid)])
    _png(datasets / "RESC" / "train" / "original_images" / "R7_3.bmp", np.zeros((6, 8)))  # a RESC fluid image
    rows["train"].append([99, "datasets/RESC/train/original_images/R7_3.bmp", 1])
    _png(datasets / "oct_kaggle" / "train" / "0.normal" / "NORMAL-4321-2.jpeg", np.zeros((6, 8)))  # Kermany healthy
    rows["train"].append([100, "datasets/oct_kaggle/train/0.normal/NORMAL-4321-2.jpeg", 0])
    for split, table in rows.items():
        with open(seg / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["", "path", "label"], *table])
    return seg


def test_duke_reference_layout(tmp_path: Path) -> None:
    seg = _duke_reference(tmp_path / "datasets")
    for root in (tmp_path / "datasets", seg):
        ds = load_duke(root, split="train")
        assert ds.info["form"] == "reference" and ds.classes == (FLUID,)
        assert sorted(s.patient for s in ds.samples) == ["4321", "R7"] + ["Subject_01"] * 2 + ["Subject_02"] * 2
    by = {s.image.stem: s for s in ds.samples}
    assert by["Subject_01_5"].labels == {FLUID} and by["Subject_01_6"].healthy and by["R7_3"].labels == {FLUID}
    assert by["R7_3"].mask is None and by["NORMAL-4321-2"].healthy  # outside images/: no Duke label map
    mask = by["Subject_01_5"].load_mask()
    assert mask[1, 2:5].tolist() == [FLUID] * 3 and mask[4, 0] == 0 and mask.sum() == 3 * FLUID
    assert [s.patient for s in load_duke(seg, split="valid").samples] == ["Subject_03"] * 2
    assert len(load_duke(seg, split="all").samples) == 8
    _no_leak(load_duke(seg, split="all"))
    with open(seg / "valid.csv", "a", newline="") as f:
        csv.writer(f).writerow([5, "datasets/2015_BOE_Chiu/segment_annotation/images/missing.png", 1])
    with pytest.raises(ValueError, match=r"valid\.csv, line 4: image .*missing\.png"):
        load_duke(seg, split="valid")


def _duke_mat(folder: Path) -> Path:
    """Subject_XX.mat: images (H, W, N) uint8 and manualFluid1 (H, W, N), NaN for B-scans not annotated."""
    folder.mkdir(parents=True)
    for subject in (1, 2, 3):
        images = np.arange(6 * 8 * 4, dtype=np.uint8).reshape(6, 8, 4) + subject
        fluid = np.zeros((6, 8, 4))
        fluid[..., 0] = np.nan
        fluid[..., 2] = np.nan
        fluid[2, 3:6, 1] = 1.0  # B-scan 1 has fluid, B-scan 3 is annotated without fluid
        scipy.io.savemat(folder / f"Subject_{subject:02d}.mat", {"images": images, "manualFluid1": fluid,
                                                                  "manualLayers1": np.zeros((8, 8, 4))})
    return folder


def test_duke_mat_files(tmp_path: Path) -> None:
    root = _duke_mat(tmp_path / "2015_BOE_Chiu")
    ds = load_dataset({"layout": "duke", "root": str(tmp_path)})
    assert ds.info["form"] == "mat" and len(ds.samples) == 6
    assert [(s.patient, s.bscan) for s in ds.samples[:2]] == [("Subject_01", 1), ("Subject_01", 3)]
    first, second = ds.samples[:2]
    assert first.labels == {FLUID} and second.healthy
    restored = pickle.loads(pickle.dumps(first))
    expected = np.arange(6 * 8 * 4, dtype=np.uint8).reshape(6, 8, 4)[..., 1] + 1
    assert np.array_equal(restored.load_image(), expected)
    mask = restored.load_mask()
    assert mask[2, 3:6].tolist() == [FLUID] * 3 and int(mask.sum()) == 3 * FLUID
    assert second.load_mask().max() == 0
    _no_leak(ds)
    assert len(load_duke(root / "Subject_02.mat").samples) == 2
    with pytest.raises(ValueError, match="no splits"):
        load_duke(root, split="train")
    with pytest.raises(ValueError, match="manualFluid2"):
        load_duke(root, grader=2)
    (root / "Subject_04.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match="Subject_04.mat is not a MATLAB v5"):
        load_duke(root)


def test_duke_shared_form_in_tmp(tmp_path: Path) -> None:
    """index.csv (image, label, subject, annotated_bscan_order, has_fluid, source_split) + images/ + labels/."""
    root = tmp_path / "duke_copy"
    rows = []
    for subject, split in (("Subject_01", "train"), ("Subject_07", "val")):
        for order in (0, 1):
            label = np.full((5, 5), 3, np.uint8)
            label[0] = 0
            if order:
                label[2, 1:4] = 9
            _png(root / "images" / f"{subject}_{order:02d}.png", np.full((5, 5), 90))
            _png(root / "labels" / f"{subject}_{order:02d}.png", label)
            rows.append([f"images/{subject}_{order:02d}.png", f"labels/{subject}_{order:02d}.png", subject, order,
                         order, split])
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "label", "subject", "annotated_bscan_order", "has_fluid",
                                  "source_split"], *rows])
    ds = load_duke(root)
    assert ds.info["form"] == "shared" and [s.labels for s in ds.samples] == [frozenset(), {FLUID}] * 2
    mask = ds.samples[1].load_mask()
    assert mask[2, 1:4].tolist() == [FLUID] * 3 and int((mask > 0).sum()) == 3  # layers 0-8 -> background
    assert [s.patient for s in load_duke(root, split="valid").samples] == ["Subject_07"] * 2


@pytest.mark.skipif(not SHARED_DUKE.is_dir(), reason=f"shared Duke copy not present at {SHARED_DUKE}")
def test_duke_shared_real_copy() -> None:
    ds = load_dataset({"layout": "duke", "root": str(SHARED_DUKE)})
    assert ds.info["form"] == "shared" and ds.classes == (FLUID,)
    assert len(ds.samples) == 55
    assert {s.patient for s in ds.samples} == {"Subject_01", "Subject_03", "Subject_04", "Subject_07", "Subject_09"}
    assert sum(not s.healthy for s in ds.samples) == 34
    fluid_px = 0
    for s in ds.samples:
        mask = s.load_mask()
        assert set(np.unique(mask)) <= {0, FLUID}
        assert (FLUID in mask) == (FLUID in s.labels)
        fluid_px += int((mask == FLUID).sum())
    assert fluid_px == 135_307  # PROVENANCE.md's count
    assert ds.samples[0].load_image().shape == ds.samples[0].load_mask().shape
    _no_leak(ds)


# ------------------------------------------------------------------------------------------------------ Kermany
def _kermany(root: Path) -> Path:
    """OCT2017/{train,test}/{CNV,DME,DRUSEN,NORMAL}/<CLASS>-<patient>-<n>.jpeg (patients shared across classes)."""
    files = {"train": ["CNV-1001-1", "CNV-1001-2", "DRUSEN-1001-3", "DME-2002-1", "NORMAL-3003-1", "NORMAL-3003-10",
                       "NORMAL-3003-2", "NORMAL-4004-1"], "test": ["CNV-5005-1", "NORMAL-6006-1"]}
    for split, stems in files.items():
        for stem in stems:
            _png(root / split / stem.split("-")[0] / f"{stem}.jpeg", np.full((6, 8), 50))
    return root


def test_kermany_labels_patients_and_folders(tmp_path: Path) -> None:
    _kermany(tmp_path / "OCT2017 ")  # the Kaggle zip's folder name ends in a space
    ds = load_kermany(tmp_path, split="train")
    assert ds.classes == (DRUSEN, FLUID) and all(s.mask is None for s in ds.samples)
    by = {s.image.stem: s for s in ds.samples}
    assert by["CNV-1001-1"].labels == {FLUID} and by["DME-2002-1"].labels == {FLUID}
    assert by["DRUSEN-1001-3"].labels == {DRUSEN} and by["NORMAL-3003-1"].healthy
    assert by["CNV-1001-1"].patient == by["DRUSEN-1001-3"].patient == "1001"
    assert by["NORMAL-3003-10"].bscan == 10 and by["DRUSEN-1001-3"].volume == "DRUSEN"
    assert [s.image.stem for s in ds.samples if s.volume == "NORMAL"] == [
        "NORMAL-3003-1", "NORMAL-3003-2", "NORMAL-3003-10", "NORMAL-4004-1"]
    assert ds.info["folders"] == {"CNV": 2, "DME": 1, "DRUSEN": 1, "NORMAL": 4}
    _no_leak(ds)
    normal = load_kermany(tmp_path, split="train", folders=["NORMAL"])
    assert len(normal.samples) == 4 and all(s.healthy for s in normal.samples)
    remapped = load_kermany(tmp_path, split="train", mapping={"CNV": ["srf", "ped"]})
    assert {s.image.stem: s.labels for s in remapped.samples}["CNV-1001-1"] == {SRF, PED}
    assert SRF in remapped.classes and PED in remapped.classes
    assert len(load_kermany(tmp_path, split="all").samples) == 10
    with pytest.raises(ValueError, match="unknown lesion class"):
        load_kermany(tmp_path, mapping={"CNV": ["cnv"]})
    (tmp_path / "OCT2017 " / "train" / "OTHER").mkdir()
    with pytest.raises(ValueError, match="no mapping for folder"):
        load_kermany(tmp_path)
    with pytest.raises(FileNotFoundError, match="val"):
        load_kermany(tmp_path, split="val")


def test_kermany_reference_oct_kaggle(tmp_path: Path) -> None:
    """datasets/oct_kaggle/{train,test}/{0.normal,1.abnormal}/ beside other datasets (RESC/train/...)."""
    _png(tmp_path / "RESC" / "train" / "original_images" / "P1_1.bmp", np.zeros((4, 4)))
    kaggle = tmp_path / "oct_kaggle"
    _png(kaggle / "train" / "0.normal" / "NORMAL-11-1.jpeg", np.zeros((4, 4)))
    _png(kaggle / "test" / "0.normal" / "NORMAL-12-1.jpeg", np.zeros((4, 4)))
    _png(kaggle / "test" / "1.abnormal" / "DME-13-4.jpeg", np.zeros((4, 4)))
    test = load_dataset({"layout": "kermany", "root": str(tmp_path), "split": "test"})
    assert [(s.patient, s.volume, s.labels) for s in test.samples] == [
        ("12", "0.normal", frozenset()), ("13", "1.abnormal", frozenset({FLUID}))]
    assert len(load_kermany(kaggle, split="train").samples) == 1


# ---------------------------------------------------------------------------------------------------------- CSV
def _manifest(folder: Path) -> Path:
    """manifest.csv: image (relative to the CSV), patient, mask (ontology ids), volume, bscan, split, srf, ped."""
    _png(folder / "b" / "a0.png", np.zeros((4, 4)))
    _png(folder / "b" / "a1.png", np.zeros((4, 4)))
    _png(folder / "b" / "c0.png", np.zeros((4, 4)))
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 1] = SRF
    _png(folder / "m" / "a0.png", mask)
    rows = [["Image", "patient", "mask", "volume", "bscan", "split", "srf", "ped", "notes"],
            ["b/a0.png", "pa", "m/a0.png", "va", "0", "train", "1", "0", "x"],
            ["b/a1.png", "pa", "", "va", "1", "train", "0", "1", ""],
            ["b/c0.png", "pc", "", "vc", "0", "test", "0", "0", ""]]
    with open(folder / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return folder / "manifest.csv"


def test_csv_manifest(tmp_path: Path) -> None:
    table = _manifest(tmp_path / "set")
    for root in (table, table.parent):
        ds = load_csv(root)
        assert ds.classes == (SRF, PED) and len(ds.samples) == 3
    assert [s.labels for s in ds.samples] == [{SRF}, {PED}, frozenset()]
    assert [(s.patient, s.volume, s.bscan) for s in ds.samples] == [("pa", "va", 0), ("pa", "va", 1), ("pc", "vc", 0)]
    assert ds.samples[0].load_mask()[1, 1] == SRF and ds.samples[1].mask is None
    assert [s.patient for s in load_csv(table, split="test").samples] == ["pc"]
    assert load_dataset({"layout": "csv", "root": "set"}, base=tmp_path).label_matrix().tolist() == [
        [1, 0], [0, 1], [0, 0]]
    _no_leak(ds)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: [r[:1] + r[2:] for r in rows], r"manifest\.csv: missing column\(s\) patient"),
    (lambda rows: [rows[0], rows[1][:6] + ["2", "0", ""]], r"line 2: column srf must be 0 or 1, got '2'"),
    (lambda rows: [rows[0], ["b/zz.png", *rows[1][1:]]], r"line 2: image file .*zz\.png does not exist"),
    (lambda rows: [rows[0], rows[1][:4] + ["-1", *rows[1][5:]]], r"line 2: bscan must be a non-negative integer"),
    (lambda rows: [rows[0], rows[1][:2] + ["m/none.png", *rows[1][3:]]], r"line 2: mask file"),
    (lambda rows: [rows[0]], "no rows"),
])
def test_csv_manifest_errors(tmp_path: Path, edit, message: str) -> None:
    table = _manifest(tmp_path)
    with open(table, newline="") as f:
        rows = edit(list(csv.reader(f)))
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ValueError, match=message):
        load_csv(table)


def test_registry_and_missing_roots(tmp_path: Path) -> None:
    assert {"resc", "duke", "kermany", "csv", "synth"} <= set(layouts())
    (tmp_path / "empty").mkdir()
    for loader in (load_resc, load_duke, load_kermany, load_csv):
        with pytest.raises(FileNotFoundError):
            loader(tmp_path / "missing")
        with pytest.raises(ValueError, match="empty"):
            loader(tmp_path / "empty")


def test_recipes_name_registered_layouts() -> None:
    """training/agm-{resc,duke,kermany}.yaml: data blocks name a registered layout and only options it takes."""
    import inspect

    import yaml

    from oct_wsss.training.datasets import _adapters

    folder = Path(__file__).resolve().parents[1] / "training"
    recipes = [folder / f"agm-{name}.yaml" for name in ("resc", "duke", "kermany")]
    adapters = _adapters()
    for path in recipes:
        recipe = yaml.safe_load(path.read_text())
        assert recipe["method"] == "agm"
        blocks = [recipe["data"], recipe.get("val_data"), recipe.get("ganomaly", {}).get("data")]
        for block in filter(None, blocks):
            params = inspect.signature(adapters[block["layout"]]).parameters
            assert set(block) - {"layout", "root"} <= set(params), (path.name, block)
