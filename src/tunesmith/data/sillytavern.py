"""SillyTavern chats (the .jsonl files under data/<user>/chats/<character>/ and data/<user>/group chats/) as
conversations for one character.

    tunesmith data convert --from sillytavern "chats/Kestrel/2026-12-7 @00h 06m 43s 659ms.jsonl" data/kestrel.jsonl
    tunesmith data convert --from sillytavern -O character=Kestrel -O card=Kestrel.png "group chats/" data/k.jsonl
    tunesmith data convert --from sillytavern chats/Kestrel/ data/kestrel_pairs.jsonl --to trl   # swipes -> pairs

A chat file is one JSON object per line.  A 1:1 chat opens with a metadata line (`user_name`, `character_name`,
`create_date`, `chat_metadata`; newer versions keep only `chat_metadata` there and write ISO dates, older ones
epoch numbers: dates are not read); a group chat has none.  Every other line is a message: `name`, `is_user`,
`is_system` (hidden messages and SillyTavern's own notes), `mes`, `extra` (`type: narrator` for /sys lines),
`original_avatar` (group chats), and for a message with alternatives `swipes` and `swipe_id` (the kept one).

One conversation per chat, for one character (`-O character=NAME`, needed when several characters speak):
its lines are the assistant messages and carry the loss; with one character the user's lines are the user
messages, with several every other line reaches it as "Name: text" inside user messages (tunesmith.scene, the
Scene tab's presentation).  The system text is the card's persona (`-O card=CARD`), else SillyTavern's default
main prompt for the character and the user followed by the chat's narrator (/sys) lines.  Swipes: the kept one is
the answer; the others go to meta.alternatives, which `--to trl` turns into pairs (tunesmith.preference); the
greetings that open a chat are never pairs (their swipes are the card's alternate greetings).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.character import DEFAULT_SYSTEM_LINE, DEFAULT_USER, Character, fill_placeholders
from tunesmith.conversation import Conversation, Message
from tunesmith.data.card import read_character
from tunesmith.data.fields import check_options, type_name
from tunesmith.data.format import Format
from tunesmith.data.records import read_records
from tunesmith.errors import ConfigError, DataError
from tunesmith.preference import ALTERNATIVES
from tunesmith.scene import scene_messages, scene_system

NAME = "sillytavern"
EXPECTED = ('a SillyTavern chat: JSONL, an optional first line {"user_name", "character_name", "chat_metadata"}, '
            'then messages {"name", "is_user", "is_system", "mes", "swipes"?, "swipe_id"?, "extra"?}')
OPTIONS = {
    "character": "whose lines to train (its name or avatar file); needed when several characters speak "
                 "(default: the chat's character)",
    "card": "a character card (.png or .json): the persona of the conversations and meta.card (default: "
            "SillyTavern's main prompt and the chat's narrator lines)",
    "user": "the user's name in the conversations; the chat's name for the user is replaced by it "
            "(default: the name the chat stores)",
}
UNUSED = ("", "unused")  # what newer versions write for user_name / character_name in the metadata line
# 1:1 chats: consecutive lines of one side are one message, joined with these
JOIN = {"user": "\n", "assistant": "\n\n"}


@dataclass
class Line:
    """One message of the chat that is a turn (not hidden, not a narrator line)."""
    where: str
    is_user: bool
    name: str
    avatar: str | None
    text: str  # mes, placeholders not yet filled
    others: list[str] = field(default_factory=list)  # the swipes that were not kept
    opening: bool = False  # before the user's first line: a greeting, whose swipes are alternate greetings


@dataclass
class Chat:
    path: Path
    header: dict[str, Any] | None
    lines: list[Line]
    narration: list[str]  # /sys lines, in order


# -- reading the file -------------------------------------------------------------------------------------
def _is_header(rec: dict) -> bool:
    return "mes" not in rec and ("chat_metadata" in rec or ("user_name" in rec and "character_name" in rec))


def _swipes(rec: dict, mes: str) -> list[str]:
    """The swipes that were not kept; DataError for a bad `swipes` / `swipe_id`."""
    swipes = rec.get("swipes")
    if swipes is None:
        return []
    if not isinstance(swipes, list) or not all(isinstance(s, str) for s in swipes):
        raise DataError(f'field "swipes" must be a list of strings (got {type_name(swipes)})')
    kept = rec.get("swipe_id", 0)
    if not isinstance(kept, int) or isinstance(kept, bool) or not 0 <= kept < len(swipes):
        raise DataError(f'field "swipe_id" is {kept!r} (expected 0..{len(swipes) - 1}: the index of the kept '
                        f'answer among the {len(swipes)} swipes)')
    seen = {mes.strip(), swipes[kept].strip()}
    out = []
    for i, s in enumerate(swipes):
        if i != kept and s.strip() and s.strip() not in seen:
            seen.add(s.strip())
            out.append(s)
    return out


def read_chat(path: str | os.PathLike, encoding: str = "auto") -> Chat:
    """The chat's metadata line, its turns and its narrator lines; DataError with FILE:LINE for a bad line."""
    p = Path(path)
    header, lines, narration = None, [], []
    user_spoke = False
    for i, (where, rec) in enumerate(read_records(p, encoding)):
        if not isinstance(rec, dict):
            raise DataError(f"a line must be a JSON object (got {type_name(rec)}; expected {EXPECTED})", where)
        if i == 0 and _is_header(rec):
            header = rec
            continue
        if "mes" not in rec:
            have = ", ".join(sorted(rec)) or "none"
            raise DataError(f'missing field "mes" (expected the message text; the line has: {have})', where)
        mes = rec["mes"]
        if not isinstance(mes, str):
            raise DataError(f'field "mes" must be a string (got {type_name(mes)})', where)
        try:
            others = _swipes(rec, mes)
        except DataError as e:
            raise DataError(e.detail, where) from None
        extra = rec.get("extra") if isinstance(rec.get("extra"), dict) else {}
        if rec.get("is_system"):  # hidden messages, comments, SillyTavern's own notes (JS truthiness: "" is not)
            continue
        if extra.get("type") == "narrator":
            if mes.strip():
                narration.append(mes)
            continue
        if extra.get("type"):  # another system message type that was not marked is_system
            continue
        name = rec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f'field "name" must be the speaker\'s name (got {type_name(name)} {name!r:.40})', where)
        if not mes.strip():
            continue
        is_user = bool(rec.get("is_user"))
        user_spoke = user_spoke or is_user
        avatar = rec.get("original_avatar") if isinstance(rec.get("original_avatar"), str) else None
        lines.append(Line(where, is_user, name.strip(), avatar, mes, others, opening=not user_spoke and not is_user))
    return Chat(p, header, lines, narration)


