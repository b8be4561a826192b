"""What the engine is asked (a PendingRequest) and what it answers (one Completion per choice).

    req = PendingRequest(prompt_ids, "libai", template, GenerationOptions(n=2), on_text=None)
    req.batch_key()          # requests with equal keys may share one padded batch (of one adapter, or mixed)
    req.cancel()             # its rows end at the next generated token; req.future is cancelled
    req.future.result()      # [Completion(text=..., prompt_tokens=..., completion_tokens=..., finish_reason=...)] * 2

The scheduler (infer/scheduler.py) queues and batches requests; the batch runners (infer/runners.py)
generate their rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from tunesmith.infer.options import GenerationOptions
from tunesmith.template import ChatTemplate


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (stop token or stop string) or "length" (max_new_tokens reached)


@dataclass
class PendingRequest:
    """A queued prompt: `future` gives its Completions; `cancel()` ends its generation early."""

    prompt_ids: list[int]
    adapter: str
    template: ChatTemplate
    options: GenerationOptions
    # one callback per choice (n); called from the worker thread with each new piece of text
    on_text: Callable[[int, str], None] | None
    future: Future = field(default_factory=Future)
    id: int = 0
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    # Set (to the request's stop token ids) when it may share a padded batch with requests of other adapters,
    # each row through its own LoRA (engine.enqueue(mix_adapters=True)); None: it batches with its adapter only.
    mix_key: tuple | None = None
    # The character's earlier replies in the prompt, for DRY's own scope (infer/history.py's PromptIds.own)
    own_ids: list[int] | None = None
    _key: tuple | None = field(default=None, repr=False)

    def cancel(self) -> None:
        """Stop generating for this request (its rows finish at the next step); the future is cancelled."""
        self.cancelled = True
        self.future.cancel()

    @property
    def rows(self) -> int:
        return self.options.n if self.options.num_beams == 1 else 1

    def batch_key(self) -> tuple:
        if self._key is None:
            self._key = self._make_key()
        return self._key

    def _make_key(self) -> tuple:
        o = self.options
        sampling = (o.temperature, o.top_p, o.top_k) if o.sampling else None
        # Mixed-adapter requests share a batch by what the rows stop on, whatever adapter and template built them.
        weights = ("*", self.mix_key) if self.mix_key is not None else (self.adapter, template_key(self.template))
        samplers = (o.min_p if o.sampling else 0.0, o.presence_penalty, o.frequency_penalty, o.no_repeat_ngram_size,
                    (o.dry_multiplier, o.dry_base, o.dry_allowed_length, tuple(o.dry_sequence_breakers), o.dry_range,
                     o.dry_scope)
                    if o.dry_multiplier > 0 else None)
        return (*weights, o.sampling, sampling, samplers, o.repetition_penalty, o.num_beams,
                # beam search returns n per prompt for the whole batch; seeded requests run alone
                o.n if o.num_beams > 1 else None, self.id if o.seed is not None else None)


def template_key(template: ChatTemplate) -> str:
    """Templates are compared by content (a fresh but equal ChatTemplate object is the same template)."""
    return json.dumps(template.to_dict(), sort_keys=True, ensure_ascii=False)


def settle(future: Future, result: Any = None, exception: BaseException | None = None) -> None:
    """Resolve a future unless its request was cancelled meanwhile (a cancelled future cannot take a result)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
