"""Fixtures for the stream's unit tests: where the shared data lives, and small record builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`RATIONANOMALY_DATA_DIR`, default `<repo>/../shared/data`; tests needing it skip without it."""
    path = Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set RATIONANOMALY_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def loghub_dir(data_dir: Path) -> Path:
    return data_dir / "raw" / "loghub_2k"