# -- the chat -> one conversation ------------------------------------------------------------------------
def _header_name(chat: Chat, key: str) -> str | None:
    v = (chat.header or {}).get(key)
    return v.strip() if isinstance(v, str) and v.strip().lower() not in UNUSED else None


def _target(chat: Chat, wanted: str | None) -> str:
    """The name of the character whose lines are trained."""
    names = list(dict.fromkeys(ln.name for ln in chat.lines if not ln.is_user))
    if not names:
        raise DataError("no line of a character in this chat (expected at least one message that is not the "
                        "user's, hidden or a narrator line)", str(chat.path))
    if wanted:
        keys = {wanted.casefold(), wanted.removesuffix(".png").casefold()}
        for ln in chat.lines:
            avatar = (ln.avatar or "").removesuffix(".png")
            if not ln.is_user and keys & {ln.name.casefold(), avatar.casefold()}:
                return ln.name
        raise DataError(f"character {wanted!r} does not speak in this chat (its characters: {', '.join(names)})",
                        str(chat.path))
    own = _header_name(chat, "character_name")
    if own in names or len(names) == 1:
        return own if own in names else names[0]
    second = next(ln for ln in chat.lines if not ln.is_user and ln.name == names[1])
    raise DataError(f"a group chat: {', '.join(names)} speak in it (expected -O character=NAME to say whose "
                    "lines to train)", second.where)


def _user_name(chat: Chat, wanted: str | None) -> tuple[str, str | None]:
    """(the user's name in the conversation, the chat's own name for the user)."""
    stored = next((ln.name for ln in chat.lines if ln.is_user), None) or _header_name(chat, "user_name")
    return (wanted or stored or DEFAULT_USER), stored


def _texts(chat: Chat, user: str, stored_user: str | None, target: str) -> None:
    """Fill {{char}} (each line's speaker) and {{user}}, and put `user` for the chat's own name of the user."""
    # as a whole word against Latin letters and digits (a Chinese name inside Chinese text is replaced too)
    rename = (re.compile(rf"(?<![A-Za-z0-9_]){re.escape(stored_user)}(?![A-Za-z0-9_])")
              if stored_user and stored_user != user else None)

    def fix(text: str, char: str) -> str:
        text = fill_placeholders(text.replace("\r\n", "\n"), char, user).strip()
        return rename.sub(user, text) if rename else text

    for ln in chat.lines:
        char = user if ln.is_user else ln.name
        ln.text = fix(ln.text, char)
        ln.others = [t for t in (fix(o, char) for o in ln.others) if t and t != ln.text]
        if ln.is_user:
            ln.name = user
    chat.narration = [t for t in (fix(n, target) for n in chat.narration) if t]


