"""OctReadError: the one exception every reader raises, naming the file and the reason."""

from __future__ import annotations

from pathlib import Path


class OctReadError(ValueError):
    """A file or folder could not be read as an OCT volume; the message names the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep picklable (napari runs readers in worker threads/processes)
        return (type(self), (self.path, self.reason))
