"""The data phase of a preference run: pairs or judged answers -> the token ids TRL's trainers take.

    from tunesmith.train.preference_data import encode_pairs, encode_judged
    rows, stats = encode_pairs(convs, tokenizer, template, max_source_len=512, max_target_len=256)
    rows[0]  # {"prompt_ids": [...], "chosen_ids": [...], "rejected_ids": [...]}
    rows, stats = encode_judged(convs, tokenizer, template, ...)   # {"prompt_ids", "completion_ids", "label"}

The chat template encodes them exactly as it encodes SFT data (tunesmith.template.encode_conversation): the
prompt ids are the tokens inference sends before an answer (the same segments, tokenized the same way), and
an answer's ids are its learned tokens, the end-of-turn token included, so both answers of a pair are scored
after one identical prompt and the model learns where an answer stops. TRL is handed these ids and does not
tokenize again (tunesmith.train.preference_trainers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.preference import label, rejected
from tunesmith.train.dataset import IGNORE_INDEX, EncodeStats


def split_prompt_answer(tokenizer, tpl, conv: Conversation, *, max_source_len: int | None,
                        max_target_len: int | None) -> tuple[list[int], list[int], bool, bool]:
    """(prompt ids, final-answer ids, prompt was cut, answer was cut) of a conversation ending in an answer."""
    from tunesmith.template import encode_conversation

    ex = encode_conversation(tokenizer, tpl, conv, max_source_len=max_source_len, max_target_len=max_target_len,
                             last_turn_only=True)
    ids, labels = ex["input_ids"], ex["labels"]
    learned = [i for i, t in enumerate(labels) if t != IGNORE_INDEX]
    if not learned:
        return ids, [], False, False
    start, end = learned[0], learned[-1] + 1
    n_src = start
    source_cut = max_source_len is not None and n_src >= max_source_len
    target_cut = max_target_len is not None and len(ids) - n_src >= max_target_len
    return ids[:start], ids[start:end], source_cut, target_cut


def _with_answer(conv: Conversation, answer: str) -> Conversation:
    return Conversation(messages=[*conv.prompt_messages, Message("assistant", answer)], system=conv.system)


def encode_pairs(convs: Sequence[Conversation], tokenizer, tpl, *, max_source_len: int | None,
                 max_target_len: int | None) -> tuple[list[dict[str, Any]], EncodeStats]:
    """{prompt_ids, chosen_ids, rejected_ids} per pair; a pair with an empty answer after the cutoffs is dropped."""
    stats = EncodeStats(conversations=len(convs))
    rows: list[dict[str, Any]] = []
    for conv in convs:
        kw = dict(max_source_len=max_source_len, max_target_len=max_target_len)
        prompt, chosen, src_cut, tgt_cut = split_prompt_answer(tokenizer, tpl, conv, **kw)
        prompt_r, rejected_ids, _, tgt_cut_r = split_prompt_answer(
            tokenizer, tpl, _with_answer(conv, rejected(conv)), **kw)
        if prompt_r != prompt:  # one template, one prompt: different ids would mean the template is broken
            raise AssertionError("the chosen and rejected answers were encoded after different prompts")
        stats.source_cut += src_cut
        stats.target_cut += tgt_cut or tgt_cut_r
        if not chosen or not rejected_ids:
            stats.dropped_no_loss += 1
            continue
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected_ids})
        stats.tokens += 2 * len(prompt) + len(chosen) + len(rejected_ids)
        stats.loss_tokens += len(chosen) + len(rejected_ids)
    stats.samples = len(rows)
    return rows, stats


def encode_judged(convs: Sequence[Conversation], tokenizer, tpl, *, max_source_len: int | None,
                  max_target_len: int | None) -> tuple[list[dict[str, Any]], EncodeStats]:
    """{prompt_ids, completion_ids, label} per judged answer (KTO)."""
    stats = EncodeStats(conversations=len(convs))
    rows: list[dict[str, Any]] = []
    for conv in convs:
        prompt, completion, src_cut, tgt_cut = split_prompt_answer(
            tokenizer, tpl, conv, max_source_len=max_source_len, max_target_len=max_target_len)
        stats.source_cut += src_cut
        stats.target_cut += tgt_cut
        if not completion:
            stats.dropped_no_loss += 1
            continue
        rows.append({"prompt_ids": prompt, "completion_ids": completion, "label": label(conv)})
        stats.tokens += len(prompt) + len(completion)
        stats.loss_tokens += len(completion)
    stats.samples = len(rows)
    return rows, stats


def first_sequence(row: dict[str, Any]) -> list[int]:
    """Prompt + first answer of an encoded row (pair or judged): a probe for checking the saved adapter."""
    return row["prompt_ids"] + row.get("chosen_ids", row.get("completion_ids", []))
