"""The narrative kept before a speech: a window of `context_chars` before the colon, moved forward to a
sentence start (after 。！？ and their closing quotes, never inside a quote), never before the paragraph.

    from tunesmith.data.novel.context import context_start, sentence_starts
    starts = sentence_starts(p, quote_spans(p))
    p[context_start(p, clause_start, colon + 1, starts, 200) : colon + 1]   # "曹仁回城中，与众商议。曹洪曰："
"""

from __future__ import annotations

import bisect
import re

from tunesmith.data.novel.lexicon import SENTENCE_BREAK

_QUOTE_CHAR = re.compile("[“「”」]")


def sentence_starts(p: str, spans: list[tuple[int, int | None]]) -> list[int]:
    """Offsets where a sentence starts cleanly: after 。！？… (and closing quotes), never inside a quote."""
    inside = [(o, c if c is not None else len(p)) for o, c in spans]
    starts = [0]
    j = 0
    n = len(p)
    for m in SENTENCE_BREAK.finditer(p):
        k = m.end()
        if k >= n:
            continue
        # reject offsets inside a quote span (but the offset right after a closing quote is fine)
        while j < len(inside) and inside[j][1] < k - 1:
            j += 1
        if j < len(inside) and inside[j][0] < k <= inside[j][1]:
            continue
        if starts[-1] != k:
            starts.append(k)
    return starts


def context_start(p: str, clause_start: int, end: int, starts: list[int], context_chars: int) -> int:
    """Where the context of the speech whose colon ends at `end` starts in paragraph `p`."""
    start = _window_start(p, clause_start, end, starts, context_chars)
    # A paragraph that opens inside a quote (a verse broken over lines in the source): start after its ”.
    depth = 0
    for m in _QUOTE_CHAR.finditer(p, start, clause_start):
        if m.group() in "“「":
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                start, depth = m.end(), 0
    return start


def _window_start(p: str, clause_start: int, end: int, starts: list[int], context_chars: int) -> int:
    lo = end - context_chars
    if lo <= 0:
        return 0
    i = bisect.bisect_left(starts, lo)
    if i < len(starts) and starts[i] <= clause_start:
        return starts[i]
    # no sentence boundary inside the window: fall back to a clause boundary, else the speaker clause itself
    for k in range(lo, clause_start):
        if p[k - 1] in "，；、,;":
            return k
    return clause_start
