"""The grader's corrections: ``CorrectionStore(project_dir)`` — SQLite index (WAL) + compressed masks, crash-safe."""

from __future__ import annotations

from oct_wsss.store.effort import Effort, edit_effort
from oct_wsss.store.masks import changes, derived_labels
from oct_wsss.store.store import ACCEPTED, PROPOSED, REJECTED, Correction, CorrectionStore, StoreError, new_run_id

__all__ = ["ACCEPTED", "PROPOSED", "REJECTED", "Correction", "CorrectionStore", "Effort", "StoreError", "changes",
           "derived_labels", "edit_effort", "new_run_id"]
