"""Shared fixtures: the repository's datasets, tiny offline models, random LoRA adapters and an engine that serves one.

Everything a test reads lives in the checkout (datasets/ at the root) or is built here; nothing comes
from beside the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import make_lora_adapter

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The real data sets carried by the repository (see datasets/SOURCES.md)."""
    assert DATASETS.is_dir(), f"{DATASETS} is missing: the repository carries its data"
    return DATASETS


@pytest.fixture(scope="session")
def rolebench_dir(datasets_dir) -> Path:
    """RoleBench-zh as published: general/ and role_specific/ train, test and RoleGPT baseline, profiles-zh/."""
    return datasets_dir / "rolebench-zh"


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


@pytest.fixture(scope="session")
def make_adapter(tmp_path_factory):
    """make_adapter(model_dir, seed=1, template="auto", default_system=None) -> a saved LoRA adapter with random,
    non-zero weights (so it changes the answers) and its template.json; built once per set of arguments."""
    built: dict[tuple, Path] = {}

    def make(model_dir: Path, *, seed: int = 1, template: str = "auto", default_system: str | None = None) -> Path:
        key = (str(model_dir), seed, template, default_system)
        if key not in built:
            out = tmp_path_factory.mktemp(f"adapter-seed{seed}") / "adapter"
            built[key] = make_lora_adapter(Path(model_dir), out, seed=seed, template=template,
                                           default_system=default_system)
        return built[key]

    return make


@pytest.fixture(scope="session")
def libai_adapter(tiny_qwen2, make_adapter) -> Path:
    """A random adapter on the tiny Qwen2 that carries 李白's system prompt, as a trained role adapter would."""
    return make_adapter(tiny_qwen2, seed=5, default_system="你是李白")


@pytest.fixture(scope="module")
def engine_with_adapter(tiny_qwen2, libai_adapter):
    """An Engine on the tiny Qwen2 with the adapter "libai" (one per test module: modules change its state)."""
    from tunesmith.infer.engine import Engine

    eng = Engine.load(str(tiny_qwen2), {"libai": str(libai_adapter)}, device="cpu")
    yield eng
    eng.close()
