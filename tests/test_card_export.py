"""`tunesmith export ADAPTER -o OUT --card`: the adapter's character.json as a SillyTavern card (PNG with `chara` and
`ccv3` chunks, and JSON) that imports back unchanged; a card SillyTavern wrote from one of ours reads the same.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image

from tunesmith.character import save_character
from tunesmith.cli import main
from tunesmith.data.card import read_character, write_card

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "tests" / "data" / "sillytavern" / "cards"
V1 = {"name": "Old Tom", "description": "{{char}} sells rope.", "personality": "gruff", "scenario": "",
      "first_mes": "Rope, {{user}}?", "mes_example": "<START>\n{{user}}: How much?\n{{char}}: Two coins.",
      "talkativeness": "0.5"}
V3 = {"spec": "chara_card_v3", "spec_version": "3.1",
      "data": {"name": "Mira", "nickname": "Mi", "description": "{{char}} maps caves.",
               "first_mes": "Lamp on, {{user}}.", "alternate_greetings": [],
               "group_only_greetings": ["Everyone, stay close."], "creation_date": 1700000000,
               "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
               "extensions": {"x": {"y": [1, 2]}}, "tags": ["cave"]}}


def _same(a, b, *, png: bool) -> None:
    """Every field equal; a PNG carries the v3 copy SillyTavern writes, so it reads back under that spec, and a v1
    card is written as chara_card_v2 (its fields under "data")."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("source")
        if png or a.spec == "chara_card_v1":
            d.pop("spec")
            d["card_top"] = {k: v for k, v in d["card_top"].items() if k not in ("spec", "spec_version")}
    assert da == db


def _cards(tmp_path) -> list[Path]:
    (tmp_path / "v1.json").write_text(json.dumps(V1), encoding="utf-8")
    (tmp_path / "v3.json").write_text(json.dumps(V3), encoding="utf-8")
    return [ROOT / "datasets" / "character-cards" / "Seraphina.png", ROOT / "datasets" / "character-cards" /
            "Seraphina.json", CARDS / "Kestrel.json", tmp_path / "v1.json", tmp_path / "v3.json"]


def test_import_export_import_keeps_every_field(tmp_path):
    for i, src in enumerate(_cards(tmp_path)):
        char = read_character(src)
        png, js = write_card(char, tmp_path / f"out{i}")
        assert png.name == f"{char.name}.png" and js.name == f"{char.name}.json"
        _same(char, read_character(js), png=False)
        _same(char, read_character(png), png=True)
        assert read_character(png).card == char.card  # the data object, unchanged
        card = json.loads(js.read_text(encoding="utf-8"))
        assert card["data"] == char.card
        assert card["spec"] == ("chara_card_v3" if src.name == "v3.json" else "chara_card_v2")


def test_the_png_carries_chara_and_ccv3(tmp_path):
    char = read_character(ROOT / "datasets" / "character-cards" / "Seraphina.png")
    png, _ = write_card(char, tmp_path)
    with Image.open(png) as im:
        im.load()
        assert im.size == (400, 600)
        chunks = dict(im.text)
    v2 = json.loads(base64.b64decode(chunks["chara"]).decode("utf-8"))
    v3 = json.loads(base64.b64decode(chunks["ccv3"]).decode("utf-8"))
    assert (v2["spec"], v2["spec_version"], v3["spec"], v3["spec_version"]) == \
        ("chara_card_v2", "2.0", "chara_card_v3", "3.0")
    assert v2["data"] == v3["data"] == char.card
    # the card's own top-level fields (SillyTavern's v1 copies, create_date, ...) are written back too
    original = json.loads((ROOT / "datasets" / "character-cards" / "Seraphina.json").read_text(encoding="utf-8"))
    assert {k: v2[k] for k in original} == original


def test_a_card_sillytavern_wrote_from_ours_reads_the_same():
    # Kestrel.json -> character.json -> our PNG -> SillyTavern 1.12.6 import -> its own export (README there)
    ours = read_character(CARDS / "Kestrel.json")
    theirs = read_character(CARDS / "Kestrel_exported_by_sillytavern.png")
    assert theirs.card == ours.card
    assert (theirs.name, theirs.persona, theirs.greetings) == (ours.name, ours.persona, ours.greetings)


def test_export_card_from_the_cli(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    char = read_character(CARDS / "Kestrel.json")
    save_character(char, adapter)
    out = tmp_path / "cards"
    assert main(["export", str(adapter), "-o", str(out), "--card"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Kestrel.json", "Kestrel.png"]
    _same(char, read_character(out / "Kestrel.png"), png=True)
    _same(char, read_character(out / "Kestrel.json"), png=False)
    capsys.readouterr()
    # again: refused without --overwrite, written with it
    assert main(["export", str(adapter), "-o", str(out), "--card"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(adapter), "-o", str(out), "--card", "--overwrite"]) == 0


@pytest.mark.parametrize("has_folder", [True, False])
def test_export_card_without_a_character(tmp_path, capsys, has_folder):
    adapter = tmp_path / "adapter"
    if has_folder:
        adapter.mkdir()
    out = tmp_path / "cards"
    assert main(["export", str(adapter), "-o", str(out), "--card"]) == 2
    err = capsys.readouterr().err
    assert str(adapter) in err and "Traceback" not in err
    assert ("no character.json" in err) == has_folder
    assert not out.exists()
