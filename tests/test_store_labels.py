"""CorrectionStore.accept(labels=...): the grader's image-level labels are stored instead of the derived ones."""

from __future__ import annotations

import numpy as np
import pytest

from oct_wsss.store import CorrectionStore


def test_given_labels_are_stored_derived_by_default_and_checked(tmp_path) -> None:
    store = CorrectionStore(tmp_path)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 1
    assert store.accept("v", 0, mask).labels == (1,)
    assert store.accept("v", 1, mask, labels=(5, 2, 5)).labels == (2, 5)
    assert store.accept("v", 2, mask, labels=()).labels == ()
    assert {c.bscan: c.labels for c in CorrectionStore(tmp_path).corrections()} == {0: (1,), 1: (2, 5), 2: ()}
    with pytest.raises(ValueError, match="lesion ids"):
        store.accept("v", 3, mask, labels=(0,))
    assert 3 not in store.status("v")
