"""``oct-wsss propose`` on a folder of volumes or a CSV manifest: one folder per volume, resumable, sharded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oct_wsss.cli import main
from oct_wsss.cli.batch import Item, batch_items, is_batch, shard
from oct_wsss.io import read_labels
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.synth import make_volume
from oct_wsss.training.student import student_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=4, width=4, depth=3))
    return student_checkpoint(net, (1, 2, 3), (32, 32), training={}).save(
        tmp_path_factory.mktemp("w") / "student.safetensors")


@pytest.fixture
def cohort(tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i in range(4):
        np.save(folder / f"eye{i}.npy", make_volume(i, n_bscans=2, height=48, width=40).volume.data)
    return folder


def _propose(src, out, ckpt, *extra: str) -> int:
    return main(["propose", str(src), "--method", "student", "--checkpoint", str(ckpt), "--out", str(out),
                 "--device", "cpu", *extra])


def test_a_folder_of_volumes_gives_one_output_folder_each_and_reruns_skip(cohort, ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert is_batch(cohort)
    assert _propose(cohort, out, ckpt) == 0
    assert sorted(p.name for p in out.iterdir()) == ["eye0", "eye1", "eye2", "eye3"]
    for i in range(4):
        assert read_labels(out / f"eye{i}" / "labels.tif").shape == (2, 48, 40)
        assert (out / f"eye{i}" / "provenance.json").is_file()
    assert "4 proposed, 0 already done" in capsys.readouterr().out
    stamp = (out / "eye2" / "labels.tif").stat().st_mtime_ns
    assert _propose(cohort, out, ckpt) == 0
    assert "0 proposed, 4 already done" in capsys.readouterr().out
    assert (out / "eye2" / "labels.tif").stat().st_mtime_ns == stamp


def test_after_a_crash_only_unfinished_volumes_are_redone(cohort, ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert _propose(cohort, out, ckpt) == 0
    # a crash mid-volume leaves only the hidden partial folder; the finished volume was never renamed into place
    (out / "eye1").rename(out / ".eye1.partial")
    (out / ".eye1.partial" / "provenance.json").unlink()
    capsys.readouterr()
    assert _propose(cohort, out, ckpt) == 0
    assert "1 proposed, 3 already done" in capsys.readouterr().out
    assert (out / "eye1" / "provenance.json").is_file() and not (out / ".eye1.partial").exists()


def test_shards_split_the_cohort_without_overlap(cohort, ckpt, tmp_path) -> None:
    items = batch_items(cohort)
    parts = [shard(items, i, 3) for i in range(3)]
    assert sorted(i.id for p in parts for i in p) == [i.id for i in items]
    out = tmp_path / "out"
    assert _propose(cohort, out, ckpt, "--shard", "1/3") == 0
    assert sorted(p.name for p in out.iterdir()) == [i.id for i in parts[1]] == ["eye1"]
    assert _propose(cohort, out, ckpt, "--shard", "3/3") == 2
    assert _propose(cohort, out, ckpt, "--shard", "x") == 2


def test_a_csv_manifest_names_volumes_and_a_bad_one_does_not_stop_the_rest(cohort, ckpt, tmp_path, capsys) -> None:
    manifest = cohort / "manifest.csv"
    manifest.write_text("path,id\neye0.npy,first\neye3.npy,second\nmissing.npy,third\n")
    assert batch_items(manifest) == sorted([Item("first", cohort / "eye0.npy"), Item("second", cohort / "eye3.npy"),
                                            Item("third", cohort / "missing.npy")], key=lambda i: i.id)
    out = tmp_path / "out"
    assert _propose(manifest, out, ckpt) == 2
    err = capsys.readouterr().err
    assert "1 volumes failed" in err and "third" in err
    assert (out / "first" / "labels.tif").is_file() and (out / "second" / "labels.tif").is_file()
    assert "third" in (out / "failed-0-of-1.csv").read_text() and not (out / "third").exists()
    manifest.write_text("path,id\neye0.npy,same\neye1.npy,same\n")
    assert _propose(manifest, out, ckpt) == 2
    assert "occur twice" in capsys.readouterr().err


def test_a_single_volume_is_not_a_batch(cohort, ckpt, tmp_path, capsys) -> None:
    bscans = tmp_path / "bscans"
    bscans.mkdir()
    from skimage.io import imsave

    imsave(bscans / "000.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    assert not is_batch(bscans) and not is_batch(cohort / "eye0.npy")
    assert _propose(cohort / "eye0.npy", tmp_path / "one", ckpt, "--shard", "0/2") == 2
    assert "--shard splits a batch" in capsys.readouterr().err
