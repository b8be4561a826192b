"""The `sillytavern` format: chats SillyTavern wrote (tests/data/sillytavern, README there) -> conversations, swipe
pairs for DPO, the older layouts (hand-made from the real chat) and bad files (FILE:LINE, exit 2, nothing written).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.conversation import Message
from tunesmith.data import load
from tunesmith.data.formats import claimed_by
from tunesmith.errors import DataError
from tunesmith.preference import kind_of

ST = Path(__file__).parent / "data" / "sillytavern"
ONE = ST / "kestrel_swipes.jsonl"
GROUP = ST / "group_pass_watch.jsonl"
CARD = ST / "cards" / "Kestrel.json"
KESTREL_LINE = "Write Kestrel's next reply in a fictional chat between Kestrel and Alex."
GREETING = "*A hooded falcon shifts on Kestrel's glove.* State your business, Alex."
ONE_TO_ONE = [
    Message("assistant", GREETING),
    Message("user", "I come to trade, Kestrel. Salt and iron."),
    Message("assistant", "Iron? *She narrows her eyes.* Show me."),  # swipe_id 1 of 3
    Message("user", "Here, look. Clean bars, no rust."),
    Message("assistant", "*She weighs a bar in her hand.* Fine work. Two nights' shelter for three bars."),
    Message("user", "Deal."),  # the comment and the hidden user line after it are left out
    Message("assistant", "Then follow me, and keep your hands where the bird can see them."),
]


def _seraphina_greeting() -> str:
    lines = [json.loads(x) for x in GROUP.read_text(encoding="utf-8").splitlines()]
    return next(m["mes"] for m in lines if m.get("name") == "Seraphina")


def test_a_one_to_one_chat_with_swipes():
    assert claimed_by(ONE) == "sillytavern"
    [conv] = load(ONE)  # found without --from
    assert conv.system == KESTREL_LINE + "\nThe wind picks up; snow starts to fall."  # the /sys line
    assert conv.messages == ONE_TO_ONE
    assert all(m.loss for m in conv.messages if m.role == "assistant")
    assert conv.meta["character"] == conv.meta["role"] == "Kestrel" and conv.meta["user"] == "Alex"
    # the kept swipe is the answer; the greeting's alternate greeting is no alternative
    assert conv.meta["alternatives"] == [{"message": 2, "chosen": "Iron? *She narrows her eyes.* Show me.",
                                          "rejected": ["Salt I can use. Iron draws bandits.",
                                                       "Trade is for the valley, not the pass."]}]
    assert kind_of(conv) == "plain"


def test_the_older_and_newer_layouts_give_the_same_conversation():
    [real] = load(ONE, "sillytavern")
    for name in ("kestrel_newer_layout.jsonl", "kestrel_epoch_dates.jsonl"):
        [conv] = load(ST / "handmade" / name)
        assert (conv.system, conv.messages) == (real.system, real.messages)
        assert conv.meta["alternatives"] == real.meta["alternatives"] and conv.meta["user"] == "Alex"


def test_a_group_chat_for_each_character():
    [k] = load(GROUP, "sillytavern", character="Kestrel")
    assert k.system == (KESTREL_LINE + "\n\nKestrel is in a scene with Seraphina and Alex. The others' lines come "
                        "as \"Name: text\". Reply only as Kestrel, with Kestrel's next line.")
    assert k.messages == [
        Message("user", "Seraphina: " + _seraphina_greeting()),
        Message("assistant", GREETING),
        Message("user", "Alex: Evening, both of you. Is the pass open?\n"
                        "Seraphina: Only for those the forest trusts. *She smiles at Kestrel.*"),
        Message("assistant", "And I trust nobody. Open? No."),
        Message("user", "Alex: Then I will wait by the fire.\n"
                        "Seraphina: *Seraphina brings you a cup of tea.* Rest, traveler."),
        Message("assistant", "Keep your boots on. We leave at dawn."),
    ]
    assert k.meta["participants"] == ["Seraphina", "Kestrel"]
    assert k.meta["alternatives"] == [{"message": 3, "chosen": "And I trust nobody. Open? No.",
                                       "rejected": ["The forest trusts too easily."]}]
    # the avatar file names the character too; her last line is dropped (nothing of hers answers it)
    [s] = load(GROUP, "sillytavern", character="default_Seraphina.png")
    assert [m.role for m in s.messages] == ["assistant", "user", "assistant", "user", "assistant"]
    assert s.messages[0].content == _seraphina_greeting()
    assert s.messages[1].content == f"Kestrel: {GREETING}\nAlex: Evening, both of you. Is the pass open?"
    assert s.messages[4].content == "*Seraphina brings you a cup of tea.* Rest, traveler."
    assert "alternatives" not in s.meta


def test_card_and_user_options():
    [conv] = load(ONE, "sillytavern", card=str(CARD), user="Sam")
    assert conv.system.splitlines() == [
        "Write Kestrel's next reply in a fictional chat between Kestrel and Sam.",
        "Kestrel is a sharp-eyed falconer who guards the mountain pass and distrusts strangers, Sam included.",
        "Kestrel's personality: terse, watchful, dry humour",
        "Scenario: Sam reaches the pass at dusk."]
    assert conv.messages[0].content == "*A hooded falcon shifts on Kestrel's glove.* State your business, Sam."
    card = conv.meta["card"]
    assert card["name"] == "Kestrel" and card["user"] == "Sam" and card["greetings"][1].endswith("closed, Sam.")
    # with a card the trained character is the card's, also in a group chat
    [g] = load(GROUP, "sillytavern", card=str(CARD))
    assert g.meta["character"] == "Kestrel" and g.messages[2].content.startswith("Alex: Evening")


def _convert(tmp_path, *args) -> tuple[int, Path]:
    out = tmp_path / "out.jsonl"
    return main(["data", "convert", *args, str(out)]), out


def test_swipes_become_pairs_that_train_with_dpo(tmp_path, tiny_qwen2, capsys):
    code, out = _convert(tmp_path, "--from", "sillytavern", "-O", "character=Kestrel", str(ST), "--to", "trl")
    assert code == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    # the group chat's swipe first (files sorted), then the 1:1 chat's two others; no greeting is a pair
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("And I trust nobody. Open? No.", "The forest trusts too easily."),
        ("Iron? *She narrows her eyes.* Show me.", "Salt I can use. Iron draws bandits."),
        ("Iron? *She narrows her eyes.* Show me.", "Trade is for the valley, not the pass.")]
    system = KESTREL_LINE + "\nThe wind picks up; snow starts to fall."
    assert rows[1]["prompt"] == [{"role": "system", "content": system},
                                 {"role": "assistant", "content": GREETING},
                                 {"role": "user", "content": "I come to trade, Kestrel. Salt and iron."}]
    assert rows[0]["prompt"][-1]["content"].startswith("Alex: Evening")
    # read back (the trl format takes a prompt that opens with the greeting) as the same pairs
    pairs = load(out)
    assert [kind_of(p) for p in pairs] == ["pair"] * 3 and pairs[1].messages[:2] == ONE_TO_ONE[:2]
    assert pairs[2].meta["rejected"] == "Trade is for the valley, not the pass."
    run = tmp_path / "dpo"
    assert main(["train", f"model={tiny_qwen2}", f"output_dir={run}", f"data.train={out}", "method=dpo",
                 "dtype=fp32", "device=cpu", "batch_size=2", "lr=5e-3", "max_steps=2", "logging_steps=1",
                 "sample_tokens=4", "warmup=0"]) == 0
    s = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert s["method"] == "dpo" and s["steps"] == 2 and (run / "adapter" / "adapter_model.safetensors").is_file()


def test_stats_and_a_folder(tmp_path, capsys):
    assert main(["data", "stats", str(ONE)]) == 0
    assert "sillytavern" in capsys.readouterr().out
    convs = load(ST, "sillytavern", character="Kestrel")
    assert [c.meta["chat"] for c in convs] == ["group_pass_watch.jsonl", "kestrel_swipes.jsonl"]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _bad(tmp_path: Path, name: str, lines: list[str]) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


def _edit(line: str, **changes) -> str:
    rec = json.loads(line)
    for k, v in changes.items():
        if v is None:
            rec.pop(k)
        else:
            rec[k] = v
    return json.dumps(rec, ensure_ascii=False)


@pytest.mark.parametrize("case", ["truncated", "swipe_id", "no_mes", "group"])
def test_bad_files_name_file_and_line_and_write_nothing(tmp_path, capsys, case):
    lines = _lines(ONE)
    if case == "truncated":
        lines[-1] = lines[-1][:60]
        bad, line, words = _bad(tmp_path, "chat.jsonl", lines), len(lines), "truncated JSON"
    elif case == "swipe_id":
        lines[3] = _edit(lines[3], swipe_id=3)
        bad, line, words = _bad(tmp_path, "chat.jsonl", lines), 4, 'field "swipe_id" is 3 (expected 0..2'
    elif case == "no_mes":
        lines[2] = _edit(lines[2], mes=None)
        bad, line, words = _bad(tmp_path, "chat.jsonl", lines), 3, 'missing field "mes"'
    else:
        bad, line, words = _bad(tmp_path, "group.jsonl", _lines(GROUP)), 3, "-O character=NAME"
    code, out = _convert(tmp_path, "--from", "sillytavern", str(bad))
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}:{line}:" in err and words in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(DataError, match=f":{line}: "):
        load(bad, "sillytavern")


def test_unknown_character_and_option(tmp_path):
    with pytest.raises(DataError, match="'Bob' does not speak in this chat"):
        load(GROUP, "sillytavern", character="Bob")
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="no option 'speaker'"):
        load(GROUP, "sillytavern", speaker="Kestrel")


def test_chats_with_their_card_train_and_export_the_card(tmp_path, tiny_qwen2):
    from tunesmith.data.card import read_character

    code, data = _convert(tmp_path, "--from", "sillytavern", "-O", f"card={CARD}", str(ONE))
    assert code == 0
    run = tmp_path / "sft"
    assert main(["train", f"model={tiny_qwen2}", f"output_dir={run}", f"data.train={data}", "dtype=fp32",
                 "device=cpu", "batch_size=1", "max_steps=1", "logging_steps=1", "sample_tokens=4", "warmup=0"]) == 0
    saved = json.loads((run / "adapter" / "character.json").read_text(encoding="utf-8"))
    assert saved["name"] == "Kestrel" and saved["user"] == "Alex"
    assert main(["export", str(run / "adapter"), "-o", str(tmp_path / "cards"), "--card"]) == 0
    assert read_character(tmp_path / "cards" / "Kestrel.json").card == read_character(CARD).card
