"""ShareGPT records `{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}], "system"?}` <-> Conversations.

    tunesmith data convert --from sharegpt sharegpt.json out.jsonl
    tunesmith data convert --from conversation out.jsonl sharegpt.jsonl --to sharegpt

"user"/"assistant" are accepted as well as "human"/"gpt". A leading system turn or the top-level
`system` field becomes the system prompt. Tool calls (function_call / observation turns) cannot be
represented and make the record an error; a `tools` field is ignored with one warning per file.
Key and tag names can be remapped (`columns=`, `tags=`), as LLaMA-Factory's dataset_info.json does.

With `ranking=true` (LLaMA-Factory's `"ranking": true`) a record is a preference pair: the turns end with
the human question and `chosen` / `rejected` hold one answer turn each (`{"from": "gpt", "value": ...}`):

    tunesmith data convert --from sharegpt -O ranking=true dpo_en_demo.json pairs.jsonl
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, require_object, type_name
from tunesmith.data.format import Format
from tunesmith.errors import ConfigError, DataError
from tunesmith.preference import make_pair

NAME = "sharegpt"
EXPECTED = '{"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...], "system"?: str}'
DEFAULT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools", "chosen": "chosen",
                   "rejected": "rejected"}
DEFAULT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OPTIONS = {
    "columns": "rename columns: {messages, system, tools, chosen, rejected} -> field name",
    "tags": "rename tags: role_tag, content_tag, user_tag, assistant_tag, system_tag, observation_tag, function_tag",
    "system": "system prompt for records without one (default: none)",
    "ranking": "true: preference pairs, the turns end with the question and chosen/rejected hold one answer each",
}


def detect(rec: dict) -> bool:
    return isinstance(rec.get("conversations"), list)


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    cols = dict(DEFAULT_COLUMNS)
    tags = dict(DEFAULT_TAGS)
    for name, given, into in (("columns", opts.get("columns"), cols), ("tags", opts.get("tags"), tags)):
        if given is None:
            continue
        if not isinstance(given, dict):
            raise ConfigError(f"sharegpt option {name} must be a mapping (got {type_name(given)})")
        into.update({k: v for k, v in given.items() if k in into})
    ranking = opts.get("ranking", False)
    if not isinstance(ranking, bool):
        raise ConfigError(f"sharegpt option ranking must be true or false (got {ranking!r})")
    default_system = opts.get("system") or None
    role_key, content_key = tags["role_tag"], tags["content_tag"]
    # Accept the OpenAI spellings too: files called "sharegpt" in the wild mix them.
    users = {tags["user_tag"], "human", "user"}
    assistants = {tags["assistant_tag"], "gpt", "assistant"}
    systems = {tags["system_tag"], "system"}
    tool_tags = {tags["observation_tag"], tags["function_tag"], "tool", "function"}
    expected = (f'{{"{cols["messages"]}": [{{"{role_key}": "{tags["user_tag"]}"|"{tags["assistant_tag"]}"|'
                f'"{tags["system_tag"]}", "{content_key}": str}}, ...]}}')
    warned_tools = False

    def convert(rec: Any) -> list[Conversation]:
        nonlocal warned_tools
        require_object(rec, expected)
        turns = rec.get(cols["messages"])
        if not isinstance(turns, list):
            raise DataError(f'field "{cols["messages"]}" must be a list of turns (got {type_name(turns)}; '
                            f'expected {expected})')
        if cols.get("tools") and rec.get(cols["tools"]) and not warned_tools:
            warned_tools = True
            print(f'warning: {path}: field "{cols["tools"]}" (tool definitions) is ignored: tunesmith trains plain '
                  'chat turns', file=sys.stderr)
        system = None
        msgs: list[Message] = []
        for i, t in enumerate(turns):
            if not isinstance(t, dict):
                raise DataError(f'{cols["messages"]}[{i}] must be an object (got {type_name(t)}; expected {expected})')
            role, content = t.get(role_key), t.get(content_key)
            if not isinstance(content, str):
                raise DataError(f'{cols["messages"]}[{i}].{content_key} must be a string (got {type_name(content)})')
            if role in systems:
                if i != 0:
                    raise DataError(f'{cols["messages"]}[{i}]: a system turn may only come first')
                system = content
                continue
            if role in tool_tags:
                raise DataError(f'{cols["messages"]}[{i}]: tool turns ({role!r}) are not supported (expected only '
                                f'{tags["user_tag"]}/{tags["assistant_tag"]}/{tags["system_tag"]})')
            if role in users:
                want = "user"
            elif role in assistants:
                want = "assistant"
            else:
                raise DataError(f'{cols["messages"]}[{i}].{role_key} is {role!r} (expected {tags["user_tag"]!r}, '
                                f'{tags["assistant_tag"]!r} or {tags["system_tag"]!r})')
            # human first, or one opening gpt turn (a character's greeting); then they alternate
            if msgs and msgs[-1].role == want:
                raise DataError(f'{cols["messages"]}[{i}]: {role!r} out of order (expected turns to alternate '
                                f'{tags["user_tag"]}, {tags["assistant_tag"]}, ... starting with {tags["user_tag"]} '
                                f'or one opening {tags["assistant_tag"]} greeting)')
            if want == "assistant" and not content.strip():
                raise DataError(f'{cols["messages"]}[{i}]: empty answer '
                                f'(expected a non-empty {tags["assistant_tag"]} turn)')
            msgs.append(Message(want, content, loss=bool(t.get("loss", True))))
        if not msgs:
            raise DataError(f'field "{cols["messages"]}" has no turns (expected {expected})')
        if ranking:
            if msgs[-1].role != "user":
                raise DataError(f'the last turn is from {tags["assistant_tag"]!r} (expected a ranking record\'s turns '
                                f'to end with the {tags["user_tag"]!r} question; the answers are in '
                                f'"{cols["chosen"]}" and "{cols["rejected"]}")')
        elif msgs[-1].role != "assistant":
            if cols["chosen"] in rec and cols["rejected"] in rec:
                raise DataError('the last turn is the question and the record has "chosen" and "rejected" answers '
                                '(expected ranking=true for preference pairs: -O ranking=true, or "ranking": true in '
                                'dataset_info.json)')
            raise DataError(f'the last turn is from {tags["user_tag"]!r} (expected the conversation to end with a '
                            f'{tags["assistant_tag"]!r} answer)')
        if system is None and cols.get("system"):
            s = rec.get(cols["system"])
            if s is not None and not isinstance(s, str):
                raise DataError(f'field "{cols["system"]}" must be a string (got {type_name(s)})')
            system = s
        if ranking:
            chosen, rejected = (_answer_turn(rec, cols[k], role_key, content_key, assistants, tags["assistant_tag"])
                                for k in ("chosen", "rejected"))
            return [make_pair(msgs, chosen, rejected, system=system or default_system, source=NAME)]
        return [Conversation(msgs, system or default_system, {"source": NAME})]

    return convert


def _answer_turn(rec: dict, key: str, role_key: str, content_key: str, assistants: set[str], tag: str) -> str:
    """The text of a ranking record's answer turn `{role_key: tag, content_key: str}` (a bare string is taken too)."""
    shape = f'{{"{role_key}": "{tag}", "{content_key}": str}}'
    v = rec.get(key)
    if isinstance(v, dict):
        if v.get(role_key, tag) not in assistants:
            raise DataError(f'field "{key}".{role_key} is {v.get(role_key)!r} (expected {tag!r}: an answer turn)')
        v = v.get(content_key)
    elif v is None:
        have = ", ".join(sorted(rec)) or "none"
        raise DataError(f'missing field "{key}" (expected a ranking record with "{key}": {shape}; record has: {have})')
    if not isinstance(v, str):
        raise DataError(f'field "{key}" must be an answer turn {shape} (got {type_name(v)})')
    if not v.strip():
        raise DataError(f'field "{key}" is an empty answer (expected a non-empty text)')
    return v


def export(conv: Conversation) -> dict:
    turns = []
    for m in conv.messages:
        t: dict[str, Any] = {"from": "human" if m.role == "user" else "gpt", "value": m.content}
        turns.append(t)
    d: dict[str, Any] = {"conversations": turns}
    if conv.system:
        d["system"] = conv.system
    return d


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS)
