"""Errors the trainers raise, so callers (CLI, napari widgets) can tell a bad setup from a user's cancel."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot start or go on: no usable data, an incompatible saved state, a loss that became NaN."""


class TrainingCancelled(TrainingError):
    """``cancel()`` asked to stop; the last complete state file is intact, so a rerun resumes from it."""
