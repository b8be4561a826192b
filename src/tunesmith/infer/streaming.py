"""Token ids -> text pieces, safely: never half a UTF-8 character, never a stop string or what follows it.

    dec = IncrementalDecoder(tokenizer, stop=["\\n\\n"])
    for token_id in ids:
        piece = dec.push(token_id)      # "" while a character or a possible stop string is incomplete
    piece = dec.flush()                 # what was held back at the end

Byte-level BPE tokens can end in the middle of a multi-byte character (one Chinese character is three
bytes, an emoji four).  Decoding such a prefix yields U+FFFD; the decoder holds those bytes back until
the character is complete.  It decodes a small window of recent tokens (the approach of vLLM / TGI),
so each step costs the same however long the reply is.

`BatchStreamer` is a transformers streamer for a whole batch: it splits each step's tokens per row
and hands every row's new text to that row's callback.  `RowStopCriteria` ends rows one by one, at a
stop token, at a stop string, or at the row's own max_new_tokens, so one batch can serve requests
with different limits and no tokens past a stop are generated for that row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in text, or -1."""
    best = -1
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


def _held_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces (see the module docstring)."""

    def __init__(self, tokenizer, stop: Sequence[str] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # decoded, complete characters so far
        self.emitted = 0  # characters of self.text already handed out
        self.stopped = False  # a stop string was seen: nothing more is emitted
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=self.skip,
                                     clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        # Decode the window [prefix:] and compare with [prefix:read]: the difference is the new text.
        # Decoding with a little left context keeps tokenizers that drop a leading space correct.
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def flush(self) -> str:
        """Emit what was held back (e.g. text that looked like the start of a stop string)."""
        if not self.stopped and self._read < len(self.ids):
            tail = self._decode(self.ids[self._prefix:])[len(self._decode(self.ids[self._prefix:self._read])):]
            self.text += tail
            self._read = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stop and not self.stopped:
            cut = first_stop(self.text, self.stop)
            if cut >= 0:
                self.text = self.text[:cut]
                self.stopped = True
        end = len(self.text)
        if not (final or self.stopped):
            end -= _held_suffix(self.text, self.stop)
        if end <= self.emitted:
            return ""
        piece = self.text[self.emitted:end]
        self.emitted = end
        return piece


class RowStopCriteria:
    """Per-row stopping for one generate call: stop ids, stop strings, per-row max_new_tokens.

    Works for any number of rows per request (n copies, or batch*beams in beam search): row r belongs
    to request r // (rows // requests).  Records, per row, how many tokens it had when it finished.
    """

    def __init__(self, tokenizer, prompt_len: int, stops: list[list[str]], max_new: list[int], stop_ids: Sequence[int]):
        import torch

        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stops = stops
        self.max_new = max_new
        self.stop_ids = torch.tensor(sorted(set(stop_ids)) or [-1], dtype=torch.long)
        # A stop string of B bytes spans at most B tokens (each real token carries at least one byte).
        self.window = [max((len(s.encode("utf-8")) for s in ss), default=0) + 2 for ss in stops]

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        rows = input_ids.shape[0]
        per = max(1, rows // len(self.stops))
        gen_len = input_ids.shape[1] - self.prompt_len
        last = input_ids[:, -1].cpu()
        done = torch.isin(last, self.stop_ids)
        for r in range(rows):
            q = min(r // per, len(self.stops) - 1)
            if gen_len >= self.max_new[q]:
                done[r] = True
            elif self.stops[q] and not done[r]:
                tail = input_ids[r, max(self.prompt_len, input_ids.shape[1] - self.window[q]):].tolist()
                text = self.tokenizer.decode(tail, skip_special_tokens=True)
                if first_stop(text, self.stops[q]) >= 0:
                    done[r] = True
        return done.to(input_ids.device)


class BatchStreamer:
    """A transformers streamer for a batch: row r's new text goes to callbacks[r] (None: not streamed)."""

    def __init__(self, decoders: list[IncrementalDecoder | None], callbacks: list[Callable[[str], None] | None],
                 stop_ids: Sequence[int], max_new: list[int]):
        self.decoders = decoders
        self.callbacks = callbacks
        self.stop_ids = set(int(i) for i in stop_ids)
        self.max_new = max_new
        self.finished = [False] * len(decoders)
        self.counts = [0] * len(decoders)
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the prompt ids
            self._prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        for r, tok in enumerate(tokens):
            if self.finished[r]:
                continue
            self.counts[r] += 1
            if tok in self.stop_ids:
                self.finished[r] = True
                continue
            dec = self.decoders[r]
            if dec is not None:
                piece = dec.push(tok)
                if piece and self.callbacks[r] is not None:
                    try:
                        self.callbacks[r](piece)
                    except Exception:  # a reader that went away must not end the batch for the others
                        logger.warning("dropping the stream of row %d: its callback failed", r, exc_info=True)
                        self.callbacks[r] = None
                if dec.stopped:
                    self.finished[r] = True
            if self.counts[r] >= self.max_new[r]:
                self.finished[r] = True

    def end(self) -> None:
        pass  # the runner flushes each row with its final text (see runners.run_padded)
