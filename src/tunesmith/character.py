"""A character as people bring it (a SillyTavern / TavernAI character card), normalized, and its character.json.

    from tunesmith.character import Character, load_character, save_character
    char = Character.from_card(card_data, spec="chara_card_v2", user="User")   # the card's fields
    char.persona        # the system text (docs/data.md, "Character cards", says how it is built)
    char.greetings      # first_mes, then alternate_greetings, {{char}} / {{user}} filled in
    save_character(char, "runs/x/adapter")                 # character.json, next to the adapter
    load_character("runs/x/adapter")                       # a Character, or None when the folder has none

Reading a card file (JSON or PNG) is tunesmith.data.card's job; this module holds what a trained character
carries to chat, serve and export: name, persona, greetings, the card's post-history instructions and the
lorebook entries that are not in the persona, plus the card's own data, unchanged.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.fsio import atomic_write, read_json_file

CHARACTER_FILE = "character.json"
DEFAULT_USER = "User"
# SillyTavern's default main prompt: the first line of the persona when the card has no system_prompt (and what
# `{{original}}` in a card's system_prompt stands for).
DEFAULT_SYSTEM_LINE = "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}."
LOREBOOK_MODES = ("constant", "all", "none")
# {{char}} / {{user}} in any case and spacing, and the <BOT> / <USER> of older (TavernAI, Pygmalion) cards.
_PLACEHOLDER = re.compile(r"\{\{\s*(char|user)\s*\}\}|<(bot|user)>", re.IGNORECASE)


def fill_placeholders(text: str, char: str, user: str) -> str:
    """`{{char}}` (also `{{Char}}`, `<BOT>`) -> the character's name, `{{user}}` (also `<USER>`) -> the user's."""
    def name(m: re.Match) -> str:
        which = (m.group(1) or m.group(2)).lower()
        return user if which == "user" else char

    return _PLACEHOLDER.sub(name, text)


@dataclass
class Character:
    name: str
    persona: str  # the system text every conversation of the card trains with
    greetings: list[str]  # first_mes first, then alternate_greetings; each opens a conversation
    user: str = DEFAULT_USER  # the name {{user}} was filled in with
    post_history_instructions: str | None = None  # the card's, filled in; not trained on (see docs/data.md)
    lorebook: list[dict[str, Any]] = field(default_factory=list)  # entries not in the persona: {keys, content}
    spec: str = "chara_card_v2"  # chara_card_v1 (flat), chara_card_v2 or chara_card_v3
    source: str | None = None  # the card file's name
    card: dict[str, Any] = field(default_factory=dict)  # the card's data object as read (v1: its fields)
    # the card file's own fields beside "data" (spec, spec_version, the top-level copies SillyTavern writes, ...):
    # with `card`, everything an exported card (tunesmith.data.card.write_card) needs to be the card imported
    card_top: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_card(cls, data: dict[str, Any], *, spec: str = "chara_card_v2", user: str = DEFAULT_USER,
                  lorebook: str = "constant", source: str | None = None,
                  card_top: dict[str, Any] | None = None) -> Character:
        """The character of a card's (checked) data object: name, description, personality, scenario, first_mes,
        alternate_greetings, system_prompt, post_history_instructions, character_book; `card_top`: the card
        file's fields beside "data", kept for writing the card back.

        lorebook: constant (entries marked constant go into the persona, as a front end always inserts them),
        all (every enabled entry does), none (none does); the others are kept in `lorebook`.
        """
        if lorebook not in LOREBOOK_MODES:
            raise ConfigError(f"card option lorebook: {lorebook!r} is not one of {', '.join(LOREBOOK_MODES)}")
        name = data["name"].strip()
        # v3: {{char}} stands for the nickname when the card has one
        shown = (data.get("nickname") or "").strip() or name

        def fill(text: str | None) -> str:
            return fill_placeholders((text or "").replace("\r\n", "\n"), shown, user).strip()

        in_persona, kept = _split_lorebook(data.get("character_book"), lorebook)
        system = (data.get("system_prompt") or "").strip() or DEFAULT_SYSTEM_LINE
        system = re.sub(r"\{\{\s*original\s*\}\}", DEFAULT_SYSTEM_LINE, system, flags=re.IGNORECASE)
        parts = [system,
                 *(e["content"] for e in in_persona if e.get("position") != "after_char"),
                 data.get("description"),
                 f"{{{{char}}}}'s personality: {data['personality']}" if (data.get("personality") or "").strip()
                 else None,
                 f"Scenario: {data['scenario']}" if (data.get("scenario") or "").strip() else None,
                 *(e["content"] for e in in_persona if e.get("position") == "after_char")]
        persona = "\n".join(t for t in (fill(p) for p in parts) if t)
        greetings = [fill(g) for g in [data.get("first_mes"), *(data.get("alternate_greetings") or [])]]
        return cls(name=name, persona=persona, greetings=[g for g in greetings if g], user=user,
                   post_history_instructions=fill(data.get("post_history_instructions")) or None,
                   lorebook=[{"keys": list(e.get("keys") or []), "content": fill(e["content"])} for e in kept],
                   spec=spec, source=source, card=data, card_top=dict(card_top or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None) -> Character:
        """The Character of a character.json object; ConfigError naming `where` and the field when it is not one."""
        loc = f"{where}: " if where else ""
        if not isinstance(d, dict):
            raise ConfigError(f"{loc}expected a JSON object with name, persona and greetings")
        for key, kind in (("name", str), ("persona", str), ("greetings", list)):
            if not isinstance(d.get(key), kind) or (kind is str and not d[key].strip()):
                raise ConfigError(f'{loc}field "{key}" must be a non-empty {"list" if kind is list else "string"} '
                                  f"(got {d.get(key)!r:.60})")
        if not all(isinstance(g, str) for g in d["greetings"]):
            raise ConfigError(f'{loc}field "greetings" must be a list of strings')
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _split_lorebook(book: Any, mode: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(entries that go into the persona, enabled entries kept beside it), each in insertion order."""
    if not isinstance(book, dict):
        return [], []
    entries = [e for e in book.get("entries") or [] if isinstance(e, dict) and (e.get("content") or "").strip()
               and e.get("enabled", True) is not False]
    entries.sort(key=lambda e: e.get("insertion_order") if isinstance(e.get("insertion_order"), (int, float)) else 0)
    if mode == "all":
        return entries, []
    if mode == "none":
        return [], entries
    return [e for e in entries if e.get("constant") is True], [e for e in entries if e.get("constant") is not True]


# -- character.json next to an adapter -------------------------------------------------------------
def save_character(char: Character, folder: str | os.PathLike) -> Path:
    """Write `folder`/character.json (atomically)."""
    text = json.dumps(char.to_dict(), ensure_ascii=False, indent=2) + "\n"
    return atomic_write(Path(folder) / CHARACTER_FILE, text)


def load_character(folder: str | os.PathLike) -> Character | None:
    """The character saved next to an adapter (or in an exported model folder); None when there is none."""
    path = Path(folder) / CHARACTER_FILE
    if not path.is_file():
        return None
    d = read_json_file(path)
    return Character.from_dict(d, str(path))
