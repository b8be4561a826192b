"""Samplers against loops: what a GenerationOptions asks of the logits, in one place for chat, serve, the web
chat, eval and make-pairs.

    from tunesmith.infer.samplers import config_fields, logits_processors
    config = GenerationConfig(**base_fields, **config_fields(opts))       # transformers' own: min_p, n-grams
    model.generate(..., generation_config=config,
                   logits_processor=logits_processors(opts, tokenizer, prompt_len))   # penalties and DRY

Where transformers has a processor, it is used through generate's own fields (`config_fields`), so it sits
where generate puts it:
  - min_p: MinPLogitsWarper, among the sampling warpers (a greedy reply is unchanged by it);
  - no_repeat_ngram_size: NoRepeatNGramLogitsProcessor, over the whole sequence, prompt included (a reply
    does not repeat an n-gram of the question either);
  - repetition_penalty: RepetitionPenaltyLogitsProcessor (a per-token penalty: it wrecks Chinese replies
    at 1.2, see docs/serving.md).
transformers has no presence/frequency penalty and no DRY (checked in 5.23), so they are written here as
LogitsProcessors; generate runs them before temperature and the warpers, as llama.cpp orders its samplers:
  - presence_penalty / frequency_penalty (`PresenceFrequencyPenalty`): OpenAI's definition,
    logit[t] -= presence * (count[t] > 0) + frequency * count[t], where count[t] is how often t occurs in the
    reply generated so far.  Counting the reply only (not the prompt) is what OpenAI documents and vLLM does;
    llama.cpp counts its last-n window, prompt included.
  - DRY, "don't repeat yourself" (`DRYPenalty`), with the semantics of text-generation-webui's
    DRYLogitsProcessor (also llama.cpp's and koboldcpp's dry sampler): if the sequence ends with tokens that
    occurred before, followed there by token t, then t would extend a repeat of length n (the length of the
    longest such match); when n >= allowed_length, t's logit loses multiplier * base ** (n - allowed_length).
    Sequence breakers end matches: a match never runs across a breaker token, nothing is penalized right
    after one, and a breaker is never penalized itself.  `dry_range` limits the scan to the last tokens
    (0: the whole prompt and reply, as llama.cpp's default).  `dry_scope="reply"` (an addition) scans the
    reply alone: the reference counts a reply that quotes its question or its persona as a repeat, which
    costs ROUGE-L on tasks that copy from the input (docs/evaluation.md measures both).  `dry_scope="own"`
    (an addition) scans the character's own words: its earlier replies in the prompt (PromptIds.own, each
    encoded alone and ended by OWN_SEPARATOR, a breaker) followed by this reply; a line said again from one
    turn to the next is a repeat, the user's words and the persona are not.

One addition to the reference semantics, for byte-level vocabularies that spell a CJK character in two or
three tokens (SmolLM2, partly Llama 3): while the reply ends inside a character (its last tokens decode to an
incomplete UTF-8 sequence), nothing is penalized.  Penalizing the character's last byte would turn it into
mojibake; the penalty falls on the next character's first token instead, whose match length already counts
the whole character.  (no_repeat_ngram_size and the presence/frequency penalties have no such guard: on
those vocabularies they can cut characters, one reason the recipes recommend DRY.)

Sequence breakers are strings; a token is a breaker when its text contains one of them.  That works alike
for byte-level BPE vocabularies (Qwen, Llama 3), where "\\n" is often merged into tokens such as "。\\n\\n":
each of those breaks too (text-generation-webui takes only the last token of each breaker's encoding and so
misses merged ones).  A breaker string that only ever spans several tokens breaks nothing; llama.cpp
handles those, this does not.

Continuous batching (transformers' paged manager) gives its processors packed rows, not one request's
tokens, so every sampler here needs a padded batch: `continuous_blocker` in runners.py says so.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from tunesmith.infer.history import OWN_SEPARATOR
from tunesmith.infer.options import GenerationOptions

# A match longer than this counts as this long: its penalty (1.75 ** 48 ~ 4e11 at the default base) already
# excludes the token, and the cap bounds each step's scan on text that loops already (in the prompt).
MAX_DRY_MATCH = 50


def config_fields(opts: GenerationOptions) -> dict[str, Any]:
    """The GenerationConfig fields of transformers' own processors that `opts` turns on."""
    fields: dict[str, Any] = {}
    if opts.min_p > 0 and opts.sampling:
        fields["min_p"] = opts.min_p
    if opts.no_repeat_ngram_size > 0:
        fields["no_repeat_ngram_size"] = opts.no_repeat_ngram_size
    return fields


