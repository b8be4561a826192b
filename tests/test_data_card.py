"""The `card` format: SillyTavern / TavernAI character cards (v1, v2, v3; JSON and PNG) -> conversations.

The card written here is ours; `datasets/character-cards/Seraphina.png` (and its JSON) is SillyTavern's default
card, which we did not write (datasets/SOURCES.md).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tunesmith.character import DEFAULT_SYSTEM_LINE, Character, fill_placeholders
from tunesmith.cli import main
from tunesmith.conversation import Conversation, Message
from tunesmith.data import load
from tunesmith.data.card import example_dialogues, read_character
from tunesmith.errors import ConfigError, DataError

MES_EXAMPLE = (
    "<START>\n{{user}}: Who are you?\n{{char}}: *bows* I am {{char}}.\nI guard the <USER>'s gate.\n<USER>: Nice.\n"
    "<BOT>: Thank you, {{user}}.\n{{user}}: bye\n"
    "<START>\n{{Char}}: *waves* Hello there.\n{{user}}: hi\n{{char}}: Welcome.\n"
    "<start>\n{{user}}: only the user speaks here\n"
)
DATA = {
    "name": "Lin",
    "description": "{{char}} keeps the lighthouse on Pine Bay. {{char}} talks to {{user}} only at night.",
    "personality": "dry, patient",
    "scenario": "{{user}} rows to the lighthouse in a storm.",
    "first_mes": "*{{char}} opens the door.* You're soaked, {{user}}. Come in.",
    "alternate_greetings": ["*The lamp turns.* Late again, {{user}}?"],
    "mes_example": MES_EXAMPLE,
    "system_prompt": "{{original}} Stay in character.",
    "post_history_instructions": "Never speak for {{user}}.",
    "creator_notes": "a test card", "tags": ["test"], "creator": "tunesmith tests", "character_version": "1",
    "extensions": {},
    "character_book": {"entries": [
        {"keys": ["lamp"], "content": "The lamp was lit in 1890.", "enabled": True, "insertion_order": 2,
         "constant": False},
        {"keys": [], "content": "{{char}} never leaves the island.", "enabled": True, "insertion_order": 1,
         "constant": True},
        {"keys": ["boat"], "content": "disabled", "enabled": False, "constant": True},
    ]},
}
CARD_V2 = {"spec": "chara_card_v2", "spec_version": "2.0", "data": DATA}
PERSONA = ("Write Lin's next reply in a fictional chat between Lin and User. Stay in character.\n"
           "Lin never leaves the island.\n"
           "Lin keeps the lighthouse on Pine Bay. Lin talks to User only at night.\n"
           "Lin's personality: dry, patient\n"
           "Scenario: User rows to the lighthouse in a storm.")
SERAPHINA = Path(__file__).resolve().parents[1] / "datasets" / "character-cards"


def write_png(path: Path, chunks: dict[str, str]) -> Path:
    """A small PNG carrying these tEXt chunks (a card is base64 text in one named chara / ccv3)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    Image.new("RGB", (8, 8), (200, 120, 40)).save(path, pnginfo=info)
    return path


def b64(card: dict) -> str:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8")).decode("ascii")


@pytest.fixture
def card_files(tmp_path) -> dict[str, Path]:
    js = tmp_path / "lin.json"
    js.write_text(json.dumps(CARD_V2, ensure_ascii=False, indent=2), encoding="utf-8")
    return {"json": js, "png": write_png(tmp_path / "lin.png", {"Software": "test", "chara": b64(CARD_V2)})}


def test_a_card_becomes_greetings_and_example_dialogues_with_the_persona(card_files):
    convs = load(card_files["json"], "card")
    assert [c.meta["kind"] for c in convs] == ["greeting", "greeting", "example", "example"]
    assert all(c.system == PERSONA for c in convs)
    assert [m.to_dict() for m in convs[0].messages] == [
        {"role": "assistant", "content": "*Lin opens the door.* You're soaked, User. Come in."}]
    assert convs[1].messages[0].content == "*The lamp turns.* Late again, User?"
    assert [(m.role, m.content) for m in convs[2].messages] == [
        ("user", "Who are you?"), ("assistant", "*bows* I am Lin.\nI guard the User's gate."), ("user", "Nice."),
        ("assistant", "Thank you, User.")]  # the trailing "bye" has no answer: dropped
    assert [(m.role, m.content) for m in convs[3].messages] == [
        ("assistant", "*waves* Hello there."), ("user", "hi"), ("assistant", "Welcome.")]
    meta = convs[2].meta
    assert (meta["source"], meta["character"], meta["role"], meta["index"]) == ("card", "Lin", "Lin", 0)
    char = Character.from_dict(meta["card"])  # the card travels in every conversation's meta
    assert char.card == DATA and char.spec == "chara_card_v2" and char.source == "lin.json"
    assert char.post_history_instructions == "Never speak for User."
    assert char.lorebook == [{"keys": ["lamp"], "content": "The lamp was lit in 1890."}]  # keyword entries beside
    assert load(card_files["png"], "card") == [_with_source(c, "lin.png") for c in convs]  # PNG = JSON


