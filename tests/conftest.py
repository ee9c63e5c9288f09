"""Shared fixtures: where the real OCT data lives (``../shared/data``, never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real OCT samples; tests that need it skip, with the reason, where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real OCT samples not present at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_vol(shared_data: Path) -> Path:
    """A real Heidelberg Spectralis .vol file (ONH circle scan, 1 B-scan)."""
    path = shared_data / "raw_format_samples" / "heidelberg_vol_retimat_onh" / "onh.vol"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the shared data")
    return path
