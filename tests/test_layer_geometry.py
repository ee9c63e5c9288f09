"""Boundary rows <-> editable paths, ETDRS grid lines, and accepted boundaries kept by the store."""

from __future__ import annotations

import numpy as np

from oct_wsss.propose.layer_geometry import boundaries_from_paths, etdrs_grid_lines, paths_from_boundaries
from oct_wsss.propose.layers import BOUNDARIES, FLUID_BAND, rebuild_bands
from oct_wsss.store import CorrectionStore


def test_paths_round_trip_to_the_same_rows() -> None:
    rows = np.cumsum(np.random.default_rng(0).uniform(1, 5, (9, 40)), axis=0)
    paths = paths_from_boundaries(rows, bscan=2)
    assert len(paths) == 9 and all((p[:, 0] == 2).all() for p in paths)
    np.testing.assert_allclose(boundaries_from_paths(paths, 40), rows)


def test_a_dragged_vertex_moves_its_boundary_and_order_is_kept() -> None:
    rows = np.tile(np.arange(9, dtype=float)[:, None] * 10 + 20, (1, 30))
    paths = paths_from_boundaries(rows, bscan=0, step=5)
    paths[0][2, 1] = 200.0  # drag ILM far below BM at A-scan 10
    edited = boundaries_from_paths(paths, 30)
    assert edited[0, 10] == 200.0 and edited[0, 12] < 200.0 < edited[0, 10] + 1
    assert (np.diff(edited, axis=0) >= 0).all()  # every boundary below pushed down with it
    assert edited[-1, 10] == 200.0


def test_paths_leave_out_nan_rows() -> None:
    rows = np.full((9, 10), np.nan)
    assert all(len(p) == 0 for p in paths_from_boundaries(rows, 0))


def test_etdrs_rings_have_the_right_radius_in_mm() -> None:
    spacing = (0.12, 0.004, 0.011)
    lines = etdrs_grid_lines((24.0, 256.0), spacing)
    assert len(lines) == 7
    for ring, radius in zip(lines[:3], (0.5, 1.5, 3.0), strict=True):
        r = np.hypot((ring[:, 0] - 24.0) * spacing[0], (ring[:, 1] - 256.0) * spacing[2])
        np.testing.assert_allclose(r, radius)
    spoke = lines[3]
    r = np.hypot((spoke[:, 0] - 24.0) * spacing[0], (spoke[:, 1] - 256.0) * spacing[2])
    np.testing.assert_allclose(r, [0.5, 3.0])


def test_accepted_boundaries_survive_reopening_and_keep_versions(tmp_path) -> None:
    store = CorrectionStore(tmp_path)
    first = np.tile(np.arange(9, dtype=np.float32)[:, None], (1, 16))
    store.accept_boundaries("vol", 3, first, BOUNDARIES)
    store.accept_boundaries("vol", 3, first + 1, BOUNDARIES)
    (tmp_path / "boundaries" / "vol" / ".0005-v1.npz.partial").write_bytes(b"half")  # a crash mid-write
    rows, names = CorrectionStore(tmp_path).accepted_boundaries("vol")[3]
    np.testing.assert_array_equal(rows, first + 1)
    assert names == BOUNDARIES and set(CorrectionStore(tmp_path).accepted_boundaries("vol")) == {3}
    assert len(list((tmp_path / "boundaries" / "vol").glob("0003-v*.npz"))) == 2  # nothing overwritten


def test_rebuilt_bands_follow_edited_boundaries_and_keep_fluid_inside_the_retina() -> None:
    rows = np.tile((np.arange(9, dtype=float) * 4 + 10)[:, None], (1, 6))  # ILM at 10 ... RPE at 38, BM at 42
    previous = np.zeros((60, 6), np.uint8)
    previous[20, :] = FLUID_BAND
    previous[50, :] = FLUID_BAND  # below BM: not fluid any more
    bands = rebuild_bands(rows, previous)
    assert bands[9, 0] == 0 and bands[10, 0] == 1 and bands[41, 0] == 7 and bands[42, 0] == 8
    assert (bands[20] == FLUID_BAND).all() and (bands[50] == 8).all()
