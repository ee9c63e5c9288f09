"""Propagation (issue 21): a lesion on a constructed volume whose shift between B-scans is known is carried by the flow
engine (Dice >= 0.9 a few B-scans away), stops where the lesion ends, and bad requests are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from oct_wsss.propose.propagate import PropagationError, check_request, flow_engine, propagate, propagate_stream

SHIFT = (1.0, 2.5)  # rows, columns per B-scan


def shifted_volume(n: int = 9, present: int = 9, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A speckled retina-like texture with a dark ellipse, both moved by ``SHIFT`` per B-scan; the ellipse only on
    the first ``present`` B-scans. Returns (uint8 voxels, ellipse truth)."""
    rng = np.random.default_rng(0)
    texture = 150 + 60 * ndi.gaussian_filter(rng.standard_normal((h + 40, w + 60)), 3)
    rr, cc = np.mgrid[:h + 40, :w + 60]
    blob = ((rr - 50) / 14) ** 2 + ((cc - 50) / 22) ** 2 < 1
    data, truth = np.zeros((n, h, w), np.uint8), np.zeros((n, h, w), bool)
    for i in range(n):
        dy, dx = i * SHIFT[0], i * SHIFT[1]
        img = np.where(blob, 40.0, texture) if i < present else texture
        img = ndi.shift(img, (dy, dx), order=1, mode="nearest")[:h, :w]
        data[i] = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        truth[i] = (ndi.shift(blob.astype(float), (dy, dx), order=1) > 0.5)[:h, :w] if i < present else False
    return data, truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.mark.parametrize("refine", [True, False])
def test_flow_recovers_a_known_shift(refine: bool) -> None:
    data, truth = shifted_volume()
    labels = np.zeros(data.shape, np.uint8)
    labels[4][truth[4]] = 2
    res = propagate(data, labels, 4, 0, 8, params={"refine": refine, "scale": 1.0})
    assert res.proposed.tolist() == [True] * 4 + [False] + [True] * 4  # the source B-scan is the grader's
    for i in (1, 7, 0, 8):  # three and four B-scans away
        assert dice(res.labels[i] == 2, truth[i]) >= 0.9, (i, dice(res.labels[i] == 2, truth[i]))
    assert warp_only_would_miss(truth)
    assert {s.reason for s in res.stops} == {"range end"}
    assert res.provenance["engine"] == "flow" and set(res.provenance["confidence"]) == {"0", "1", "2", "3", "5",
                                                                                          "6", "7", "8"}


def warp_only_would_miss(truth: np.ndarray) -> bool:
    """The unmoved source mask is a poor answer four B-scans away, so the test measures the flow."""
    return dice(truth[4], truth[8]) < 0.8


def test_stops_early_where_the_lesion_ends() -> None:
    data, truth = shifted_volume(present=6)
    labels = np.zeros(data.shape, np.uint8)
    labels[3][truth[3]] = 1
    labels[8, :5, :5] = 4  # other classes elsewhere are kept
    res = propagate(data, labels, 3, 0, 8)
    assert res.proposed[:6].sum() == 5 and not res.proposed[6:].any()
    (forward,) = [s for s in res.stops if s.direction == 1]
    assert forward.last == 5 and "at B-scan 6" in forward.reason and forward.reason.split(" at")[0] in (
        "mask vanished", *(f"confidence {c / 100:.2f} < 0.50" for c in range(50)))
    assert (res.labels[6:] == 1).sum() == 0 and (res.labels[8, :5, :5] == 4).all()
    assert dice(res.labels[5] == 1, truth[5]) >= 0.85


