"""Character cards (SillyTavern / TavernAI) as a data source: the card's greetings and example dialogues.

    tunesmith data convert --from card Seraphina.png data/seraphina.jsonl
    tunesmith data convert --from card -O user=Alex card.json out.jsonl
    tunesmith data stats Seraphina.png                          # a .png (or a .json card) is found without --from

    from tunesmith.data.card import read_character
    char = read_character("Seraphina.png")                      # a tunesmith.character.Character

A card is a JSON file or a PNG image that carries the same JSON base64-encoded in a tEXt chunk (`chara`; v3
cards `ccv3`, read first when both are there). Accepted: `chara_card_v2` (`{"spec": "chara_card_v2",
"spec_version": "2.0", "data": {...}}`), `chara_card_v3` (the same fields under `data`) and the flat v1 card
(name, description, personality, scenario, first_mes, mes_example at the top level).

Every conversation has the persona (tunesmith.character) as its system text:
  * each greeting (first_mes, then each alternate_greetings entry) is a conversation of one assistant message,
    so the model learns to open the chat in character;
  * each mes_example block (blocks are separated by `<START>`) is a conversation: `{{user}}:` lines are the
    user's, `{{char}}:` lines the character's, a line without a speaker continues the message before it.
A bad card (not JSON, a wrong spec, no name, broken base64, a PNG without a card, ...) is a DataError naming the
file and the field; nothing is written.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path
from typing import Any

from tunesmith.character import DEFAULT_USER, LOREBOOK_MODES, Character, fill_placeholders
from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, type_name
from tunesmith.data.format import Format
from tunesmith.data.records import strict_loads
from tunesmith.errors import ConfigError, DataError

NAME = "card"
EXPECTED = ('a character card: chara_card_v2/v3 JSON {"spec", "data": {"name", "description", "first_mes", ...}}, '
            "the flat v1 JSON, or a PNG carrying one (tEXt chunk chara / ccv3)")
OPTIONS = {
    "user": f"the user's name that {{{{user}}}} / <USER> become (default: {DEFAULT_USER})",
    "greetings": "false: no conversations from first_mes and alternate_greetings (default: true)",
    "examples": "false: no conversations from mes_example (default: true)",
    "lorebook": "character_book entries in the persona: constant (default: the entries marked constant), all, none",
}
SPECS = ("chara_card_v2", "chara_card_v3")
TEXT_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example", "system_prompt",
               "post_history_instructions", "creator_notes", "nickname")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEYWORDS = ("ccv3", "chara")  # the v3 chunk first: a v3 card carries a v2 copy in `chara` for older readers
_START = re.compile(r"<START>", re.IGNORECASE)


# -- the file -> the card's data object ---------------------------------------------------------------
def read_card(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """(spec, data) of a card file, JSON or PNG: spec is chara_card_v1 for a flat v1 card, and data the object
    holding name, description, ... checked field by field. DataError naming the file (and field) otherwise."""
    spec, data, _ = read_card_file(path)
    return spec, data


def read_card_file(path: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(spec, data, top) of a card file: read_card's, and the card object's fields beside "data" (none for v1)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found (expected {EXPECTED})", str(p)) from None
    except IsADirectoryError:
        raise DataError(f"is a directory (expected {EXPECTED})", str(p)) from None
    if raw.startswith(PNG_SIGNATURE):
        keyword, text = _png_card_text(p)
        where = f"{p} (PNG chunk {keyword})"
        try:
            text = base64.b64decode(text.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise DataError(f"the {keyword!r} text is not valid base64-encoded UTF-8 (expected the card's JSON, "
                            "base64-encoded, as SillyTavern writes it)", where) from None
    else:
        where = str(p)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"byte {e.start} is not UTF-8 (expected {EXPECTED})", where) from None
    try:
        card = strict_loads(text)
    except ValueError as e:
        raise DataError(f"not JSON ({e}) (expected {EXPECTED})", where) from None
    spec, data = _card_data(card, where)
    return spec, data, {} if spec == "chara_card_v1" else {k: v for k, v in card.items() if k != "data"}


def _png_card_text(p: Path) -> tuple[str, str]:
    """(keyword, text) of the PNG's card chunk; DataError when the image is broken or carries no card."""
    from PIL import Image  # Pillow: imported only where a card image is read (the CLI must start fast)

    try:
        with Image.open(p) as im:
            im.load()  # text chunks after the image data (where SillyTavern writes its card) are read here
            chunks = dict(getattr(im, "text", {}) or {})
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a damaged file
        raise DataError(f"cannot read this PNG ({type(e).__name__}: {e}) (expected {EXPECTED})", str(p)) from None
    for keyword in PNG_KEYWORDS:
        if isinstance(chunks.get(keyword), str) and chunks[keyword].strip():
            return keyword, chunks[keyword]
    have = ", ".join(sorted(chunks)) or "none"
    raise DataError(f"this PNG carries no character card (expected a tEXt chunk 'chara' or 'ccv3'; its text chunks: "
                    f"{have})", str(p))


