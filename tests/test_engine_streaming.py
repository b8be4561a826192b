"""Streaming decode: tokens that split a UTF-8 character (Chinese, emoji) never produce half a character."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from tunesmith.infer.streaming import BatchStreamer, IncrementalDecoder, RowStopCriteria

TEXT = "吾乃李白，字太白。😀🎉 Hello 世界！"


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character map of byte-level BPE (GPT-2)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@pytest.fixture(scope="module")
def tok(tiny_qwen2):
    return AutoTokenizer.from_pretrained(tiny_qwen2)


def byte_tokens(tok, text: str) -> list[int]:
    """One token per UTF-8 byte: every multi-byte character is split across tokens."""
    table = _bytes_to_unicode()
    ids = [tok.convert_tokens_to_ids(table[b]) for b in text.encode("utf-8")]
    assert tok.unk_token_id not in ids and None not in ids
    return ids


def _stream(dec: IncrementalDecoder, ids: list[int]) -> list[str]:
    pieces = [dec.push(t) for t in ids]
    pieces.append(dec.flush())
    return [p for p in pieces if p]


def test_split_characters_are_held_back_until_complete(tok):
    ids = byte_tokens(tok, TEXT)
    assert tok.decode(ids[:1]) == "\ufffd"  # the first byte alone is half a character
    pieces = _stream(IncrementalDecoder(tok), ids)
    assert "".join(pieces) == TEXT
    assert all("\ufffd" not in p for p in pieces)
    assert "😀" in pieces and "吾" in pieces  # each emitted as soon as its last byte arrived
    assert len(pieces) == len(TEXT)


def test_mixed_merged_and_split_tokens(tok):
    # real tokenization for the Chinese part, byte tokens for the emoji in the middle
    ids = tok("吾乃李白", add_special_tokens=False)["input_ids"] + byte_tokens(tok, "😀") + \
        tok("，字太白。", add_special_tokens=False)["input_ids"]
    pieces = _stream(IncrementalDecoder(tok), ids)
    assert "".join(pieces) == "吾乃李白😀，字太白。" and all("\ufffd" not in p for p in pieces)


def test_stop_string_is_never_emitted_even_partially(tok):
    ids = byte_tokens(tok, "第一句。\n第二句")
    dec = IncrementalDecoder(tok, stop=["。\n"])
    pieces = _stream(dec, ids)
    assert "".join(pieces) == "第一句" and dec.stopped
    # "。" alone looks like the start of the stop string: held back, then released when it is not
    dec2 = IncrementalDecoder(tok, stop=["。\n"])
    seen = []
    for t in byte_tokens(tok, "甲。乙"):
        seen.append(dec2.push(t))
    assert "".join(seen) + dec2.flush() == "甲。乙"
    assert "。" not in "".join(seen[: len("甲。".encode())])


def test_batch_streamer_splits_rows_and_stops_each(tok):
    a, b = byte_tokens(tok, "你好😀"), byte_tokens(tok, "世界")
    eos = tok.eos_token_id
    pad = tok.pad_token_id
    rows = [a + [eos], b + [eos] + [pad] * (len(a) - len(b))]
    got = {0: [], 1: []}
    streamer = BatchStreamer([IncrementalDecoder(tok), IncrementalDecoder(tok)],
                             [got[0].append, got[1].append], stop_ids=[eos], max_new=[100, 100])
    streamer.put(torch.tensor([[1, 2], [1, 2]]))  # the prompt comes first and is skipped
    for step in range(len(rows[0])):
        streamer.put(torch.tensor([rows[0][step], rows[1][step]]))
    assert "".join(got[0]) == "你好😀" and "".join(got[1]) == "世界"
    assert all("\ufffd" not in p for p in got[0] + got[1])
    assert streamer.finished == [True, True]


def test_row_stop_criteria_per_row(tok):
    prompt = [5, 6]
    ids = tok("第一句。第二句", add_special_tokens=False)["input_ids"]
    crit = RowStopCriteria(tok, len(prompt), stops=[["。"], []], max_new=[100, 3], stop_ids=[tok.eos_token_id])
    done_at = [None, None]
    for k in range(1, len(ids) + 1):
        x = torch.tensor([prompt + ids[:k], prompt + ids[:k]])
        done = crit(x)
        for r in (0, 1):
            if done[r] and done_at[r] is None:
                done_at[r] = k
    assert tok.decode(ids[: done_at[0]]).endswith("。") and "。" not in tok.decode(ids[: done_at[0] - 1])
    assert done_at[1] == 3
