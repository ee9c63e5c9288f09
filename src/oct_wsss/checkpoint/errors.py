"""The one error every checkpoint problem raises: it names the file and says what is wrong."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint file is missing, not safetensors, tampered with, or does not fit the model; names the path."""

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")

    def __reduce__(self):  # keep picklable (workers re-raise it in the main process)
        return (type(self), (self.path, self.reason))