def _card_data(card: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(card, dict):
        raise DataError(f"the card is a JSON {type_name(card)} (expected an object: {EXPECTED})", where)
    spec = card.get("spec")
    if spec is None:  # v1: the fields at the top level
        if "name" not in card or not any(k in card for k in ("description", "personality", "first_mes",
                                                                "mes_example", "scenario")):
            have = ", ".join(sorted(card)) or "none"
            raise DataError(f"not a character card: no \"spec\" and not the v1 fields (expected {EXPECTED}; the "
                            f"object has: {have})", where)
        spec, data = "chara_card_v1", card
    elif spec not in SPECS:
        raise DataError(f'field "spec" is {spec!r} (expected {" or ".join(SPECS)}, or a v1 card without "spec")',
                        where)
    else:
        data = card.get("data")
        if not isinstance(data, dict):
            raise DataError(f'field "data" must be an object with the card\'s fields (got {type_name(data)}; '
                            f"{spec} keeps name, description, first_mes, ... under \"data\")", where)
    _check_fields(data, where, "" if spec == "chara_card_v1" else "data.")
    return spec, data


def _check_fields(data: dict[str, Any], where: str, prefix: str) -> None:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        got = "missing" if name is None else f"{type_name(name)} {name!r:.40}"
        raise DataError(f'field "{prefix}name" is {"empty" if isinstance(name, str) else got} (expected the '
                        "character's name)", where)
    for key in TEXT_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise DataError(f'field "{prefix}{key}" must be a string (got {type_name(data[key])})', where)
    greetings = data.get("alternate_greetings")
    if greetings is not None:
        if not isinstance(greetings, list):
            raise DataError(f'field "{prefix}alternate_greetings" must be a list of strings '
                            f"(got {type_name(greetings)})", where)
        for i, g in enumerate(greetings):
            if not isinstance(g, str):
                raise DataError(f'field "{prefix}alternate_greetings"[{i}] must be a string (got {type_name(g)})',
                                where)
    book = data.get("character_book")
    if book is None:
        return
    entries = book.get("entries") if isinstance(book, dict) else None
    if not isinstance(entries, list):
        raise DataError(f'field "{prefix}character_book" must be an object with an "entries" list', where)
    for i, e in enumerate(entries):
        label = f'field "{prefix}character_book.entries"[{i}]'
        if not isinstance(e, dict):
            raise DataError(f"{label} must be an object (got {type_name(e)})", where)
        if not isinstance(e.get("content", ""), str):
            raise DataError(f'{label}.content must be a string (got {type_name(e["content"])})', where)
        if not isinstance(e.get("keys", []), list):
            raise DataError(f'{label}.keys must be a list of strings (got {type_name(e["keys"])})', where)


# -- options and the character ------------------------------------------------------------------------
def _options(opts: dict[str, Any]) -> dict[str, Any]:
    check_options(NAME, opts, OPTIONS)
    user = opts.get("user", DEFAULT_USER)
    if not isinstance(user, str) or not user.strip():
        raise ConfigError(f"card option user: expected a non-empty name (got {user!r})")
    out: dict[str, Any] = {"user": user.strip(), "lorebook": opts.get("lorebook", "constant")}
    if out["lorebook"] not in LOREBOOK_MODES:
        raise ConfigError(f"card option lorebook: {out['lorebook']!r} is not one of {', '.join(LOREBOOK_MODES)}")
    for key in ("greetings", "examples"):
        value = opts.get(key, True)
        if not isinstance(value, bool):
            raise ConfigError(f"card option {key}: expected true or false (got {value!r})")
        out[key] = value
    return out


def read_character(path: str | os.PathLike, *, user: str = DEFAULT_USER, lorebook: str = "constant") -> Character:
    """The Character of a card file (JSON or PNG); DataError naming the file and field for a bad card."""
    spec, data, top = read_card_file(path)
    return Character.from_card(data, spec=spec, user=user, lorebook=lorebook, source=Path(path).name, card_top=top)


# -- mes_example -> conversations ------------------------------------------------------------------------
def example_dialogues(mes_example: str, char: str, user: str) -> list[list[Message]]:
    """Each `<START>` block of mes_example as messages: `{{user}}:` / `<USER>:` / `USER_NAME:` lines are the user's,
    `{{char}}:` / `<BOT>:` / `CHAR_NAME:` lines the character's; a line without a speaker continues the message
    before it (text before the first speaker is the character's narration). Consecutive lines of one speaker are
    one message; a block's trailing user message is dropped (nothing follows it to learn), and a block with no
    message of the character is skipped."""
    names = {"user": [r"\{\{\s*user\s*\}\}", r"<user>", re.escape(user)],
             "assistant": [r"\{\{\s*char\s*\}\}", r"<bot>", re.escape(char)]}
    speaker = re.compile("|".join(rf"(?P<{'u' if role == 'user' else 'a'}{i}>{pat})"
                                  for role, pats in names.items() for i, pat in enumerate(pats)), re.IGNORECASE)
    line_head = re.compile(rf"^\s*(?:{speaker.pattern})\s*:[ \t]?", re.IGNORECASE)
    out = []
    for block in _START.split(mes_example or ""):
        turns: list[list[str]] = []  # [role, text]
        for line in block.replace("\r\n", "\n").split("\n"):
            m = line_head.match(line)
            role = None if m is None else ("user" if next(k for k, v in m.groupdict().items() if v)[0] == "u"
                                           else "assistant")
            text = line if m is None else line[m.end():]
            if role is None and turns:
                turns[-1][1] += "\n" + text
            else:
                turns.append([role or "assistant", text])
        msgs: list[Message] = []
        for role, text in turns:
            text = fill_placeholders(text, char, user).strip()
            if not text:
                continue
            if msgs and msgs[-1].role == role:
                msgs[-1].content += "\n" + text
            else:
                msgs.append(Message(role, text))
        while msgs and msgs[-1].role == "user":
            msgs.pop()
        if any(m.role == "assistant" for m in msgs):
            out.append(msgs)
    return out


def read_card_conversations(path: str | os.PathLike, *, encoding: str = "auto", **opts: Any) -> list[Conversation]:
    """The conversations of a card: its greetings, then its example dialogues, each with the persona as system
    text and meta {source: card, character, role, kind: greeting|example, index, card: the Character}."""
    o = _options(opts)
    char = read_character(path, user=o["user"], lorebook=o["lorebook"])
    shown = (char.card.get("nickname") or "").strip() or char.name
    meta = {"source": NAME, "character": char.name, "role": char.name}
    convs = []
    if o["greetings"]:
        convs += [Conversation([Message("assistant", g)], char.persona, {**meta, "kind": "greeting", "index": i})
                  for i, g in enumerate(char.greetings)]
    if o["examples"]:
        convs += [Conversation(msgs, char.persona, {**meta, "kind": "example", "index": i})
                  for i, msgs in enumerate(example_dialogues(char.card.get("mes_example") or "", shown, char.user))]
    if not convs:
        what = " and ".join(k for k, on in (("greetings", o["greetings"]), ("examples", o["examples"])) if on)
        raise DataError(f"the card of {char.name!r} has no {what or 'greetings or examples (both turned off)'} "
                        '(expected "first_mes", "alternate_greetings" or "mes_example" text)', str(path))
    saved = char.to_dict()
    for c in convs:
        c.validate(str(path))
        c.meta["card"] = saved
    return convs


def claims(path: Path) -> bool:
    """Without --from: a .png file, or a .json file holding one card object, is read as a card."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        return True
    if suffix != ".json":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head.startswith(b"{") or not (b'"chara_card_v' in head or b'"first_mes"' in head):
            return False  # a JSON array of records, or records of another format
        card = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and (card.get("spec") in SPECS or ("name" in card and "first_mes" in card))


# -- the character -> card files (tunesmith export ADAPTER -o OUT --card) ---------------------------------------
CARD_SIZE = (400, 600)  # SillyTavern's avatar size


def card_objects(char: Character) -> tuple[dict[str, Any], dict[str, Any]]:
    """(v2, v3): the character's card as a chara_card_v2 and a chara_card_v3 object, each the card's own top-level
    fields and data object unchanged under that spec (a v1 card's fields become the data)."""
    top = {k: v for k, v in char.card_top.items() if k != "data"}

    def under(spec: str, version: str) -> dict[str, Any]:
        keep = top.get("spec") == spec and isinstance(top.get("spec_version"), str)
        return {**top, "spec": spec, "spec_version": top["spec_version"] if keep else version, "data": char.card}

    return under("chara_card_v2", "2.0"), under("chara_card_v3", "3.0")


def card_file_name(name: str) -> str:
    """The character's name as a file name (what SillyTavern names an imported card after)."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).strip(" .") or "character"


def _card_image(name: str):
    """A plain portrait-sized placeholder with the character's name on it (character.json keeps no picture)."""
    import hashlib

    from PIL import Image, ImageDraw, ImageFont

    hue = hashlib.sha256(name.encode("utf-8")).digest()
    im = Image.new("RGB", CARD_SIZE, (40 + hue[0] % 80, 40 + hue[1] % 80, 60 + hue[2] % 80))
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=40)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        font = ImageFont.load_default()
    draw.text((CARD_SIZE[0] // 2, CARD_SIZE[1] // 2), name[:16], fill=(240, 240, 240), font=font, anchor="mm")
    return im


def card_png(char: Character) -> bytes:
    """A PNG card: the placeholder image with the v2 card in a tEXt chunk `chara` and the v3 card in `ccv3`,
    base64-encoded UTF-8 JSON, as SillyTavern writes its cards."""
    import io

    from PIL import PngImagePlugin

    v2, v3 = card_objects(char)
    info = PngImagePlugin.PngInfo()
    for keyword, card in (("chara", v2), ("ccv3", v3)):
        text = json.dumps(card, ensure_ascii=False, separators=(",", ":"))
        info.add_text(keyword, base64.b64encode(text.encode("utf-8")).decode("ascii"))
    buf = io.BytesIO()
    _card_image(char.name).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def write_card(char: Character, out_dir: str | os.PathLike, *, overwrite: bool = False) -> tuple[Path, Path]:
    """OUT/<name>.png and OUT/<name>.json: the character's card, for SillyTavern (or tunesmith) to import.

    The JSON is the card under its own spec (chara_card_v3 for a v3 card, else chara_card_v2)."""
    from tunesmith.fsio import atomic_write

    out = Path(out_dir)
    base = card_file_name(char.name)
    png, js = out / f"{base}.png", out / f"{base}.json"
    existing = [str(p) for p in (png, js) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{' and '.join(existing)} already exist (pass --overwrite to replace them)")
    v2, v3 = card_objects(char)
    card = v3 if char.spec == "chara_card_v3" else v2
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(png, card_png(char))
    atomic_write(js, json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    return png, js


def export_card(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                overwrite: bool = False) -> tuple[Path, Path]:
    """The card of an adapter trained as a character (its character.json) as OUT/<name>.png and OUT/<name>.json."""
    from tunesmith.character import CHARACTER_FILE, load_character

    adapter = Path(adapter_dir)
    if not adapter.is_dir():
        raise ConfigError(f"{adapter}: not a folder (expected an adapter folder written by tunesmith train)")
    char = load_character(adapter)
    if char is None:
        raise ConfigError(f"{adapter}: no {CHARACTER_FILE}, so no card to write (expected an adapter trained on "
                          "a character card's data: `tunesmith data convert --from card` or `-O card=` data)")
    return write_card(char, out_dir, overwrite=overwrite)


FORMAT = Format(NAME, EXPECTED, options=OPTIONS, read_file=read_card_conversations, claims=claims,
                aliases=("character-card", "chara_card_v2"))
