"""Quotes and the speeches among them: a quote right after a colon (曹洪曰：“…”) is a speech.

    from tunesmith.data.novel.quotes import find_speeches, quote_spans
    quote_spans("玄德曰：“来。”")                  # [(4, 7)]: (open, close) of each top-level quote
    found = find_speeches(paragraphs)             # found.speeches, found.quotes, found.unclosed

E-book typos are handled: a “ that opens a new `X曰：“` inside an unclosed quote starts a new speech (the
broken one is dropped), a “ typed as a closer after 。！？ closes the quote and is mended in the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tunesmith.data.novel.lexicon import CLAUSE_DELIMS, COLONS, NAME_CHARS, SENTENCE_END
from tunesmith.data.novel.text import Paragraph

_CLOSER_OF = {"“": "”", "「": "」"}


def quote_spans(p: str) -> list[tuple[int, int | None]]:
    """(open, close) index pairs of top-level quotes in a paragraph; close is None for an unclosed quote."""
    spans: list[tuple[int, int | None]] = []
    for opener, closer in (("“", "”"), ("「", "」")):
        if opener in p:
            spans.extend(_paired_spans(p, opener, closer))
    if '"' in p:
        # ASCII quotes do not say which end they are: pair those outside other quotes in order.
        inside = [(o, len(p) if c is None else c) for o, c in spans]
        idx = [i for i, ch in enumerate(p) if ch == '"' and not any(o < i < c for o, c in inside)]
        spans.extend((idx[k], idx[k + 1] if k + 1 < len(idx) else None) for k in range(0, len(idx), 2))
    spans.sort()
    return spans


def _paired_spans(p: str, opener: str, closer: str) -> Iterable[tuple[int, int | None]]:
    marks = [m.start() for m in re.finditer(f"[{opener}{closer}]", p)]  # only the quote marks are visited
    i = p.find(opener)
    j = 0
    while i >= 0:
        depth, end, restart = 1, None, None
        while j < len(marks) and marks[j] <= i:
            j += 1
        for k in marks[j:]:
            ch = p[k]
            if ch == closer:
                depth -= 1
                if depth == 0:
                    end = k
                    break
            elif ch == opener:
                before = p[k - 1]
                if before in COLONS:
                    restart = k  # `X曰：“` inside an open quote: the open one lost its closer
                    break
                if before in SENTENCE_END and depth == 1:
                    end = k  # a “ typed where ” was meant, right after the sentence end
                    break
                depth += 1  # a nested quote of the same kind
        yield (i, end)
        if end is not None:
            i = p.find(opener, end + 1)
        elif restart is not None:
            i = restart
        else:
            return


# -- speakers ----------------------------------------------------------------------------------------


@dataclass
class Speech:
    para: int
    open: int
    close: int
    colon: int  # index of the colon before the quote
    clause_start: int
    line: int
    speaker: str = ""
    addressee: str = ""
    how: str = ""  # which rule named the speaker (start, title, surname, inside, plain, back, previous, answer)



@dataclass
class Speeches:
    """The speeches of a novel in text order, the quote spans of every paragraph holding one, the counts."""

    speeches: list[Speech] = field(default_factory=list)
    spans: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)  # by paragraph index
    quotes: int = 0
    unclosed: int = 0  # quotes after a colon that never close: skipped


def find_speeches(paragraphs: list[Paragraph]) -> Speeches:
    """Every closed quote after a colon, as a Speech; a “ typed for ” is mended in the paragraph's text."""
    found = Speeches()
    for pi, para in enumerate(paragraphs):
        p = para.text
        if not any(q in p for q in "“「\""):
            continue
        spans = quote_spans(p)
        typos = [c for o, c in spans if c is not None and p[c] == p[o] and p[o] in _CLOSER_OF]
        if typos:
            # “…。“ typed for “…。”: mend the text so that chat and later contexts read right
            chars = list(p)
            for c in typos:
                chars[c] = _CLOSER_OF[chars[c]]
            para.text = p = "".join(chars)
        found.spans[pi] = spans
        for o, c in spans:
            found.quotes += 1
            k = o - 1
            while k >= 0 and p[k] in " \u3000\t":
                k -= 1
            if k < 0 or p[k] not in COLONS:
                continue
            if c is None:
                found.unclosed += 1
                continue
            found.speeches.append(Speech(pi, o, c, k, clause_start(p, k), para.line_at(o)))
    return found


def clause_start(p: str, colon: int) -> int:
    """Where the clause before the colon at `colon` starts: after the last clause delimiter."""
    m = colon
    while m > 0 and p[m - 1] not in CLAUSE_DELIMS:
        m -= 1
    return m


def speech_clause(p: str, s: Speech) -> str:
    """The clause before the speech's colon, the speaker's words: “牛王”道： -> 牛王道, the name itself quoted
    (but not a quote that is a speech of its own, 曰：“…”道：)."""
    clause = p[s.clause_start : s.colon]
    if s.clause_start > 0 and p[s.clause_start - 1] in "”」":
        q = p.rfind("“" if p[s.clause_start - 1] == "”" else "「", max(0, s.clause_start - 7), s.clause_start - 1)
        word = p[q + 1 : s.clause_start - 1] if q >= 0 else ""
        if q >= 0 and (q == 0 or p[q - 1] not in COLONS) and NAME_CHARS.match(word):
            clause = word + clause
    return clause
