"""The loop measure: does an answer repeat itself?

A role adapter trained on a small model often answers "酒作诗，酒作诗，酒作诗，…" until the token limit.
ROUGE-L punishes that only indirectly (lower precision), so the evaluation counts it on its own:

    from tunesmith.eval.repetition import loops, loop_rate
    loops("酒作诗，酒作诗，酒作诗，酒作诗，")   # True
    loop_rate(["吾乃李白。", "饮酒饮酒饮酒饮酒饮酒饮酒"])  # 0.5

An answer *loops* when one n-gram of LOOP_N units occurs at least LOOP_MIN_REPEATS times in it, counted at
every position (so "酒作诗" four times in a row already holds "酒作诗酒" three times).  A unit is one CJK
character or one latin word (letters/digits); punctuation and spaces are left out, so "酒作诗，酒作诗" and
"酒作诗 酒作诗" count alike.  Four units repeated three times is rare in a natural answer of a few dozen
words, and common in degenerate greedy output.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

LOOP_N = 4
LOOP_MIN_REPEATS = 3
_UNIT = re.compile(r"[A-Za-z0-9]+|[^\W\d_A-Za-z]", re.UNICODE)


def units(text: str) -> list[str]:
    """CJK characters and latin words, lower-cased; punctuation and whitespace dropped."""
    return [u.lower() for u in _UNIT.findall(text)]


def longest_repeat(text: str, n: int = LOOP_N) -> tuple[str, int]:
    """The n-gram of units that occurs most often and how often; ("", 0) for texts shorter than n units."""
    seq = units(text)
    counts = Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))
    if not counts:
        return "", 0
    gram, count = counts.most_common(1)[0]
    sep = "" if all(len(u) == 1 for u in gram) else " "
    return sep.join(gram), count


def loops(text: str, n: int = LOOP_N, min_repeats: int = LOOP_MIN_REPEATS) -> bool:
    """True when some n-gram of `n` units repeats `min_repeats` times or more."""
    return longest_repeat(text, n)[1] >= min_repeats


def loop_rate(answers: Iterable[str]) -> float:
    """Share of the answers that loop (0.0 for no answers)."""
    flags = [loops(a) for a in answers]
    return sum(flags) / len(flags) if flags else 0.0


__all__ = ["LOOP_N", "LOOP_MIN_REPEATS", "units", "longest_repeat", "loops", "loop_rate"]
