"""TRL's preference records `{"prompt"?, "chosen", "rejected"}` <-> pairs (Conversations with meta.rejected).

    tunesmith data convert --from trl pairs.jsonl out.jsonl            # -> our JSONL, one pair per line
    tunesmith data convert out.jsonl trl.jsonl --to trl                 # -> TRL's conversational form

The three shapes TRL's DPO/ORPO trainers take are read:

    strings:          {"prompt": "天空是什么颜色？", "chosen": "蓝色。", "rejected": "绿色。"}
    conversational:   {"prompt": [{"role": "system", "content": "你是李白"}, {"role": "user", "content": "你是谁？"}],
                       "chosen": [{"role": "assistant", "content": "吾乃李白。"}],
                       "rejected": [{"role": "assistant", "content": "我是AI助手。"}]}
    implicit prompt:  {"chosen": [user, assistant_chosen], "rejected": [user, assistant_rejected]}

In every shape the prompt is followed by each answer (`prompt + chosen`, `prompt + rejected`); the two
conversations must be the same up to their last message, which is the answer (an assistant message). So
the implicit prompt is the common prefix, and a `chosen` longer than one message is fine as long as only
its last message differs from `rejected`. A leading system message is the system prompt. Written back in
the conversational shape (one shape per file, which is what `datasets` needs to build its columns).

`read_turns` and `split_turns` are shared with the KTO format (tunesmith.data.kto).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, require_object, type_name
from tunesmith.data.format import Format
from tunesmith.errors import DataError
from tunesmith.preference import PAIR, kind_of, make_pair, rejected

NAME = "trl"
EXPECTED = ('{"prompt"?: str | [{"role", "content"}], "chosen": str | [{"role": "assistant", "content"}], '
            '"rejected": str | [...]}')
OPTIONS = {"system": "system prompt for records without one (default: none)"}
ROLES = ("system", "user", "assistant")


class Turn(NamedTuple):
    role: str
    content: str
    where: str  # the field it came from, for messages: 'chosen[1]', or '"prompt"' for a string


def detect(rec: dict) -> bool:
    return "chosen" in rec and "rejected" in rec


def read_turns(rec: dict, key: str, text_role: str, *, required: bool = True) -> list[Turn] | None:
    """Field `key` as turns: a string is one `text_role` turn, a list holds {"role", "content"} messages.

    None when the field is missing and not required.
    """
    v = rec.get(key)
    if v is None:
        if not required:
            return None
        have = ", ".join(sorted(rec)) or "none"
        raise DataError(f'missing field "{key}" (expected a string or a list of messages; record has: {have})')
    if isinstance(v, str):
        if not v.strip():
            raise DataError(f'field "{key}" is empty (expected a non-empty text)')
        return [Turn(text_role, v, f'"{key}"')]
    if not isinstance(v, list):
        raise DataError(f'field "{key}" must be a string or a list of messages (got {type_name(v)})')
    if not v:
        raise DataError(f'field "{key}" is an empty list (expected at least one message)')
    out = []
    for i, m in enumerate(v):
        at = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise DataError(f'{at} must be a {{"role", "content"}} object (got {type_name(m)})')
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(f"{at}.role is {role!r} (expected 'system', 'user' or 'assistant')")
        if not isinstance(content, str):
            raise DataError(f"{at}.content must be a string (got {type_name(content)})")
        out.append(Turn(role, content, at))
    return out


def split_turns(turns: list[Turn], what: str) -> tuple[str | None, list[Message], Turn]:
    """(system, prompt messages, final answer) of one whole conversation; `what` names it in errors."""
    *prefix, last = turns
    if last.role != "assistant":
        raise DataError(f"{what} ends with a {last.role} message at {last.where} (expected an assistant answer last)")
    if not last.content.strip():
        raise DataError(f"{what}: the answer at {last.where} is empty (expected a non-empty text)")
    system = None
    if prefix and prefix[0].role == "system":
        system = prefix.pop(0).content
    msgs = []
    offset = 1 if prefix and prefix[0].role == "assistant" else 0  # a character's greeting may open the prompt
    for i, t in enumerate(prefix):
        want = "user" if (i + offset) % 2 == 0 else "assistant"
        if t.role != want:
            extra = " (a system message may only come first)" if t.role == "system" else ""
            raise DataError(f"{t.where}: expected a {want} message, got {t.role}{extra} "
                            "(user and assistant alternate, user first or after one opening assistant greeting, "
                            "before the answer)")
        msgs.append(Message(t.role, t.content))
    if not msgs:
        raise DataError(f"{what} has no user message before the answer at {last.where} (expected a prompt)")
    if msgs[-1].role != "user":
        raise DataError(f"{what}: two assistant messages in a row at {last.where} (expected the prompt to end with "
                        "a user message, then the answer)")
    return system, msgs, last


def _no_prompt_hint(rec: dict) -> str:
    if "instruction" in rec or "conversations" in rec:
        # LLaMA-Factory's ranking records are read by the alpaca / sharegpt formats.
        fmt = "alpaca" if "instruction" in rec else "sharegpt"
        return (f'; this looks like LLaMA-Factory\'s {fmt} ranking format: pass --from {fmt} -O ranking=true, '
                'or register it with "ranking": true')
    return ""


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    default_system = opts.get("system") or None

    def convert(rec: Any) -> list[Conversation]:
        require_object(rec, EXPECTED)
        prompt = read_turns(rec, "prompt", "user", required=False)
        if prompt is None and isinstance(rec.get("chosen"), str):
            raise DataError('missing field "prompt" (expected a "prompt" with string answers; only message lists '
                            f'can carry their prompt themselves){_no_prompt_hint(rec)}')
        chosen = read_turns(rec, "chosen", "assistant")
        rej = read_turns(rec, "rejected", "assistant")
        whole_c, whole_r = (prompt or []) + chosen, (prompt or []) + rej
        if prompt is None and len(whole_c) < 2:
            raise DataError('no prompt: "chosen" holds only the answer (expected a "prompt" field, or "chosen" and '
                            f'"rejected" as whole conversations that share the prompt){_no_prompt_hint(rec)}')
        system, msgs, answer = split_turns(whole_c, '"prompt" + "chosen"' if prompt else '"chosen"')
        _, _, other = split_turns(whole_r, '"prompt" + "rejected"' if prompt else '"rejected"')
        same = [(t.role, t.content) for t in whole_c[:-1]] == [(t.role, t.content) for t in whole_r[:-1]]
        if not same:
            raise DataError(f'"chosen" and "rejected" differ before their last message (expected one prompt, then '
                            f"one answer each: the answers are {answer.where} and {other.where})")
        return [make_pair(msgs, answer.content, other.content, system=system or default_system, source=NAME)]

    return convert


def prompt_messages(conv: Conversation) -> list[dict[str, str]]:
    """The prompt of a pair or judged answer as TRL's message list (the system prompt first)."""
    out = [{"role": "system", "content": conv.system}] if conv.system else []
    return out + [{"role": m.role, "content": m.content} for m in conv.prompt_messages]


def export(conv: Conversation) -> dict:
    if kind_of(conv) != PAIR:
        raise DataError('trl writes pairs, but this conversation has no meta "rejected" answer (expected a pair; '
                        "judged answers are written with --to kto)")
    return {"prompt": prompt_messages(conv), "chosen": [{"role": "assistant", "content": conv.answer}],
            "rejected": [{"role": "assistant", "content": rejected(conv)}]}


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS)