def test_stream_cancel_and_classes() -> None:
    data, truth = shifted_volume(n=5)
    labels = np.zeros(data.shape, np.uint8)
    labels[2][truth[2]] = 1
    seen: list[int] = []
    stops: list = []
    for out in propagate_stream(data, labels, 2, 0, 4, flow_engine(), cancel=lambda: len(seen) >= 1, stops=stops):
        seen.append(out.index)
    assert seen == [3] and {s.reason for s in stops} == {"cancelled"}
    with pytest.raises(PropagationError, match="holds none of the classes"):
        next(propagate_stream(data, labels, 2, 0, 4, flow_engine(), classes=(3,)))


def test_cancel_computes_no_further_bscan_in_either_direction() -> None:
    """Cancel seen after a yielded B-scan: the engine is asked for nothing more (a SAM 2 frame costs 15-30 s on a
    CPU), neither the next B-scan of this direction nor the first of the other."""
    data, truth = shifted_volume(n=9)
    labels = np.zeros(data.shape, np.uint8)
    labels[4][truth[4]] = 2
    computed: list[int] = []

    def still(data, source, seeds, order, alive):  # an engine that carries each mask unchanged
        for i in order:
            computed.append(i)
            yield i, dict(seeds), dict.fromkeys(seeds, 1.0)

    flag: list[bool] = []
    stops: list = []
    stream = propagate_stream(data, labels, 4, 0, 8, still, cancel=lambda: bool(flag), stops=stops)
    assert next(stream).index == 5
    flag.append(True)  # Cancel pressed while the widget handles B-scan 5
    assert list(stream) == [] and computed == [5]
    assert [(s.direction, s.last, s.reason) for s in stops] == [(1, 5, "cancelled"), (-1, None, "cancelled")]


@pytest.mark.parametrize(("labels_shape", "source", "start", "end", "message"), [
    ((3, 8, 8), 1, 0, 2, "do not fit the volume"),
    ((4, 8, 8), 3, 0, 2, "B-scan 3 is outside the range 0:2"),
    ((4, 8, 8), 1, 0, 4, "outside the volume's B-scans 0..3"),
    ((4, 8, 8), 0, 0, 3, "holds no lesion"),
])
def test_bad_requests(labels_shape: tuple, source: int, start: int, end: int, message: str) -> None:
    labels = np.zeros(labels_shape, np.uint8)
    labels[1, 2, 2] = 1
    with pytest.raises(PropagationError, match=message):
        check_request((4, 8, 8), labels, source, start, end)
    labels[1, 3, 3] = 12
    with pytest.raises(PropagationError, match=r"ids \[12\] outside the ontology"):
        check_request((4, 8, 8), np.resize(labels, (4, 8, 8)), 1, 0, 3)


def test_cli_writes_labels_and_provenance(tmp_path) -> None:
    import json

    import tifffile

    from oct_wsss.cli import main
    from oct_wsss.io import write_labels

    data, truth = shifted_volume(n=7, present=5)
    tifffile.imwrite(tmp_path / "vol.tif", data)
    labels = np.zeros(data.shape, np.uint8)
    labels[2][truth[2]] = 2
    labels[6, :4, :4] = 3  # outside the range: unchanged
    write_labels(tmp_path / "in.tif", labels)
    out = tmp_path / "out"
    assert main([ "propagate", str(tmp_path / "vol.tif"), "--labels", str(tmp_path / "in.tif"), "--from", "2",
                 "--to", "1:5", "--out", str(out)]) == 0
    got = tifffile.imread(out / "labels.tif")
    assert got.shape == data.shape and (got[2] == labels[2]).all() and (got[[0, 6]] == labels[[0, 6]]).all()
    assert dice(got[4] == 2, truth[4]) >= 0.85 and not (got[5] == 2).any()  # the lesion ends after B-scan 4
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["engine"] == "flow" and prov["range"] == [1, 5] and prov["proposed_bscans"] == [1, 3, 4]
    forward = [s for s in prov["stops"] if s["direction"] == "forward"]
    assert forward[0]["last_filled"] == 4 and "B-scan 5" in forward[0]["reason"]
    assert str(tmp_path) not in (out / "provenance.json").read_text()  # no paths (they can hold names)


