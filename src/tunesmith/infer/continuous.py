"""Continuous batching for served requests: a finished reply's slot goes to the next request at once.

    batcher = ContinuousBatcher(model, tokenizer, max_rows=16)
    with adapters.lock, adapters.activate(first[0].adapter):
        batcher.run(first, take_more, stop_ids, pad_id)      # settles every request's future
    batcher.release()        # before anything else uses the model (padded batches, eval's jobs, closing)

A session serves requests that share a batch key (adapter, template, sampling settings) through
transformers' ContinuousBatchingManager: the worker thread hands it the first requests, then, while
they are decoding, asks the scheduler (`take_more`) for requests that arrived since and adds them, so a
new request starts at the next step instead of waiting for the whole batch to end.  The session ends
when nothing of its key is in flight or waiting; the scheduler then picks the next key (or a job).

What each request gets is what the padded path gives it: streamed text through its own
IncrementalDecoder (whole characters, stop strings held back), its own max_new_tokens and stop
strings, and a Completion decoded from its generated ids (`finish_row`).  A stop string seen in the
stream, or a request cancelled (a client that disconnected), cancels that row in the manager, which
frees its cache pages for the next request.

Greedy and unseeded sampling requests use this path (see `session_blocker`): under sampling each row
draws from its own distribution whatever else shares the step.  A seeded request, beam search, n > 1,
a repetition penalty (the manager drops that processor) or a sampler of infer/samplers.py (min_p, the
presence/frequency penalties, no-repeat n-grams, DRY: the manager hands processors packed rows, not a
request's own tokens) runs as a padded batch instead.

The manager outlives a session: starting one (allocating its paged KV cache, starting its thread) and
stopping it (joining the thread, collecting garbage) cost about a second on a CPU, which a client asking
one question after another would otherwise pay on every request.  It is released, and the model's
attention implementation restored, before the model is used any other way (`release`).  Its cache holds
`max_rows` rows of the longest first request (at least SESSION_ROW_TOKENS tokens each); a session that
needs longer rows, or other sampling settings, starts a new manager.  A request is admitted only while
its pages fit beside the rows in flight, so the manager never runs out of cache; one that would not fit
waits for the next session.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tunesmith.errors import ModelError
from tunesmith.infer.options import GenerationOptions
from tunesmith.infer.request import PendingRequest, settle
from tunesmith.infer.runners import CB_MAX_BATCH_TOKENS, CB_PAGE_SIZE, continuous_blocker, finish_row, send_unsent
from tunesmith.infer.streaming import IncrementalDecoder

logger = logging.getLogger(__name__)

SESSION_ROW_TOKENS = 1024  # cache tokens reserved per row at least (a later, longer request still fits)
POLL_S = 0.05  # how often the session looks for new and cancelled requests while no token arrives


def session_blocker(model, opts: GenerationOptions) -> str | None:
    """Why a served request with these options cannot join a continuous session (None: it can)."""
    if opts.seed is not None:
        return "a seeded request runs alone, so that its result does not depend on what else runs"
    return continuous_blocker(model, opts, sampling_ok=True)


def pages(request: PendingRequest) -> int:
    """Cache pages a request needs: its prompt and every token it may generate."""
    return math.ceil((len(request.prompt_ids) + request.options.max_new_tokens) / CB_PAGE_SIZE)


@dataclass
class _Row:
    """A request in flight: what was generated so far and what was streamed of it."""

    request: PendingRequest
    decoder: IncrementalDecoder
    ids: list[int] = field(default_factory=list)


class ContinuousBatcher:
    """The continuous-batching manager an engine keeps between sessions (see the module docstring)."""

    def __init__(self, model, tokenizer, max_rows: int):
        self.model = model
        self.tokenizer = tokenizer
        self.max_rows = max_rows
        self.manager = None
        self._settings: tuple | None = None  # (sampling settings, pad id) the manager was started with
        self.total_pages = 0

    def run(self, first: list[PendingRequest], take_more, stop_ids: Sequence[int], pad_id: int) -> None:
        """Serve `first` and every request `take_more(fits, room)` hands over, until none is in flight.
        Each request's future is settled here."""
        self._ensure(first, stop_ids, pad_id)
        session = Session(self.manager, self.tokenizer, stop_ids, self.total_pages, self.max_rows)
        try:
            for request in first:
                session.add(request)
            session.run(take_more)
        finally:
            session.abort()
            if not self.manager.is_running():
                self.release()

    def _ensure(self, first: list[PendingRequest], stop_ids: Sequence[int], pad_id: int) -> None:
        opts = first[0].options
        settings = ((opts.temperature, opts.top_p, opts.top_k) if opts.sampling else None, pad_id)
        per_row = max(SESSION_ROW_TOKENS, max(len(r.prompt_ids) + r.options.max_new_tokens for r in first))
        pages_needed = self.max_rows * math.ceil(per_row / CB_PAGE_SIZE)
        if self.manager is not None and self._settings == settings and self.total_pages >= pages_needed:
            return
        self.release()
        self.manager = _start_manager(self.model, opts, stop_ids, pad_id, pages_needed, self.max_rows)
        self._settings, self.total_pages = settings, pages_needed

    def release(self) -> None:
        """Stop the manager (its thread, its cache) and give the model its own attention back."""
        if self.manager is not None:
            manager, self.manager, self._settings = self.manager, None, None
            manager.stop(block=True, hard_stop=True)


