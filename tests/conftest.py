"""Shared fixtures: the real datasets in ../shared/datasets and tiny offline models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNESMITH_SHARED", REPO.parent / "shared")) / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """../shared/datasets (override with TUNESMITH_SHARED=/path/to/shared)."""
    if not SHARED.is_dir():
        pytest.fail(f"real test data not found at {SHARED} (set TUNESMITH_SHARED)")
    return SHARED