def test_cli_project_keeps_accepted_bscans_and_records_a_proposed_run(tmp_path, capsys) -> None:
    import json

    import tifffile

    from oct_wsss.cli import main
    from oct_wsss.io import read_volume, write_labels
    from oct_wsss.store import ACCEPTED, PROPOSED, CorrectionStore

    data, truth = shifted_volume(n=7, present=5)
    tifffile.imwrite(tmp_path / "vol.tif", data)
    labels = np.zeros(data.shape, np.uint8)
    labels[2][truth[2]] = 2
    write_labels(tmp_path / "in.tif", labels)
    argv = ["propagate", str(tmp_path / "vol.tif"), "--labels", str(tmp_path / "in.tif"), "--from", "2", "--to", "1:5"]
    assert main([*argv, "--out", str(tmp_path / "no"), "--project", str(tmp_path / "not-a-project")]) == 2
    assert "not a project folder" in capsys.readouterr().err and not (tmp_path / "no").exists()
    store = CorrectionStore(tmp_path / "project")
    volume = store.volume_id(read_volume(tmp_path / "vol.tif"))
    grader = np.zeros(data.shape[1:], np.uint8)
    grader[:5, :5] = 1  # the grader accepted B-scan 3 with something else
    store.accept(volume, 3, grader)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--project", str(tmp_path / "project")]) == 0
    got = tifffile.imread(out / "labels.tif")
    np.testing.assert_array_equal(got[3], grader)  # kept, though the lesion was carried through it
    assert dice(got[4] == 2, truth[4]) >= 0.85
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["proposed_bscans"] == [1, 4] and prov["accepted_kept"] == [3]
    assert store.status(volume) == {1: PROPOSED, 3: ACCEPTED, 4: PROPOSED}
    assert store.last_run(volume) == prov["project_run"] and store.current(volume, 4).proposal["engine"] == "flow"
    np.testing.assert_array_equal(store.current(volume, 4).arrays()["mask"], got[4])
    assert sorted(store.undo_run(volume, prov["project_run"])) == [1, 4] and store.status(volume) == {3: ACCEPTED}


@pytest.mark.parametrize(("argv", "message"), [
    (["--from", "6", "--to", "1:5"], "B-scan 6 is outside the range 1:5"),
    (["--from", "2", "--to", "1:9"], "outside the volume's B-scans 0..6"),
    (["--from", "2", "--to", "1-5"], "--to takes a B-scan range A:B"),
    (["--from", "2", "--to", "1:5", "--labels-of", "small"], "do not fit the volume"),
    (["--from", "2", "--to", "1:5", "--labels-of", "bad-ids"], r"ids \[9\] outside the ontology"),
    (["--from", "2", "--to", "1:5", "--engine", "sam2"], "--engine sam2 needs --sam2-checkpoint"),
])
def test_cli_refuses_bad_input(tmp_path, capsys, argv: list[str], message: str) -> None:
    import tifffile

    from oct_wsss.cli import main

    data, truth = shifted_volume(n=7, h=32, w=48, present=5)
    tifffile.imwrite(tmp_path / "vol.tif", data)
    labels = np.zeros(data.shape, np.uint8)
    labels[2, 10:20, 10:20] = 2
    kind = argv.pop(argv.index("--labels-of") + 1) if "--labels-of" in argv else ""
    if "--labels-of" in argv:
        argv.remove("--labels-of")
    if kind == "small":
        labels = labels[:, :16]
    elif kind == "bad-ids":
        labels[3, 0, 0] = 9
    tifffile.imwrite(tmp_path / "in.tif", labels)
    out = tmp_path / "out"
    assert main(["propagate", str(tmp_path / "vol.tif"), "--labels", str(tmp_path / "in.tif"), *argv,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("oct-wsss propagate: error:") and (
        __import__("re").search(message, err)), err
    assert not out.exists()
