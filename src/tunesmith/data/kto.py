"""KTO's unpaired preference records `{"prompt", "completion", "label"}` <-> judged answers (meta.label).

    tunesmith data convert --from kto judged.jsonl out.jsonl       # -> our JSONL, one judged answer per line
    tunesmith data convert out.jsonl kto.jsonl --to kto             # -> TRL's conversational form

As TRL's KTOTrainer takes them, strings or message lists:

    {"prompt": "天空是什么颜色？", "completion": "蓝色。", "label": true}
    {"prompt": [{"role": "user", "content": "你是谁？"}],
     "completion": [{"role": "assistant", "content": "吾乃李白。"}], "label": true}

`label` must be true or false (a desirable or an undesirable completion): 1, "yes" and the like are refused,
since a KTO run on misread labels learns the opposite. The whole conversation is `prompt + completion`;
its last message is the answer, a leading system message the system prompt (as in tunesmith.data.trl).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data.fields import check_options, require_object, type_name
from tunesmith.data.format import Format
from tunesmith.data.trl import prompt_messages, read_turns, split_turns
from tunesmith.errors import DataError
from tunesmith.preference import JUDGED, kind_of, label, make_judged

NAME = "kto"
EXPECTED = ('{"prompt": str | [{"role", "content"}], "completion": str | [{"role": "assistant", "content"}], '
            '"label": true | false}')
OPTIONS = {"system": "system prompt for records without one (default: none)"}


def detect(rec: dict) -> bool:
    return "completion" in rec and "label" in rec


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    default_system = opts.get("system") or None

    def convert(rec: Any) -> list[Conversation]:
        require_object(rec, EXPECTED)
        verdict = rec.get("label")
        if not isinstance(verdict, bool):
            got = "missing" if verdict is None else f"{type_name(verdict)} {verdict!r}"
            raise DataError(f'field "label" must be true or false (got {got}; expected true for a desirable '
                            "completion, false for an undesirable one)")
        prompt = read_turns(rec, "prompt", "user")
        completion = read_turns(rec, "completion", "assistant")
        system, msgs, answer = split_turns(prompt + completion, '"prompt" + "completion"')
        return [make_judged(msgs, answer.content, verdict, system=system or default_system, source=NAME)]

    return convert


def export(conv: Conversation) -> dict:
    if kind_of(conv) != JUDGED:
        raise DataError('kto writes judged answers, but this conversation has no meta "label" (expected true/false; '
                        "pairs are written with --to trl)")
    return {"prompt": prompt_messages(conv), "completion": [{"role": "assistant", "content": conv.answer}],
            "label": label(conv)}


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS)
