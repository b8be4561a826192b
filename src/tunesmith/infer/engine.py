"""The generation engine: one base model, any number of named LoRA adapters, batched and streamed replies.

    from tunesmith.conversation import Message
    from tunesmith.infer.engine import Engine, GenerationOptions

    engine = Engine.load("default", adapters={"libai": "runs/libai/adapter"})
    engine.adapter_names                        # ["base", "libai"]
    engine.chat([Message("user", "你是谁？")], adapter="libai")
    for piece in engine.stream([Message("user", "写一首诗")], options=GenerationOptions(do_sample=True, seed=1)):
        print(piece, end="", flush=True)
    replies = engine.generate([(None, [Message("user", q)]) for q in questions], adapter="libai", batch_size=16)

Adapters share the one base model in memory (a PeftModel with several adapter names): a request for
an adapter activates it, a request for "base" runs with the adapters disabled.  Every adapter's prompt
is built with the template saved next to it by training (template.json), so inference prompts are the
training prompts; "base" uses the template given to `load` (default: the tokenizer's own).

`engine.merge(name)` folds one adapter into the base weights (fp32 models only, where merging and
unmerging are exact to rounding): its requests then cost what the base costs (an unmerged LoRA on every
linear layer made CPU decoding 1.16x to 2x slower, depending on the CPU; BENCHMARKS.md).  A request for any other
adapter or for "base" unmerges it first, so answers never depend on what was merged.  Eval merges each adapter
while it answers.

Requests from several threads (the API server, the web UI) go to one worker thread.  It waits a few
milliseconds for more requests to arrive, then runs all waiting requests with the same adapter and
compatible sampling settings as one left-padded `generate` batch, streaming each row's text to its own
request.  So throughput grows with the number of concurrent clients.  Per-row stop strings and
max_new_tokens are honoured inside the batch (rows finish one by one).  A request with a `seed` runs in a
batch of its own so that its result does not depend on what else was running.

`generate(...)` (used by eval) returns one string per conversation, or, when options.n > 1, a list of
n strings per conversation.  With `batching="continuous"` (or "auto" and greedy options) it runs
transformers' continuous batching instead of padded batches: a finished reply's row is refilled with the
next conversation at once, so a reply that loops to the length limit no longer holds the whole batch.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunesmith.adapter_spec import ADAPTER_NAME_RE, BASE, check_adapter_name  # noqa: F401 (re-export)
from tunesmith.conversation import Message
from tunesmith.errors import ConfigError, ModelError
from tunesmith.infer.history import PromptTooLongError, check_messages, fit_prompt  # noqa: F401 (re-export)
from tunesmith.infer.options import BATCHING_MODES, GenerationOptions
from tunesmith.infer.streaming import BatchStreamer, IncrementalDecoder, RowStopCriteria, first_stop
from tunesmith.template import ChatTemplate, load_template, stop_token_ids, template_from_arg

CB_PAGE_SIZE = 256  # tokens per KV-cache page (transformers' default)
CB_MAX_BATCH_TOKENS = 2048  # tokens per forward under continuous batching; bounds the attention mask's size
INCOMING_WAIT_S = 0.5  # longest wait for announced requests (see Engine.incoming)

__all__ = ["BASE", "Completion", "Engine", "GenerationOptions", "PendingRequest", "PromptTooLongError",
           "UnknownAdapterError"]


class UnknownAdapterError(ModelError):
    """A request named an adapter that is not loaded."""


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
        return (self.adapter, _template_key(self.template), o.sampling, sampling, o.repetition_penalty, o.num_beams,
                # beam search returns n per prompt for the whole batch; seeded requests run alone
                o.n if o.num_beams > 1 else None, self.id if o.seed is not None else None)


def _parse_adapter_specs(adapters: dict[str, str] | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for name, path in (adapters or {}).items():
        check_adapter_name(name, "adapter")
        p = Path(path).expanduser()
        if not (p / "adapter_config.json").is_file():
            raise ModelError(f"{p}: not a LoRA adapter folder (expected adapter_config.json, for adapter {name!r})")
        out[name] = p
    return out


class Engine:
    def __init__(self, model, tokenizer, base_template: ChatTemplate, adapter_templates: dict[str, ChatTemplate],
                 *, model_name: str = "model", max_batch_size: int = 16, batch_wait_s: float = 0.02):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.base_template = base_template
        self._templates = {BASE: base_template, **adapter_templates}
        self.adapter_names: list[str] = [BASE, *adapter_templates]
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._lock = threading.RLock()  # the model (and its active adapter) is used by one generate at a time
        self._cv = threading.Condition()
        self._pending: list[PendingRequest] = []
        self._running: list[PendingRequest] = []  # the batch the worker is generating
        self._worker: threading.Thread | None = None
        self._last_batch_end = 0.0
        self._incoming = 0
        self._closed = False
        self._ids = itertools.count(1)
        self._stop_cache: dict[str, list[int]] = {}
        self._merged: str | None = None  # the adapter folded into the base weights, if any
        self.context_length = self._context_length()

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str = "default", adapters: dict[str, str] | None = None, *, dtype: str = "auto",
             device: str = "auto", quantization: str = "none", template: str | None = None,
             trust_remote_code: bool = False, max_batch_size: int = 16, batch_wait_s: float = 0.02) -> Engine:
        """Load the base once and attach each adapter by name.

        `template`: a template name (auto, tokenizer, chatml, plain, instruction) or a folder / file holding
        a template.json; it is used for "base" and for adapters that have no template.json of their own.
        """
        from tunesmith.model import load_adapter, load_model

        specs = _parse_adapter_specs(adapters)
        m, tok = load_model(model, dtype=dtype, device=device, quantization=quantization,
                            trust_remote_code=trust_remote_code)
        base_tpl = template_from_arg(template, tok)
        templates: dict[str, ChatTemplate] = {}
        for name, path in specs.items():
            m = load_adapter(m, path, name=name)
            templates[name] = load_template(path) or base_tpl
        m.eval()
        return cls(m, tok, base_tpl, templates, model_name=str(model), max_batch_size=max_batch_size,
                   batch_wait_s=batch_wait_s)

    def _context_length(self) -> int:
        cfg = getattr(self.model, "config", None)
        n = None
        for attr in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
            v = getattr(cfg, attr, None)
            if isinstance(v, int) and v > 0:
                n = v
                break
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 10_000_000:
            n = min(n, tok_max) if n else tok_max
        return n or 2048

    # -- templates and prompts ----------------------------------------------------------------------
    def template_for(self, adapter: str) -> ChatTemplate:
        self._check_adapter(adapter)
        return self._templates[adapter]

    def _check_adapter(self, adapter: str) -> None:
        if adapter not in self._templates:
            raise UnknownAdapterError(f"unknown adapter {adapter!r} (loaded: {', '.join(self.adapter_names)})")

    def prompt_ids(self, messages: Sequence[Message], system: str | None = None, adapter: str = BASE,
                   options: GenerationOptions | None = None, max_history_turns: int | None = None,
                   template: ChatTemplate | None = None) -> list[int]:
        """The prompt the reply is generated from: history trimmed to max_history_turns and to the context."""
        opts = options or GenerationOptions()
        tpl = template or self.template_for(adapter)
        budget = self.context_length - opts.max_new_tokens
        if budget < 1:
            raise ConfigError(f"max_new_tokens: {opts.max_new_tokens} leaves no room for a prompt "
                              f"(the model's context is {self.context_length} tokens)")
        ids, _ = fit_prompt(self.tokenizer, tpl, system, list(messages), budget=budget,
                            max_history_turns=max_history_turns)
        return ids

    def _pad_id(self, stop_ids: Sequence[int]) -> int:
        """What fills finished rows: the tokenizer's pad token, else the first stop token."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else stop_ids[0]

    def stop_ids(self, template: ChatTemplate) -> list[int]:
        key = _template_key(template)
        if key not in self._stop_cache:
            self._stop_cache[key] = stop_token_ids(self.tokenizer, template,
                                                   getattr(self.model, "generation_config", None))
        return self._stop_cache[key]

    # -- the request queue --------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], adapter: str = BASE, options: GenerationOptions | None = None,
               on_text: Callable[[int, str], None] | None = None,
               template: ChatTemplate | None = None) -> Future[list[Completion]]:
        """Queue one prompt; the future gives its n Completions.  on_text(choice, piece) streams text."""
        return self.enqueue(prompt_ids, adapter, options, on_text, template).future

    def enqueue(self, prompt_ids: list[int], adapter: str = BASE, options: GenerationOptions | None = None,
                on_text: Callable[[int, str], None] | None = None,
                template: ChatTemplate | None = None) -> PendingRequest:
        """Like submit, but returns the PendingRequest (its future, and cancel())."""
        opts = (options or GenerationOptions()).validate()
        tpl = template or self.template_for(adapter)
        if len(prompt_ids) + opts.max_new_tokens > self.context_length:
            raise PromptTooLongError(f"prompt of {len(prompt_ids)} tokens + max_new_tokens {opts.max_new_tokens} "
                                     f"exceeds the model's context of {self.context_length} tokens")
        req = PendingRequest(list(prompt_ids), adapter, tpl, opts, on_text, id=next(self._ids))
        with self._cv:
            if self._closed:
                raise ModelError("the engine is closed")
            self._pending.append(req)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._worker_loop, name="tunesmith-engine", daemon=True)
                self._worker.start()
            self._cv.notify_all()
        return req

    @contextmanager
    def incoming(self):
        """Announce a request that is about to be enqueued (its prompt is being prepared).

        The worker waits for announced requests (briefly) before starting a batch, so that requests a
        server received together are batched together even when preparing their prompts takes a while.
        """
        with self._cv:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cv:
                self._incoming -= 1
                self._cv.notify_all()

    def close(self, timeout: float = 60.0, *, cancel: bool = False) -> None:
        """Stop taking requests, let the worker finish what it runs (or, with cancel, end it at the next
        token: a server stopping must not wait for long replies), and wait for it.

        Waiting matters: a daemon thread still inside torch when the interpreter exits aborts the
        process ("terminate called without an active exception").
        """
        with self._cv:
            self._closed = True
            if cancel:
                for r in [*self._pending, *self._running]:
                    r.cancel()
            self._cv.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def _worker_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return
                # Wait briefly for requests arriving together, so that they share one batch: until no new
                # request came for batch_wait_s (at most 5 * batch_wait_s), and while a server is still
                # preparing prompts it announced with incoming() (at most INCOMING_WAIT_S).  Counted from the
                # end of the last batch too: clients answered by it send their next requests right after it.
                start = max(self._pending[0].arrived, self._last_batch_end)
                deadline = start + 5 * self.batch_wait_s
                while sum(r.rows for r in self._pending) < self.max_batch_size and not self._closed:
                    quiet_until = min(deadline,
                                      max(self._pending[-1].arrived, self._last_batch_end) + self.batch_wait_s)
                    if self._incoming > 0:
                        quiet_until = max(quiet_until, start + INCOMING_WAIT_S)
                    now = time.monotonic()
                    if now >= quiet_until:
                        break
                    self._cv.wait(quiet_until - now)
                batch = self._take_batch()
                self._running = batch
            try:
                self._execute(batch)
            finally:
                with self._cv:
                    self._running = []
            self._last_batch_end = time.monotonic()

    def _take_batch(self) -> list[PendingRequest]:
        key = self._pending[0].batch_key()
        batch, rest, rows = [], [], 0
        for r in self._pending:
            if r.cancelled:
                r.future.cancel()
                continue
            if r.batch_key() == key and (not batch or rows + r.rows <= self.max_batch_size):
                batch.append(r)
                rows += r.rows
            else:
                rest.append(r)
        self._pending = rest
        return batch

    def _execute(self, batch: list[PendingRequest]) -> None:
        if not batch:
            return
        try:
            with self._lock:
                results = self._run_batch(batch)
        except BaseException as e:  # hand the error to every waiting request, keep the worker alive
            for r in batch:
                _settle(r.future, exception=e)
            return
        for r, res in zip(batch, results):
            _settle(r.future, result=res)

    # -- one batched generate -----------------------------------------------------------------------
    def can_merge(self) -> bool:
        """Merging is offered for fp32, unquantized models: there, unmerging restores the base weights to
        rounding, so switching back and forth cannot drift (half precision or 4/8-bit would)."""
        import torch
        from peft import PeftModel

        if not isinstance(self.model, PeftModel) or getattr(self.model.config, "quantization_config", None):
            return False
        return all(p.dtype == torch.float32 for p in self.model.parameters())

    def merge(self, adapter: str) -> bool:
        """Fold `adapter` into the base weights until another adapter or "base" is asked for.
        Returns False (and changes nothing) where merging is not offered (see `can_merge`)."""
        self._check_adapter(adapter)
        if adapter == BASE or not self.can_merge():
            return False
        with self._lock:
            if self._merged != adapter:
                self.unmerge()
                self.model.set_adapter(adapter)
                self.model.merge_adapter()
                self._merged = adapter
        return True

    def unmerge(self) -> None:
        """Restore the base weights (a no-op when nothing is merged)."""
        with self._lock:
            if self._merged is not None:
                self.model.unmerge_adapter()  # unmerges whatever layers hold merged weights
                self._merged = None

    def _adapter_context(self, adapter: str):
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return nullcontext()
        if adapter == self._merged:
            return nullcontext()  # already active and folded in (set_adapter would unmerge it)
        self.unmerge()  # merged weights answer only for the merged adapter
        if adapter == BASE:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return nullcontext()

    def _run_batch(self, requests: list[PendingRequest]) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        first = requests[0]
        opts0, tpl = first.options, first.template
        beams = opts0.num_beams
        stop_ids = self.stop_ids(tpl)
        pad_id = self._pad_id(stop_ids)

        row_req: list[int] = []
        row_choice: list[int] = []
        for qi, req in enumerate(requests):
            for c in range(req.rows):
                row_req.append(qi)
                row_choice.append(c)
        prompts = [requests[q].prompt_ids for q in row_req]
        width = max(len(p) for p in prompts)
        device = getattr(self.model, "device", None) or "cpu"
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long,
                                 device=device)

        row_stops = [requests[q].options.stop for q in row_req]
        row_max = [requests[q].options.max_new_tokens for q in row_req]
        cancel_flags = [requests[q] for q in row_req]
        criteria = _CancellableStops(self.tokenizer, width, row_stops, row_max, stop_ids, cancel_flags)

        gen: dict[str, Any] = dict(max_new_tokens=max(row_max), eos_token_id=stop_ids, pad_token_id=pad_id,
                                   bos_token_id=getattr(self.model.generation_config, "bos_token_id", None),
                                   repetition_penalty=opts0.repetition_penalty, num_beams=beams)
        if opts0.sampling:
            gen.update(do_sample=True, temperature=opts0.temperature, top_p=opts0.top_p, top_k=opts0.top_k)
        else:
            gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if beams > 1:
            gen.update(num_return_sequences=opts0.n, early_stopping=True)
        config = GenerationConfig(**gen)

        streaming = beams == 1 and any(r.on_text is not None for r in requests)
        decoders: list[IncrementalDecoder | None] = []
        callbacks: list[Callable[[str], None] | None] = []
        if streaming:
            for q, c in zip(row_req, row_choice):
                req = requests[q]
                if req.on_text is None:
                    decoders.append(None)
                    callbacks.append(None)
                else:
                    decoders.append(IncrementalDecoder(self.tokenizer, req.options.stop))
                    callbacks.append(_bind(req.on_text, c))
        streamer = BatchStreamer(decoders, callbacks, stop_ids, row_max) if streaming else None

        if opts0.seed is not None:
            torch.manual_seed(opts0.seed)
        with torch.inference_mode(), self._adapter_context(first.adapter):
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                                      stopping_criteria=StoppingCriteriaList([criteria]), streamer=streamer)
        generated = out[:, width:].tolist()

        results: list[list[Completion]] = [[] for _ in requests]
        for k, ids in enumerate(generated):
            if beams > 1:
                q, choice = k // opts0.n, k % opts0.n
                finished_at = None
            else:
                q, choice = row_req[k], row_choice[k]
                finished_at = criteria.finished_at[k]
            req = requests[q]
            comp = self._finish(ids, finished_at, stop_ids, req.options, len(req.prompt_ids))
            if req.on_text is not None:
                dec = decoders[k] if streaming else None
                sent = dec.text[:dec.emitted] if dec is not None else ""
                if comp.text.startswith(sent) and len(comp.text) > len(sent):
                    try:
                        req.on_text(choice, comp.text[len(sent):])
                    except Exception:  # the reader went away; the others still get their results
                        pass
            results[q].append(comp)
        return results

    def _finish(self, ids: list[int], finished_at: int | None, stop_ids: Sequence[int], opts: GenerationOptions,
                prompt_tokens: int) -> Completion:
        """Decode one row from its generated token ids only (never by cutting characters off the full text)."""
        ids = ids[: opts.max_new_tokens]
        if finished_at is not None:
            ids = ids[:finished_at]
        stops = set(stop_ids)
        reason = None
        n_tokens = len(ids)
        for i, t in enumerate(ids):
            if t in stops:
                ids, n_tokens, reason = ids[:i], i + 1, "stop"
                break
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        cut = first_stop(text, opts.stop)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        if reason is None:
            reason = "length" if n_tokens >= opts.max_new_tokens else "stop"
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=n_tokens, finish_reason=reason)

    # -- continuous batching (eval) -----------------------------------------------------------------
    def _continuous_blocker(self, opts: GenerationOptions) -> str | None:
        """Why these options cannot run under continuous batching (None: they can)."""
        if opts.sampling:
            return "it decodes greedily only (sampled replies would depend on which requests shared a step)"
        if opts.num_beams > 1 or opts.n > 1:
            return "it gives one greedy reply per prompt (no beam search, n = 1)"
        if opts.repetition_penalty != 1.0:
            return "transformers' continuous batching drops the repetition penalty"
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if not callable(getattr(inner, "generate_batch", None)):
            return "this model has no generate_batch (transformers' continuous batching)"
        if not getattr(inner, "is_backend_compatible", lambda: False)():
            # e.g. trust_remote_code models (ChatGLM3): their attention ignores the paged cache
            return f"{type(inner).__name__} does not use transformers' attention interface, which the paged cache needs"
        return None

    def continuous_ok(self, opts: GenerationOptions) -> bool:
        return self._continuous_blocker(opts) is None

    def resolve_batching(self, batching: str, opts: GenerationOptions) -> str:
        """"padded" or "continuous": what `generate(batching=...)` will do with these options.
        An explicit "continuous" the options cannot use is a ConfigError naming why."""
        if batching not in BATCHING_MODES:
            raise ConfigError(f"batching: expected one of {', '.join(BATCHING_MODES)} (got {batching!r})")
        if batching == "padded":
            return batching
        why_not = self._continuous_blocker(opts)
        if why_not and batching == "continuous":
            raise ConfigError(f"continuous batching: {why_not}; use padded batching for these options")
        return "padded" if why_not else "continuous"

    def _run_continuous(self, prompts: list[list[int]], adapter: str, tpl: ChatTemplate, opts: GenerationOptions,
                        max_rows: int, progress: bool = False) -> list[Completion]:
        """Greedy replies through transformers' continuous batching, in the order of `prompts`.

        The paged KV cache is sized for `max_rows` replies of the longest prompt + max_new_tokens (the
        library would otherwise size it from free memory: on a CPU, most of the machine's RAM).  Stop
        strings are applied to the finished text, as the padded path does."""
        import math

        from transformers import ContinuousBatchingConfig, GenerationConfig

        if not prompts:
            return []
        stop_ids = self.stop_ids(tpl)
        pad_id = self._pad_id(stop_ids)
        longest = max(len(p) for p in prompts) + opts.max_new_tokens
        rows = max(1, min(max_rows, len(prompts)))
        cb = ContinuousBatchingConfig(
            page_size=CB_PAGE_SIZE,
            num_blocks=rows * math.ceil(longest / CB_PAGE_SIZE) + 1,
            max_requests_per_batch=rows,
            max_batch_tokens=CB_MAX_BATCH_TOKENS,  # tokens per forward: prompts are prefilled in chunks of this
            allow_block_sharing=False,  # prefix sharing pays off for many long shared prompts, not here
            auto_switch_to_flash=False,  # keep the attention the model was loaded with
        )
        config = GenerationConfig(max_new_tokens=opts.max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                                  pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
        with self._adapter_context(adapter):
            outs = self.model.generate_batch([list(p) for p in prompts], generation_config=config,
                                             continuous_batching_config=cb, warmup=False, progress_bar=progress)
        results = list(outs.values())
        failed = [o.error for o in results if o.error is not None]
        if len(results) != len(prompts) or failed:
            raise ModelError(f"continuous batching returned {len(results)} of {len(prompts)} replies"
                             + (f" ({failed[0]})" if failed else "") + "; rerun with padded batching")
        return [self._finish(list(o.generated_tokens), None, stop_ids, opts, len(p)) for o, p in zip(results, prompts)]

    # -- convenience APIs ---------------------------------------------------------------------------
    def complete(self, messages: Sequence[Message], system: str | None = None, adapter: str = BASE,
                 options: GenerationOptions | None = None, max_history_turns: int | None = None,
                 on_text: Callable[[int, str], None] | None = None) -> list[Completion]:
        """n Completions (text, token counts, finish reason) for one conversation."""
        opts = (options or GenerationOptions()).validate()
        ids = self.prompt_ids(messages, system, adapter, opts, max_history_turns)
        return self.submit(ids, adapter, opts, on_text).result()

    def chat(self, messages: list[Message], system: str | None = None, adapter: str = BASE,
             options: GenerationOptions | None = None, max_history_turns: int | None = None) -> str:
        """The reply to the last user message (the first one when options.n > 1)."""
        return self.complete(messages, system, adapter, options, max_history_turns)[0].text

    def stream(self, messages: list[Message], system: str | None = None, adapter: str = BASE,
               options: GenerationOptions | None = None, max_history_turns: int | None = None) -> Iterator[str]:
        """Pieces of the reply as they are generated (whole characters only; n is taken as 1)."""
        opts = replace(options or GenerationOptions(), n=1).validate()
        ids = self.prompt_ids(messages, system, adapter, opts, max_history_turns)
        return _stream_iterator(self, ids, adapter, opts)

    def generate(self, conversations: Sequence[tuple[str | None, Sequence[Message]]], adapter: str = BASE,
                 options: GenerationOptions | None = None, batch_size: int = 16,
                 template: ChatTemplate | None = None, batching: str = "padded",
                 progress: bool = False) -> list[str] | list[list[str]]:
        """One reply per (system, messages) conversation, in order; a list of n replies each when n > 1.

        `batching="padded"`: conversations run in left-padded batches of `batch_size` rows, sorted by prompt
        length so that little padding is needed; a batch lasts as long as its longest reply.
        `batching="continuous"` (greedy decoding only, see `continuous_ok`): transformers' continuous
        batching keeps up to `batch_size` replies in flight and starts the next conversation as soon as one
        reply ends, so one runaway reply no longer holds fifteen finished rows.  "auto": continuous when
        the options allow it, else padded.  `template` overrides the adapter's template (e.g. to prompt
        "base" the way an adapter was trained).  `progress`: a progress bar with an ETA on stderr, one step per
        finished reply (transformers' own bar under continuous batching).
        """
        opts = (options or GenerationOptions()).validate()
        tpl = template or self.template_for(adapter)
        self._check_adapter(adapter)
        mode = self.resolve_batching(batching, opts)
        prompts = [self.prompt_ids(msgs, system, adapter, opts, template=tpl) for system, msgs in conversations]
        if mode == "continuous":
            with self._lock:
                comps = self._run_continuous(prompts, adapter, tpl, opts, batch_size, progress)
            return [c.text for c in comps]
        from tqdm.auto import tqdm

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_batch = max(1, batch_size // (opts.n if opts.num_beams == 1 else 1))
        out: list[Any] = [None] * len(prompts)
        with tqdm(total=len(prompts), desc=f"Answering {len(prompts)} prompts", unit="reply",
                  disable=not progress) as bar:
            for start in range(0, len(order), per_batch):
                chunk = order[start:start + per_batch]
                reqs = [PendingRequest(prompts[i], adapter, tpl, opts, None, id=next(self._ids)) for i in chunk]
                with self._lock:
                    results = self._run_batch(reqs)
                for i, comps in zip(chunk, results):
                    out[i] = [c.text for c in comps] if opts.n > 1 else comps[0].text
                bar.update(len(chunk))
        return out


def _template_key(template: ChatTemplate) -> str:
    """Templates are compared by content (a fresh but equal ChatTemplate object is the same template)."""
    return json.dumps(template.to_dict(), sort_keys=True, ensure_ascii=False)


def _settle(future: Future, result: Any = None, exception: BaseException | None = None) -> None:
    """Resolve a future unless its request was cancelled meanwhile (a cancelled future cannot take a result)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _bind(on_text: Callable[[int, str], None], choice: int) -> Callable[[str], None]:
    return lambda piece: on_text(choice, piece)


class _CancellableStops(RowStopCriteria):
    """RowStopCriteria that also ends rows whose request was cancelled and records when each row ended."""

    def __init__(self, tokenizer, prompt_len, stops, max_new, stop_ids, requests):
        super().__init__(tokenizer, prompt_len, stops, max_new, stop_ids)
        self.requests = requests
        self.rows = len(stops)
        self.finished_at: list[int | None] = [None] * self.rows

    def __call__(self, input_ids, scores=None, **kwargs):
        done = super().__call__(input_ids, scores, **kwargs)
        if input_ids.shape[0] == self.rows:  # not beam search: rows are the requests' rows
            gen_len = input_ids.shape[1] - self.prompt_len
            for r in range(self.rows):
                if self.requests[r].cancelled:
                    done[r] = True
                if done[r] and self.finished_at[r] is None:
                    self.finished_at[r] = gen_len
        return done


def _stream_iterator(engine: Engine, ids: list[int], adapter: str, opts: GenerationOptions) -> Iterator[str]:
    pieces: queue.Queue = queue.Queue()
    done = object()
    req = engine.enqueue(ids, adapter, opts, lambda _choice, piece: pieces.put(piece))
    fut = req.future
    fut.add_done_callback(lambda _f: pieces.put(done))
    try:
        while True:
            item = pieces.get()
            if item is done:
                break
            yield item
        fut.result()  # re-raise a generation error in the reader's thread
    finally:
        if not fut.done():  # the reader went away (e.g. a client disconnected): stop generating for it
            req.cancel()