def _start_manager(model, opts: GenerationOptions, stop_ids: Sequence[int], pad_id: int, total_pages: int,
                   max_rows: int):
    from transformers import ContinuousBatchingConfig, GenerationConfig

    cb = ContinuousBatchingConfig(
        page_size=CB_PAGE_SIZE,
        num_blocks=total_pages + 1,
        max_requests_per_batch=max_rows,
        max_batch_tokens=CB_MAX_BATCH_TOKENS,
        allow_block_sharing=False,
        auto_switch_to_flash=False,  # keep the attention the model was loaded with
    )
    gen = dict(max_new_tokens=opts.max_new_tokens, eos_token_id=list(stop_ids), pad_token_id=pad_id)
    if opts.sampling:
        gen.update(do_sample=True, temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k)
    else:
        gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    manager = model.init_continuous_batching(generation_config=GenerationConfig(**gen),
                                             continuous_batching_config=cb)
    manager.start()
    return manager


class Session:
    """One continuous-batching session on the worker thread: the rows in flight and their streams."""

    def __init__(self, manager, tokenizer, stop_ids: Sequence[int], total_pages: int, max_rows: int):
        self.manager = manager
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.stops = set(self.stop_ids)
        self.max_rows = max_rows
        self.total_pages = total_pages
        self.rows: dict[str, _Row] = {}

    # -- admission ----------------------------------------------------------------------------------
    def room(self) -> int:
        return self.max_rows - len(self.rows)

    def fits(self, request: PendingRequest) -> bool:
        """Whether the request's pages fit beside the rows in flight (never more than the session holds)."""
        used = sum(pages(r.request) for r in self.rows.values())
        return used + pages(request) <= self.total_pages

    def add(self, request: PendingRequest) -> None:
        key = f"r{request.id}"
        # every row decodes as it goes: that is where stop strings are seen, streamed or not
        self.rows[key] = _Row(request, IncrementalDecoder(self.tokenizer, request.options.stop))
        self.manager.add_request(list(request.prompt_ids), request_id=key,
                                 max_new_tokens=request.options.max_new_tokens, streaming=True,
                                 eos_token_id=self.stop_ids)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, take_more: Callable[[Callable[[PendingRequest], bool], int], list[PendingRequest]]) -> None:
        """Until no row is in flight: admit what arrived, drop what was cancelled, route each new token."""
        while self.rows:
            for request in take_more(self.fits, self.room()):
                self.add(request)
            self._drop_cancelled()
            out = self.manager.get_result(timeout=POLL_S)
            if out is None:
                self._check_alive()
                continue
            row = self.rows.get(out.request_id)
            if row is None:  # a late token of a row that already ended
                continue
            if out.error is not None:
                self._end(out.request_id, error=ModelError(f"generation failed: {out.error}"))
                continue
            self._advance(out.request_id, row, list(out.generated_tokens))
            if out.is_finished() and out.request_id in self.rows:
                self._end(out.request_id, running=False)

    def _advance(self, key: str, row: _Row, generated: list[int]) -> None:
        """Stream the tokens not seen yet; a stop token, stop string or length limit ends the row."""
        opts = row.request.options
        for tok in generated[len(row.ids):]:
            row.ids.append(tok)
            if tok in self.stops:
                self._end(key)
                return
            piece = row.decoder.push(tok)
            if piece and row.request.on_text is not None:
                self._send(row, piece)
            if row.decoder.stopped:
                self._end(key)
                return
            if len(row.ids) >= opts.max_new_tokens:
                self._end(key)
                return

    def _send(self, row: _Row, piece: str) -> None:
        try:
            row.request.on_text(0, piece)
        except Exception:  # a reader that went away must not end the session for the others
            logger.warning("dropping the stream of request %d: its callback failed", row.request.id, exc_info=True)
            row.request.on_text = None

    def _drop_cancelled(self) -> None:
        for key, row in list(self.rows.items()):
            if row.request.cancelled:
                self._end(key)

    def _end(self, key: str, error: BaseException | None = None, running: bool = True) -> None:
        """Finish a row: cancel it in the manager if it still runs (its pages are freed) and settle its future."""
        row = self.rows.pop(key)
        if running:
            self.manager.cancel_request(key)
        req = row.request
        if error is not None:
            settle(req.future, exception=error)
            return
        if req.cancelled:
            req.future.cancel()
            return
        comp = finish_row(self.tokenizer, row.ids, None, self.stop_ids, req.options, len(req.prompt_ids))
        send_unsent(req, 0, comp, row.decoder)
        settle(req.future, result=[comp])

    def _check_alive(self) -> None:
        """A manager whose thread died fails every row still in flight."""
        status = self.manager.background_thread_status
        if self.manager.is_running() and status.fatal_error is None:
            return
        why = status.fatal_error or "its generation thread stopped"
        for key in list(self.rows):
            self._end(key, error=ModelError(f"continuous batching failed: {why}"))

    def abort(self) -> None:
        """End the rows still in flight (after an error): each request gets an error, never silence."""
        for key in list(self.rows):
            self._end(key, error=ModelError("the continuous batching session ended before this request"))


__all__ = ["SESSION_ROW_TOKENS", "ContinuousBatcher", "session_blocker"]
