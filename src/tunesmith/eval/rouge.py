"""ROUGE-L for Chinese (and mixed Chinese/latin) text, best of several references.

    from tunesmith.eval.rouge import rouge_l_zh, tokenize_chars, tokenize_words
    rouge_l_zh("我乃燕人张翼德", ["俺乃燕人张翼德！", "我是张飞"])            # 0.857...: best reference wins
    rouge_l_zh(pred, refs, tokenizer="words")                               # jieba words instead

Why not a ROUGE package: the default tokenizers of the common ones (rouge-score, rouge) keep only
[a-z0-9] and drop every Chinese character, so two Chinese texts score 0 (or 1 when both become empty).

Tokenization, "chars" view (the main one):
  1. Unicode NFKC (full-width letters/digits become ASCII), then lower case;
  2. every CJK character (Han ideographs incl. extensions and compatibility forms, kana, hangul) is one token;
  3. a run of other letters/digits (a latin word, a number such as 2022) is one token;
  4. everything else (punctuation, symbols, spaces) is dropped.
"words" view: the same normalisation, then jieba words (jieba.lcut, default precise mode), dropping the
ones without a letter, digit or CJK character (punctuation, spaces).

ROUGE-L F = F1 of LCS precision (LCS / prediction tokens) and recall (LCS / reference tokens), beta = 1,
as rouge-score computes it.  Against several references the best F is taken (the RoleLLM protocol).
An empty prediction (or one with only punctuation) scores 0.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

TOKENIZERS = ("chars", "words")

# Han (ext. A, URO, compatibility, ext. B+), CJK radicals/strokes, kana, hangul syllables.
_CJK = ("\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3040-\u30ff\u31c0-\u31ef\u3400-\u4dbf\u4e00-\u9fff"
        "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f")
_TOKEN = re.compile(f"([{_CJK}])|([^\\W_{_CJK}]+)")
_WORDISH = re.compile(f"[{_CJK}]|[^\\W_]")

CHARS_DESCRIPTION = (
    "chars: NFKC + lower case; each CJK character is one token; a run of other letters/digits "
    "(a latin word, a number) is one token; punctuation, symbols and spaces are dropped"
)
WORDS_DESCRIPTION = (
    "words: NFKC + lower case; jieba words (jieba.lcut, precise mode); pieces without a letter, digit "
    "or CJK character (punctuation, spaces) are dropped"
)


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").lower()


def tokenize_chars(text: str) -> list[str]:
    """'李白说: Hello 2022年！' -> ['李', '白', '说', 'hello', '2022', '年']"""
    return [m.group(0) for m in _TOKEN.finditer(normalize(text))]


_jieba = None


def _load_jieba():
    global _jieba
    if _jieba is None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" chatter on stderr
        jieba.initialize()
        _jieba = jieba
    return _jieba


def tokenize_words(text: str) -> list[str]:
    """'我乃燕人张翼德！' -> jieba words without punctuation, e.g. ['我', '乃', '燕人', '张翼德']"""
    jieba = _load_jieba()
    out: list[str] = []
    for w in jieba.lcut(normalize(text)):
        w = w.strip()
        if w and _WORDISH.search(w):
            out.append(w)
    return out


def tokenize(text: str, tokenizer: str = "chars") -> list[str]:
    if tokenizer == "chars":
        return tokenize_chars(text)
    if tokenizer == "words":
        return tokenize_words(text)
    from tunesmith.errors import ConfigError

    raise ConfigError(f"ROUGE tokenizer {tokenizer!r} is not one of {', '.join(TOKENIZERS)}")


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a)*len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_tokens(pred: Sequence[str], ref: Sequence[str]) -> dict[str, float]:
    """{'p', 'r', 'f'} of ROUGE-L between two token lists (all 0 when either is empty)."""
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return {"p": 0.0, "r": 0.0, "f": 0.0}
    p, r = lcs / len(pred), lcs / len(ref)
    return {"p": p, "r": r, "f": 2 * p * r / (p + r)}


def rouge_l_zh(prediction: str, references: str | Iterable[str], tokenizer: str = "chars") -> float:
    """ROUGE-L F of one prediction against the best of its references (0.0 for an empty prediction)."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("rouge_l_zh needs at least one reference")
    pred = tokenize(prediction, tokenizer)
    if not pred:
        return 0.0
    return max(rouge_l_tokens(pred, tokenize(r, tokenizer))["f"] for r in refs)


def mean_rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = "chars") -> float:
    """Corpus score: the mean over samples of the per-sample best-reference ROUGE-L F."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        return 0.0
    return sum(rouge_l_zh(p, r, tokenizer) for p, r in zip(predictions, references)) / len(predictions)
