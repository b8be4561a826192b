"""Alpaca records `{"instruction", "input"?, "output", "system"?, "history"?}` <-> Conversations.

    tunesmith data convert --from alpaca alpaca_data.json out.jsonl
    tunesmith data convert --from conversation out.jsonl alpaca.json --to alpaca

The user turn is `instruction + "\\n" + input` (either may be empty, as in LLaMA-Factory); `history` is a
list of earlier `[user, assistant]` pairs. Column names can be remapped (`columns=`), which is how
LLaMA-Factory `dataset_info.json` entries are read (see tunesmith.data.registry).

With `ranking=true` (LLaMA-Factory's `"ranking": true`) a record is a preference pair: `chosen` and
`rejected` (strings) instead of `output`, read as a pair (meta.rejected, see tunesmith.preference):

    tunesmith data convert --from alpaca -O ranking=true dpo_zh_demo.json pairs.jsonl
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, require_object, type_name
from tunesmith.data.format import Format
from tunesmith.errors import ConfigError, DataError
from tunesmith.preference import make_pair

NAME = "alpaca"
EXPECTED = '{"instruction": str, "input"?: str, "output": str, "system"?: str, "history"?: [[str, str], ...]}'
DEFAULT_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                   "history": "history"}
OPTIONS = {
    "columns": "rename columns: {prompt, query, response, system, history} -> field name (null disables one)",
    "system": "system prompt for records without one (default: none)",
    "ranking": "true: preference pairs, columns chosen/rejected (default: chosen, rejected) instead of response",
}
RANKING_COLUMNS = {"chosen": "chosen", "rejected": "rejected"}


def detect(rec: dict) -> bool:
    return "instruction" in rec and "output" in rec


def _text(rec: dict, key: str | None, *, required: bool = False) -> str:
    if not key:
        return ""
    v = rec.get(key)
    if v is None:
        if required:
            have = ", ".join(sorted(rec)) or "none"
            raise DataError(f'missing field "{key}" (expected an alpaca record with "{key}"; record has: {have})')
        return ""
    if not isinstance(v, str):
        raise DataError(f'field "{key}" must be a string (got {type_name(v)})')
    return v


def _answer(rec: dict, key: str, what: str) -> str:
    """A required, non-empty answer field."""
    if rec.get(key) is None:
        have = ", ".join(sorted(rec)) or "none"
        raise DataError(f'missing field "{key}" (expected {what} with "{key}"; record has: {have})')
    text = _text(rec, key)
    if not text.strip():
        raise DataError(f'field "{key}" is empty (expected a non-empty answer)')
    return text


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    cols = dict(DEFAULT_COLUMNS)
    given = opts.get("columns") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"alpaca option columns must be a mapping (got {type_name(given)})")
    bad = set(given) - set(DEFAULT_COLUMNS) - {"tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag",
                                               "messages"}
    if bad:
        raise ConfigError(f"alpaca columns {sorted(bad)} unknown (expected some of {sorted(DEFAULT_COLUMNS)})")
    cols.update({k: v for k, v in given.items() if k in DEFAULT_COLUMNS})
    ranking = opts.get("ranking", False)
    if not isinstance(ranking, bool):
        raise ConfigError(f"alpaca option ranking must be true or false (got {ranking!r})")
    answers = {k: given.get(k) or v for k, v in RANKING_COLUMNS.items()} if ranking else {}
    if ranking:
        cols["response"] = None
    default_system = opts.get("system") or None
    expected = "{" + ", ".join(f'"{v}"' for v in [*cols.values(), *answers.values()] if v) + "}"

    def convert(rec: Any) -> list[Conversation]:
        require_object(rec, f"an alpaca record {expected}")
        instruction = _text(rec, cols["prompt"])
        query = _text(rec, cols["query"])
        if ranking:
            chosen, rejected = (_answer(rec, answers[k], "a ranking record") for k in ("chosen", "rejected"))
        else:
            if cols["response"] not in rec and "chosen" in rec and "rejected" in rec:
                raise DataError(f'missing field "{cols["response"]}"; this record has "chosen" and "rejected" '
                                '(expected ranking=true for preference pairs: -O ranking=true, or "ranking": true '
                                'in dataset_info.json)')
            response = _answer(rec, cols["response"], "an alpaca record")
        user = "\n".join(t for t in (instruction, query) if t)
        if not user.strip():
            raise DataError(f'fields "{cols["prompt"]}" and "{cols["query"]}" are both empty (expected an instruction)')
        msgs: list[Message] = []
        hist = rec.get(cols["history"]) if cols["history"] else None
        if hist is not None:
            if not isinstance(hist, list):
                raise DataError(f'field "{cols["history"]}" must be a list of [user, assistant] pairs '
                                f'(got {type_name(hist)})')
            for i, pair in enumerate(hist):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                    raise DataError(f'field "{cols["history"]}"[{i}] must be a [user, assistant] pair of strings')
                msgs.append(Message("user", pair[0]))
                msgs.append(Message("assistant", pair[1]))
        msgs.append(Message("user", user))
        msgs.append(Message("assistant", chosen if ranking else response))
        system = _text(rec, cols["system"]) or default_system
        if ranking:
            return [make_pair(msgs[:-1], chosen, rejected, system=system or None, source=NAME)]
        return [Conversation(msgs, system or None, {"source": NAME})]

    return convert


def export(conv: Conversation) -> dict:
    if conv.answer is None:
        raise DataError("alpaca needs an answer but this conversation ends with a user message "
                        "(expected a final assistant message)")
    if conv.opens_with_assistant:
        raise DataError("alpaca holds (user, assistant) pairs, but this conversation opens with the assistant (a "
                        "character's greeting) (expected user first; use --to conversation, messages or sharegpt)")
    msgs = conv.messages
    d: dict[str, Any] = {"instruction": msgs[-2].content, "input": "", "output": msgs[-1].content}
    if conv.system:
        d["system"] = conv.system
    if len(msgs) > 2:
        d["history"] = [[msgs[i].content, msgs[i + 1].content] for i in range(0, len(msgs) - 2, 2)]
    return d


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS)
