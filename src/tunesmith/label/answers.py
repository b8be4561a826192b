"""Find and parse the JSON in a model answer or a labeled output (IE triples, classification labels).

    from tunesmith.label.answers import parse_answer_json
    r = parse_answer_json('```json\\n[{"predicate": "主演", "object": "周星驰"}]\\n```')
    r.found, r.value, r.error      # True, [{...}], None

An answer holds JSON when it has a fenced block (```json ... ``` or a bare ``` ... ``` fence) or when
the whole answer (stripped) starts with "{" or "[" (a bare object or list, as classification targets
are: ["水果"]).  Anything else is plain text: found=False, with no error.  A fence or a bracket that
does not parse gives found=True and an error naming the line and column, so the playground can show
*why* an IE answer is broken and the store can refuse it in a project whose outputs must be JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FENCE_OPEN = re.compile(r"```[ \t]*(json|JSON)?[ \t]*\n?")


@dataclass(frozen=True)
class JsonResult:
    found: bool  # the text holds (or tries to hold) JSON
    value: Any = None  # the parsed value when it parses
    error: str | None = None  # why it does not parse (None when it does, or when no JSON was found)

    @property
    def ok(self) -> bool:
        return self.found and self.error is None


def _decode(text: str, what: str) -> JsonResult:
    try:
        return JsonResult(True, json.loads(text))
    except json.JSONDecodeError as e:
        return JsonResult(True, None, f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
    except RecursionError:  # a model can write brackets thousands deep
        return JsonResult(True, None, f"{what} is nested too deep to read")


def parse_answer_json(text: str | None) -> JsonResult:
    """Parse the first ```json fenced block, else the whole text when it starts with { or [."""
    if not text:
        return JsonResult(False)
    m = _FENCE_OPEN.search(text)
    if m is not None:
        end = text.find("```", m.end())
        if end < 0:
            return JsonResult(True, None, "the ``` fence is never closed (expected ```json ... ``` around the JSON)")
        body = text[m.end():end].strip()
        if not body:
            return JsonResult(True, None, "the ``` fenced block is empty (expected JSON inside it)")
        return _decode(body, "the fenced block")
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        return _decode(stripped, "the answer")
    return JsonResult(False)


def require_json(text: str, field: str) -> Any:
    """The parsed JSON of `text`, or DataError naming `field` and what was expected."""
    from tunesmith.errors import DataError

    r = parse_answer_json(text)
    if not r.found:
        raise DataError("must be JSON in this project (expected a ```json fenced block or a bare JSON object/list)",
                        field)
    if r.error:
        raise DataError(r.error, field)
    return r.value