def _one_to_one(lines: list[Line]) -> tuple[list[Message], list[dict]]:
    """Messages of a chat where only the trained character and the user speak, and its alternatives."""
    msgs: list[Message] = []
    alts: list[dict] = []
    for ln in lines:
        role = "user" if ln.is_user else "assistant"
        prefix = ""
        if msgs and msgs[-1].role == role:
            prefix = msgs[-1].content + JOIN[role]
            msgs[-1].content = prefix + ln.text
        else:
            msgs.append(Message(role, ln.text))
        if role == "assistant" and ln.others and not ln.opening:
            alts.append({"message": len(msgs) - 1, "chosen": prefix + ln.text,
                         "rejected": [prefix + o for o in ln.others]})
    return msgs, alts


def _scene(lines: list[Line], target: str) -> tuple[list[Message], list[dict]]:
    """Messages of a group chat for `target`: its lines as answers, the others' as "Name: text" user lines."""
    transcript = [{"speaker": None if ln.is_user else ln.name, "name": ln.name, "text": ln.text} for ln in lines]
    msgs, _ = scene_messages(transcript, target)
    answers = [i for i, m in enumerate(msgs) if m.role == "assistant"]
    own = [ln for ln in lines if not ln.is_user and ln.name == target]
    alts = [{"message": i, "chosen": ln.text, "rejected": list(ln.others)}
            for i, ln in zip(answers, own, strict=True) if ln.others and not ln.opening]
    return msgs, alts


def chat_conversation(chat: Chat, *, character: str | None = None, card: Character | None = None,
                      user: str | None = None) -> Conversation:
    """The conversation of one chat for one character (see the module docstring)."""
    if card is not None and not character:
        names = {ln.name for ln in chat.lines if not ln.is_user}
        character = card.name if card.name in names else None
    target = _target(chat, character)
    user_name, stored = _user_name(chat, user)
    _texts(chat, user_name, stored, target)
    speakers = list(dict.fromkeys(ln.name for ln in chat.lines if not ln.is_user))
    if card is not None:
        persona = card.persona
    else:
        persona = "\n".join([fill_placeholders(DEFAULT_SYSTEM_LINE, target, user_name), *chat.narration])
    meta: dict[str, Any] = {"source": NAME, "character": target, "role": target, "user": user_name,
                            "chat": chat.path.name}
    if len(speakers) == 1:
        msgs, alts = _one_to_one(chat.lines)
        system = persona
    else:
        msgs, alts = _scene(chat.lines, target)
        system = scene_system(target, {n: n for n in speakers}, user_name, persona)
        meta["participants"] = speakers
    while msgs and msgs[-1].role == "user":  # the user's last lines: nothing of the character answers them
        msgs.pop()
    if not msgs:
        raise DataError(f"no line of {target} in this chat", str(chat.path))
    if alts:
        meta[ALTERNATIVES] = [a for a in alts if a["message"] < len(msgs)]
    if card is not None:
        meta["card"] = card.to_dict()
    conv = Conversation(msgs, system, meta)
    conv.validate(str(chat.path))
    return conv


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    check_options(NAME, opts, OPTIONS)
    out: dict[str, Any] = {}
    for key in OPTIONS:
        value = opts.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{NAME} option {key}: expected a non-empty text (got {value!r})")
        out[key] = value.strip() if isinstance(value, str) else None
    return out


def read_chat_conversations(path: str | os.PathLike, *, encoding: str = "auto", **opts: Any) -> list[Conversation]:
    """The conversation of one chat file, for the character the options name."""
    o = _options(opts)
    chat = read_chat(path, encoding)
    card = None
    if o["card"]:
        card = read_character(o["card"], user=o["user"] or _user_name(chat, None)[0])
    return [chat_conversation(chat, character=o["character"], card=card, user=o["user"])]


def claims(path: Path) -> bool:
    """Without --from: a .jsonl file whose first line is a SillyTavern metadata line or message."""
    if path.suffix.lower() != ".jsonl":
        return False
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20).lstrip(b"\xef\xbb\xbf").strip()
        rec = json.loads(first.decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and (_is_header(rec) or ("mes" in rec and "is_user" in rec))


FORMAT = Format(NAME, EXPECTED, options=OPTIONS, read_file=read_chat_conversations, claims=claims,
                aliases=("st", "sillytavern-chat"))
