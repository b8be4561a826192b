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


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """tiny_model_factory("qwen2"|"llama"|"glm") -> folder of a tiny model, built once per session."""
    from tunesmith.tiny import build_tiny_model

    built: dict[str, Path] = {}

    def make(arch: str = "qwen2") -> Path:
        if arch not in built:
            built[arch] = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}") / "model", arch)
        return built[arch]

    return make


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_model_factory) -> Path:
    return tiny_model_factory("qwen2")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The embedded default model (SmolLM2-135M-Instruct), converted once into the cache."""
    from tunesmith.model import default_model_dir

    return default_model_dir()
