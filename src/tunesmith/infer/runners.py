"""The batch runners: plain functions that turn prompts into Completions with one model call.

    stop_ids = stop_token_ids(tokenizer, template, model.generation_config)
    results = run_padded(model, tokenizer, requests, stop_ids, pad_id)           # one list of Completions per request
    comps = run_continuous(model, tokenizer, prompts, options, stop_ids, pad_id, max_rows=16)   # greedy only

`run_padded` left-pads the requests' rows into one `generate` call.  Rows end one by one (a stop token, a
stop string, the row's own max_new_tokens, or its request cancelled) and each streamed row's text goes to
its request's callback as it is generated.  `run_continuous` hands the prompts to transformers' continuous
batching: a finished reply's slot takes the next prompt at once.  Both decode a row from its generated
token ids only (`finish_row`), so the two give the same greedy text.

They run whatever adapter is active: the caller picks it (AdapterSet.activate) and holds the model's lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from tunesmith.errors import ModelError
from tunesmith.infer.options import GenerationOptions
from tunesmith.infer.request import Completion, PendingRequest
from tunesmith.infer.samplers import config_fields, logits_processors
from tunesmith.infer.streaming import BatchStreamer, IncrementalDecoder, RowStopCriteria, first_stop

CB_PAGE_SIZE = 256  # tokens per KV-cache page (transformers' default)
CB_MAX_BATCH_TOKENS = 2048  # tokens per forward under continuous batching; bounds the attention mask's size


class CancellableStops(RowStopCriteria):
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


def finish_row(tokenizer, ids: list[int], finished_at: int | None, stop_ids: Sequence[int], opts: GenerationOptions,
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
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    cut = first_stop(text, opts.stop)
    if cut >= 0:
        text, reason = text[:cut], "stop"
    if reason is None:
        reason = "length" if n_tokens >= opts.max_new_tokens else "stop"
    return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=n_tokens, finish_reason=reason)


# -- padded batches ---------------------------------------------------------------------------------
def run_padded(model, tokenizer, requests: list[PendingRequest], stop_ids: Sequence[int],
               pad_id: int, adapter_names: Sequence[str] | None = None) -> list[list[Completion]]:
    """One left-padded `generate` over every row of `requests` (which share a batch key); per request, its
    Completions in choice order.  adapter_names: per request, the LoRA adapter its rows run through (PEFT's
    mixed-adapter batch; "__base__" for none), when the batch mixes adapters."""
    import torch
    from transformers import StoppingCriteriaList

    first = requests[0]
    row_req, row_choice = _rows(requests)
    prompts = [requests[q].prompt_ids for q in row_req]
    width = max(len(p) for p in prompts)
    input_ids, attention = _left_padded(prompts, width, pad_id, getattr(model, "device", None) or "cpu")
    row_max = [requests[q].options.max_new_tokens for q in row_req]
    criteria = CancellableStops(tokenizer, width, [requests[q].options.stop for q in row_req], row_max, stop_ids,
                                [requests[q] for q in row_req])
    config = _generation_config(model, first.options, stop_ids, pad_id, max(row_max))
    processors = logits_processors(first.options, tokenizer, width, [requests[q].own_ids or [] for q in row_req])
    streaming = first.options.num_beams == 1 and any(r.on_text is not None for r in requests)
    decoders = _row_decoders(tokenizer, requests, row_req) if streaming else []
    streamer = _batch_streamer(requests, row_req, row_choice, decoders, stop_ids, row_max) if streaming else None

    if first.options.seed is not None:
        torch.manual_seed(first.options.seed)
    with torch.inference_mode():
        per_row = {"adapter_names": [adapter_names[q] for q in row_req]} if adapter_names is not None else {}
        out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                             stopping_criteria=StoppingCriteriaList([criteria]), logits_processor=processors,
                             streamer=streamer, **per_row)
    return _collect(tokenizer, requests, out[:, width:].tolist(), row_req, row_choice, criteria, decoders, stop_ids)


def _rows(requests: list[PendingRequest]) -> tuple[list[int], list[int]]:
    """For each batch row: the index of its request and its choice within that request."""
    row_req: list[int] = []
    row_choice: list[int] = []
    for qi, req in enumerate(requests):
        for c in range(req.rows):
            row_req.append(qi)
            row_choice.append(c)
    return row_req, row_choice


def _left_padded(prompts: list[list[int]], width: int, pad_id: int, device):
    import torch

    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long,
                             device=device)
    return input_ids, attention


def _generation_config(model, opts: GenerationOptions, stop_ids: Sequence[int], pad_id: int, max_new: int):
    from transformers import GenerationConfig

    gen: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=stop_ids, pad_token_id=pad_id,
                               bos_token_id=getattr(model.generation_config, "bos_token_id", None),
                               repetition_penalty=opts.repetition_penalty, num_beams=opts.num_beams)
    if opts.sampling:
        gen.update(do_sample=True, temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k)
    else:
        gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if opts.num_beams > 1:
        gen.update(num_return_sequences=opts.n, early_stopping=True)
    gen.update(config_fields(opts))
    return GenerationConfig(**gen)


def _row_decoders(tokenizer, requests: list[PendingRequest], row_req: list[int]) -> list[IncrementalDecoder | None]:
    """One incremental decoder per streamed row (None for rows whose request does not stream)."""
    return [None if requests[q].on_text is None else IncrementalDecoder(tokenizer, requests[q].options.stop)
            for q in row_req]


def _batch_streamer(requests: list[PendingRequest], row_req: list[int], row_choice: list[int],
                    decoders: list[IncrementalDecoder | None], stop_ids: Sequence[int],
                    row_max: list[int]) -> BatchStreamer:
    callbacks: list[Callable[[str], None] | None] = []
    for q, c in zip(row_req, row_choice):
        on_text = requests[q].on_text
        callbacks.append(None if on_text is None else _bind(on_text, c))
    return BatchStreamer(decoders, callbacks, stop_ids, row_max)


def _bind(on_text: Callable[[int, str], None], choice: int) -> Callable[[str], None]:
    return lambda piece: on_text(choice, piece)


def _collect(tokenizer, requests: list[PendingRequest], generated: list[list[int]], row_req: list[int],
             row_choice: list[int], criteria: CancellableStops, decoders: list[IncrementalDecoder | None],
             stop_ids: Sequence[int]) -> list[list[Completion]]:
    """Each row's Completion, grouped by request; a streamed row's callback gets the text it has not seen yet
    (what the decoder held back, e.g. the start of a possible stop string that was none)."""
    beams = requests[0].options.num_beams
    n = requests[0].options.n
    results: list[list[Completion]] = [[] for _ in requests]
    for k, ids in enumerate(generated):
        if beams > 1:
            q, choice, finished_at = k // n, k % n, None
        else:
            q, choice, finished_at = row_req[k], row_choice[k], criteria.finished_at[k]
        req = requests[q]
        comp = finish_row(tokenizer, ids, finished_at, stop_ids, req.options, len(req.prompt_ids))
        send_unsent(req, choice, comp, decoders[k] if decoders else None)
        results[q].append(comp)
    return results


def send_unsent(req: PendingRequest, choice: int, comp: Completion, decoder: IncrementalDecoder | None) -> None:
    """Stream the end of a finished reply the reader has not seen yet (what the decoder held back, e.g. the
    start of a possible stop string that was none)."""
    if req.on_text is None:
        return
    sent = decoder.text[:decoder.emitted] if decoder is not None else ""
    if comp.text.startswith(sent) and len(comp.text) > len(sent):
        try:
            req.on_text(choice, comp.text[len(sent):])
        except Exception:  # the reader went away; the others still get their results
            pass


# -- continuous batching ----------------------------------------------------------------------------
def continuous_blocker(model, opts: GenerationOptions, sampling_ok: bool = False) -> str | None:
    """Why these options (or this model) cannot run under continuous batching (None: they can).
    `sampling_ok`: served requests may sample (eval's `generate` decodes greedily here)."""
    if opts.sampling and not sampling_ok:
        return "it decodes greedily only (sampled replies would depend on which requests shared a step)"
    if opts.num_beams > 1 or opts.n > 1:
        return "it gives one greedy reply per prompt (no beam search, n = 1)"
    if opts.repetition_penalty != 1.0:
        return "transformers' continuous batching drops the repetition penalty"
    if opts.anti_repeat:
        return ("min_p, presence/frequency penalties, no_repeat_ngram_size and DRY need each request's own tokens, "
                "which transformers' continuous batching does not give its logits processors")
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not callable(getattr(inner, "generate_batch", None)):
        return "this model has no generate_batch (transformers' continuous batching)"
    if not getattr(inner, "is_backend_compatible", lambda: False)():
        # e.g. trust_remote_code models (ChatGLM3): their attention ignores the paged cache
        return f"{type(inner).__name__} does not use transformers' attention interface, which the paged cache needs"
    return None


def run_continuous(model, tokenizer, prompts: list[list[int]], opts: GenerationOptions, stop_ids: Sequence[int],
                   pad_id: int, max_rows: int, progress: bool = False) -> list[Completion]:
    """Greedy replies through transformers' continuous batching, in the order of `prompts`.

    The paged KV cache is sized for `max_rows` replies of the longest prompt + max_new_tokens (the
    library would otherwise size it from free memory: on a CPU, most of the machine's RAM).  Stop
    strings are applied to the finished text, as the padded path does."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    if not prompts:
        return []
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
    config = GenerationConfig(max_new_tokens=opts.max_new_tokens, do_sample=False, eos_token_id=list(stop_ids),
                              pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
    outs = model.generate_batch([list(p) for p in prompts], generation_config=config,
                                continuous_batching_config=cb, warmup=False, progress_bar=progress)
    results = list(outs.values())
    failed = [o.error for o in results if o.error is not None]
    if len(results) != len(prompts) or failed:
        raise ModelError(f"continuous batching returned {len(results)} of {len(prompts)} replies"
                         + (f" ({failed[0]})" if failed else "") + "; rerun with padded batching")
    return [finish_row(tokenizer, list(o.generated_tokens), None, stop_ids, opts, len(p))
            for o, p in zip(results, prompts)]