def logits_processors(opts: GenerationOptions, tokenizer, prompt_len: int, own: Sequence[Sequence[int]] = ()):
    """The processors written here that `opts` turns on (an empty LogitsProcessorList when none).
    prompt_len: the width of the (left-padded) prompt; what follows it is the reply.  own: per batch row, the
    character's earlier replies in its prompt (PromptIds.own), for DRY's own scope."""
    from transformers import LogitsProcessorList

    out = LogitsProcessorList()
    if opts.presence_penalty or opts.frequency_penalty:
        out.append(PresenceFrequencyPenalty(opts.presence_penalty, opts.frequency_penalty, prompt_len))
    if opts.dry_multiplier > 0:
        out.append(DRYPenalty(opts.dry_multiplier, opts.dry_base, opts.dry_allowed_length,
                              breaker_ids(tokenizer, opts.dry_sequence_breakers), opts.dry_range, tokenizer,
                              start=prompt_len if opts.dry_scope in ("reply", "own") else 0,
                              before=own if opts.dry_scope == "own" else ()))
    return out


class PresenceFrequencyPenalty:
    """OpenAI's presence and frequency penalties over the tokens generated after `prompt_len`."""

    def __init__(self, presence: float, frequency: float, prompt_len: int):
        self.presence, self.frequency, self.prompt_len = presence, frequency, prompt_len

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.prompt_len:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class DRYPenalty:
    """The DRY penalty (see the module docstring), row by row."""

    def __init__(self, multiplier: float, base: float, allowed_length: int, breakers: Iterable[int],
                 range_: int = 0, tokenizer=None, start: int = 0, before: Sequence[Sequence[int]] = ()):
        self.multiplier, self.base, self.allowed_length = multiplier, base, allowed_length
        self.breakers = frozenset(breakers) | {OWN_SEPARATOR}
        self.range = range_
        self.start = start  # the scan starts here (the reply's first column with dry_scope="reply" or "own")
        # per row, tokens put before what is scanned (dry_scope="own": the earlier replies, each ending in
        # OWN_SEPARATOR, a breaker, so no repeat runs across replies)
        self.before = [list(b) for b in before]
        self.tokenizer = tokenizer  # with it, no penalty inside a character (see the module docstring)

    def __call__(self, input_ids, scores):
        import torch

        for r, reply in enumerate(input_ids[:, self.start:].tolist()):
            if self.tokenizer is not None and reply and ends_inside_character(self.tokenizer, reply):
                continue
            seq = (self.before[r] if r < len(self.before) else []) + reply
            seq = seq[-self.range:] if self.range > 0 else seq
            penalties = dry_penalties(seq, self.multiplier, self.base, self.allowed_length, self.breakers)
            if penalties:
                ids = torch.tensor(list(penalties), device=scores.device)
                scores[r, ids] -= torch.tensor(list(penalties.values()), dtype=scores.dtype, device=scores.device)
        return scores


def dry_penalties(seq: list[int], multiplier: float, base: float, allowed_length: int,
                  breakers: frozenset[int] | set[int]) -> dict[int, float]:
    """{token: penalty} for the token after `seq`: each token that would extend a repeat of at least
    allowed_length tokens (the repeat's length is that of the longest match of seq's end)."""
    if len(seq) < 2 or seq[-1] in breakers:
        return {}
    last, end = seq[-1], len(seq) - 1
    longest: dict[int, int] = {}
    for i in range(end - 1, -1, -1):  # seq[i] == last: what followed it there, seq[i + 1], would repeat
        if seq[i] != last:
            continue
        follower = seq[i + 1]
        if follower in breakers:
            continue
        n = 1
        while n < MAX_DRY_MATCH and i - n >= 0:
            earlier = seq[i - n]
            if earlier in breakers or earlier != seq[end - n]:
                break
            n += 1
        if n >= allowed_length and n > longest.get(follower, 0):
            longest[follower] = n
    return {t: multiplier * base ** (n - allowed_length) for t, n in longest.items()}


def ends_inside_character(tokenizer, seq: list[int]) -> bool:
    """Whether `seq` ends in the middle of a UTF-8 character (a byte-level vocabulary's partial bytes decode to
    U+FFFD; a character has at most 4 bytes, so the last 4 tokens tell)."""
    return tokenizer.decode(seq[-4:], skip_special_tokens=False).endswith("\ufffd")


_BREAKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def breaker_ids(tokenizer, breakers: Iterable[str]) -> frozenset[int]:
    """The tokens whose text contains one of `breakers` (cached per tokenizer and breaker set: decoding a
    150k vocabulary takes a moment)."""
    key = tuple(sorted(set(breakers)))
    try:
        cache = _BREAKERS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        cache = {}
    if key not in cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False)
        cache[key] = frozenset(i for i, text in enumerate(texts) if any(b in text for b in key))
    return cache[key]
