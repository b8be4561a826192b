"""Training on a character card: two steps on a tiny model, character.json next to the adapter, export copies it.

The card trained on is SillyTavern's default card, Seraphina (datasets/character-cards; we did not write it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import write_conversations
from tunesmith.character import CHARACTER_FILE, Character, load_character
from tunesmith.cli import main
from tunesmith.conversation import Conversation
from tunesmith.data import load
from tunesmith.errors import ConfigError
from tunesmith.template import load_template
from tunesmith.train import train_from_config

CARDS = Path(__file__).resolve().parents[1] / "datasets" / "character-cards"


def _cfg(model: Path, out: Path, train, **over) -> dict:
    return {"model": str(model), "output_dir": str(out), "data": {"train": train, "max_source_len": 256,
                                                                   "max_target_len": 64},
            "dtype": "fp32", "batch_size": 2, "lr": 5e-3, "max_steps": 2, "logging_steps": 1, "warmup": 0,
            "device": "cpu", "plot": False, **over}


@pytest.fixture(scope="module")
def card_run(tiny_qwen2, tmp_path_factory):
    """Two steps on the Seraphina PNG, given as plain training data (the format is found from the file)."""
    out = tmp_path_factory.mktemp("seraphina") / "run"
    return train_from_config(_cfg(tiny_qwen2, out, str(CARDS / "Seraphina.png")))


def test_two_steps_on_a_card_save_its_character_next_to_the_adapter(card_run):
    assert card_run.summary["steps"] == 2
    char = load_character(card_run.adapter_dir)
    assert char is not None and char.name == "Seraphina" and char.spec == "chara_card_v2"
    assert char.greetings[0].startswith("*You wake with a start") and char.source == "Seraphina.png"
    assert char.card["creator"] == "OtisAlejandro"  # the card's own data travels unchanged
    (greeting,) = load(CARDS / "Seraphina.png")
    assert char.persona == greeting.system == load_template(card_run.adapter_dir).default_system
    saved = json.loads((card_run.adapter_dir / CHARACTER_FILE).read_text(encoding="utf-8"))
    assert saved == char.to_dict() and set(saved) >= {"name", "persona", "greetings", "card"}


@pytest.mark.parametrize("how", [["--merge"], ["--no-merge"], ["--gguf", "f16"]], ids=lambda h: h[-1])
def test_export_copies_the_character(card_run, tmp_path, how):
    out = tmp_path / "exported"
    assert main(["export", str(card_run.adapter_dir), "-o", str(out), *how]) == 0
    assert load_character(out) == load_character(card_run.adapter_dir)


def test_the_character_key_names_a_card_for_other_data(tiny_qwen2, tmp_path):
    """Plain dialogue without system text + `character: card.json`: the card's persona and name go with it."""
    train = write_conversations(tmp_path / "train.jsonl", [Conversation.single_turn(f"Hello {i}?", "*smiles* Rest.")
                                                           for i in range(4)])
    result = train_from_config(_cfg(tiny_qwen2, tmp_path / "run", str(train),
                                    character=str(CARDS / "Seraphina.json")))
    char = load_character(result.adapter_dir)
    assert char.name == "Seraphina" and char.source == "Seraphina.json"
    assert load_template(result.adapter_dir).default_system == char.persona  # trained with the persona
    # a later run started from this adapter keeps its character without naming it again
    again = train_from_config(_cfg(tiny_qwen2, tmp_path / "again", str(train), init_adapter=str(result.adapter_dir)))
    assert load_character(again.adapter_dir) == char


def test_a_bad_character_card_fails_before_the_model_loads(tiny_qwen2, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": ""}}), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", f"model={tmp_path / 'no-such-model'}", f"output_dir={out}", f"data.train={bad}",
            f"character={bad}", "device=cpu"]
    assert main(args) == 2  # the card is read first: the missing model is never reached
    err = capsys.readouterr().err
    assert f'{bad}: field "data.name" is empty' in err and "Traceback" not in err
    assert not (out / "adapter").exists()
    assert main([*args[:-2], f"character={tmp_path}", "device=cpu"]) == 2
    assert f"character: {tmp_path} holds no character.json" in capsys.readouterr().err


def test_load_character_says_what_is_wrong_with_a_character_json(tmp_path):
    assert load_character(tmp_path) is None
    (tmp_path / CHARACTER_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"character.json:1: invalid JSON"):
        load_character(tmp_path)
    (tmp_path / CHARACTER_FILE).write_text(json.dumps({"name": "A", "persona": "p", "greetings": "hi"}),
                                           encoding="utf-8")
    with pytest.raises(ConfigError, match=r'character.json: field "greetings" must be a non-empty list'):
        load_character(tmp_path)
    char = Character(name="A", persona="p", greetings=["hi"])
    (tmp_path / CHARACTER_FILE).write_text(json.dumps(char.to_dict()), encoding="utf-8")
    assert load_character(tmp_path) == char
