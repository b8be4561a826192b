"""Every recipe in configs/ runs from a fresh clone: its settings check out and its data loads from the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.train.config import load_config
from tunesmith.train.training_data import load_conversations

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def _paths(spec) -> list[str]:
    """Every file path a dataset spec names."""
    if isinstance(spec, list):
        return [p for s in spec for p in _paths(s)]
    if isinstance(spec, dict):
        path = spec.get("path")
        return list(path) if isinstance(path, list) else [path] if path else []
    return [os.fspath(spec)] if spec else []


def test_there_are_recipes():
    assert {p.name for p in RECIPES} >= {"rolebench_libai.yaml", "ie_cls.yaml", "sanguo_cosplay.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_data_lives_in_the_repository_and_loads(recipe, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes are run from the repository root, as their first line says
    cfg = load_config(recipe.relative_to(REPO))
    for path in _paths(cfg.data.train) + _paths(cfg.data.dev):
        resolved = (REPO / path).resolve()
        assert resolved.is_relative_to(REPO), f"{recipe.name}: {path} is outside the repository"
        assert resolved.exists(), f"{recipe.name}: {path} is not in the repository"
    train, dev = load_conversations(cfg)
    assert len(train) >= 100, f"{recipe.name}: only {len(train)} training conversations"
    assert dev, f"{recipe.name}: no dev conversations (keep_best and the dev loss need some)"
    assert all(c.answer for c in train[:50] + dev[:50]), f"{recipe.name}: conversations without an answer"
    assert not any(c.meta.get("split") == "test" for c in train), f"{recipe.name}: test data in training"


def test_novel_recipe_mines_the_book(monkeypatch):
    """The cosplay recipe reads 三国演义 itself: context ends at the speech verb, the answer is the quoted speech."""
    monkeypatch.chdir(REPO)
    train, dev = load_conversations(load_config("configs/sanguo_cosplay.yaml"))
    convs = train + dev
    assert 8_500 <= len(convs) <= 10_000  # ~9,100 quoted speeches in the book
    assert {c.meta["book"] for c in convs} == {"三国演义"}
    assert sum(c.messages[0].content.endswith(("曰：", "道：", "曰:", "道:")) for c in convs) > 0.8 * len(convs)
    assert all(c.messages[1].content.startswith("“") for c in convs[:200])


def test_train_takes_settings_without_a_recipe(capsys):
    data = str(REPO / "datasets/chatglm-mixed-ie-cls/mixed_dev_dataset.jsonl")
    assert main(["train", "model=default", f"data.train={data}", "max_steps=7", "lora.rank=4", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and f"train: {data}" in out and "rank: 4" in out


def test_train_without_recipe_still_names_a_missing_file(capsys):
    assert main(["train", "no_such_recipe.yaml", "max_steps=7"]) == 2
    assert "no_such_recipe.yaml" in capsys.readouterr().err