def _with_source(conv: Conversation, source: str) -> Conversation:
    meta = json.loads(json.dumps(conv.meta))
    meta["card"]["source"] = source
    return Conversation(conv.messages, conv.system, meta)


def test_options_user_name_greetings_examples_and_lorebook(card_files):
    convs = load(card_files["png"], "card", user="Alex", examples=False)
    assert len(convs) == 2 and convs[0].messages[0].content.endswith("You're soaked, Alex. Come in.")
    assert "between Lin and Alex" in convs[0].system
    examples = load(card_files["json"], "card", greetings=False, lorebook="all")
    assert [c.meta["kind"] for c in examples] == ["example", "example"]
    assert "Lin never leaves the island.\nThe lamp was lit in 1890.\nLin keeps" in examples[0].system
    assert "never leaves" not in load(card_files["json"], "card", lorebook="none")[0].system
    for bad, message in (({"user": ""}, "user: expected a non-empty name"), ({"lorebook": "some"}, "constant, all"),
                         ({"greetings": "no"}, "greetings: expected true or false"), ({"usr": "x"}, "no option 'usr'")):
        with pytest.raises(ConfigError, match=message):
            load(card_files["json"], "card", **bad)
    quiet = _write(card_files["json"].with_name("quiet.json"),
                   {**DATA, "first_mes": "", "mes_example": "", "alternate_greetings": []})
    with pytest.raises(DataError, match="quiet.json: the card of 'Lin' has no greetings and examples"):
        load(quiet, "card")


def _write(path: Path, card: dict) -> Path:
    path.write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    return path


def test_v1_flat_cards_and_v3_cards_read_the_same_fields(tmp_path):
    v1 = {k: DATA[k] for k in ("name", "description", "personality", "scenario", "first_mes", "mes_example")}
    convs = load(_write(tmp_path / "v1.json", v1), "card")
    assert [c.meta["kind"] for c in convs] == ["greeting", "example", "example"]
    assert convs[0].system.startswith(DEFAULT_SYSTEM_LINE.replace("{{char}}", "Lin").replace("{{user}}", "User"))
    assert Character.from_dict(convs[0].meta["card"]).spec == "chara_card_v1"
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0",
          "data": {**DATA, "nickname": "Old Lin", "group_only_greetings": ["*to everyone* Hello."]}}
    # a v3 PNG carries a v2 copy for older readers: the ccv3 chunk is the one read
    png = write_png(tmp_path / "v3.png", {"chara": b64({**CARD_V2, "data": {**DATA, "name": "Stale"}}),
                                          "ccv3": b64(v3)})
    char = read_character(png)
    assert char.name == "Lin" and char.spec == "chara_card_v3"
    assert char.greetings[0] == "*Old Lin opens the door.* You're soaked, User. Come in."  # {{char}} = nickname
    assert len(char.greetings) == 2  # group-only greetings are for group chats: not trained


def test_examples_are_split_by_start_and_speakers(tmp_path):
    assert example_dialogues("", "Lin", "User") == []
    got = example_dialogues("*Lin hums.*\nLin: Who's there?\nUser: me\nLin: Come in.", "Lin", "User")
    assert [(m.role, m.content) for m in got[0]] == [("assistant", "*Lin hums.*\nWho's there?"), ("user", "me"),
                                                      ("assistant", "Come in.")]  # names as prefixes, narration
    assert fill_placeholders("{{ char }} {{USER}} <bot> <User>", "A", "B") == "A B A B"


def test_bad_cards_are_refused_naming_file_and_field_and_nothing_is_written(tmp_path, capsys):
    cases = {
        "noname.json": (json.dumps({**CARD_V2, "data": {**DATA, "name": " "}}), 'field "data.name" is empty'),
        "missing.json": (json.dumps({"spec": "chara_card_v2", "data": {"first_mes": "hi"}}),
                         'field "data.name" is missing'),
        "spec.json": (json.dumps({**CARD_V2, "spec": "chara_card_v9"}), "field \"spec\" is 'chara_card_v9'"),
        "nodata.json": (json.dumps({"spec": "chara_card_v2", "name": "Lin"}), 'field "data" must be an object'),
        "greet.json": (json.dumps({**CARD_V2, "data": {**DATA, "alternate_greetings": "hi"}}),
                       'field "data.alternate_greetings" must be a list of strings'),
        "desc.json": (json.dumps({**CARD_V2, "data": {**DATA, "description": 5}}),
                      'field "data.description" must be a string'),
        "book.json": (json.dumps({**CARD_V2, "data": {**DATA, "character_book": {"entries": [{"content": 3}]}}}),
                      'character_book.entries"\\[0\\].content must be a string'),
        "notjson.json": ('{"name": "Lin", "first_mes": ', "not JSON"),
        "array.json": ("[1, 2]", "the card is a JSON list"),
        "other.json": (json.dumps({"name": "Lin", "age": 3}), "not a character card"),
    }
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    write_png(tmp_path / "nocard.png", {"Software": "paint"})
    cases["nocard.png"] = (None, "this PNG carries no character card .*its text chunks: Software")
    write_png(tmp_path / "badb64.png", {"chara": "not base64!"})
    cases["badb64.png"] = (None, r"badb64.png \(PNG chunk chara\): the 'chara' text is not valid base64")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    cases["broken.png"] = (None, "cannot read this PNG")
    cases["absent.png"] = (None, "file not found")
    for name, (_, message) in cases.items():
        out = tmp_path / f"out-{name}.jsonl"
        assert main(["data", "convert", "--from", "card", str(tmp_path / name), str(out)]) == 2, name
        err = capsys.readouterr().err
        assert f"{tmp_path / name}" in err and "Traceback" not in err, err
        assert re.search(message, err), (name, err)
        assert not out.exists()


def test_cli_convert_detects_cards_and_stats_reads_them(card_files, tmp_path, capsys):
    out = tmp_path / "lin.jsonl"
    assert main(["data", "convert", str(card_files["png"]), str(out), "-O", "user=Alex"]) == 0  # no --from
    assert "wrote 4 conversations" in capsys.readouterr().err
    back = load(out)  # our JSONL: greetings first open with the assistant, and load back as they were
    assert back == load(card_files["png"], "card", user="Alex") and back[0].opens_with_assistant
    assert load(card_files["json"]) == load(card_files["json"], "card")  # a one-card .json is found too
    assert main(["data", "stats", str(card_files["png"]), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["conversations"] == 4 and stats["roles"] == {"Lin": 4}


def test_the_seraphina_card_we_did_not_write_imports_from_png_and_json():
    png, js = load(SERAPHINA / "Seraphina.png"), load(SERAPHINA / "Seraphina.json")
    assert [c.messages for c in png] == [c.messages for c in js] and len(png) == 1  # one greeting, no mes_example
    (greeting,) = png
    assert greeting.messages[0].role == "assistant"
    assert greeting.messages[0].content.startswith("*You wake with a start, recalling the events")
    assert greeting.system.startswith("Write Seraphina's next reply in a fictional chat between Seraphina and User.\n"
                                      "[Seraphina's Personality=")
    assert "\r" not in greeting.system and "{{" not in greeting.system + greeting.messages[0].content
    char = read_character(SERAPHINA / "Seraphina.png")
    assert char.spec == "chara_card_v2" and char.card["creator"] == "OtisAlejandro"
    assert len(char.lorebook) == 4 and all(e["keys"] for e in char.lorebook)  # keyword entries, none constant
    assert Message("assistant", char.greetings[0]) == greeting.messages[0]


@pytest.mark.parametrize("fmt", ["conversation", "messages", "sharegpt"])
def test_greetings_round_trip_through_the_chat_formats(card_files, tmp_path, fmt):
    from tunesmith.data import save

    convs = load(card_files["json"], "card")
    out = save(convs, tmp_path / f"lin-{fmt}.jsonl", fmt)
    back = load(out, fmt)
    assert [(c.system, c.messages) for c in back] == [(c.system, c.messages) for c in convs]
    assert back[0].opens_with_assistant and back[3].opens_with_assistant


def test_formats_without_a_place_for_a_greeting_refuse_it(card_files, tmp_path, capsys):
    for fmt in ("alpaca", "context-target"):
        out = tmp_path / f"lin.{fmt}.jsonl"
        assert main(["data", "convert", str(card_files["json"]), str(out), "--to", fmt]) == 2
        err = capsys.readouterr().err
        assert "conversation 1 (card Lin)" in err and "Traceback" not in err and not out.exists()
    assert "opens with the assistant" in (main(["data", "convert", str(card_files["json"]), str(tmp_path / "a.json"),
                                                "--to", "alpaca"]) and capsys.readouterr().err)
