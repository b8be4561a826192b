"""OpenAI-compatible HTTP API over an Engine, plus the web chat at /ui, in one FastAPI app.

    from tunesmith.infer.engine import Engine
    from tunesmith.serve.api import create_app
    app = create_app(Engine.load("default", {"libai": "runs/libai/adapter"}), api_key="secret")
    # uvicorn.run(app, port=8000)   -- or: tunesmith serve --adapter libai=runs/libai/adapter

Routes: GET /health, GET /v1/models ("base" and every adapter; one trained as a character also carries
"character": its name, greeting and greetings), POST /v1/chat/completions (stream or not, n, max_tokens,
temperature, top_p, stop, seed, presence_penalty, frequency_penalty; extensions top_k, num_beams,
repetition_penalty, do_sample, max_history_turns, and the samplers against loops under llama.cpp's and
text-generation-webui's names: min_p, no_repeat_ngram_size, dry_multiplier, dry_base, dry_allowed_length,
dry_sequence_breakers, dry_range), the web chat at /ui and, with a labeling project, the labeling UI at /label.

Defaults: a field a request leaves out takes the adapter's recommended sampler (its generation.json, also in
GET /v1/models/{name} as "generation"), else the server's default; a request's own value always wins.  The
X-Tunesmith-Batching response header says how the request ran: "continuous", or "padded (why)" (the
samplers against loops need padded batches; the server log says so too).

Sampling: a request samples when it sets `do_sample: true`, or a temperature above 0 without do_sample;
otherwise it decodes greedily (or with beams when num_beams > 1).

Every client mistake is answered with an OpenAI-style error body and a 4xx status, never a 500:
    {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p", "code": null}}
The `model` field names a loaded adapter (or "base"); it is looked up by name, never used as a path.

Hostile input costs little: a body over `max_request_bytes` is refused (413) before it is read or parsed,
a prompt that cannot fit the context is refused before most of it is tokenized (see infer/history.py),
and a client that goes away cancels its generation, streamed or not.

Messages as SillyTavern sends them (several system messages, system messages between turns, turns of one role
in a row, a trailing system instruction) become the engine's turns by the rule in serve/turns.py.

`create_app` assembles the app from its parts: the request schema and error bodies (serve/schema.py), the
messages -> turns rule (serve/turns.py), the error handlers, key check and body limit (serve/guards.py), then
one function per route group here (health and models, chat completions, the web UIs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.infer.engine import BASE, Engine
from tunesmith.infer.options import GenerationOptions
from tunesmith.serve.guards import (  # noqa: F401 (OPEN_PATHS, BodyLimit: re-exported)
    DEFAULT_MAX_REQUEST_BYTES,
    OPEN_PATHS,
    UI_PATHS,
    BodyLimit,
    add_error_handlers,
    add_key_check,
)
from tunesmith.serve.schema import (  # noqa: F401 (the request schema and its conversion: re-exported)
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    error_body,
    error_for,
    error_responses,
    to_options,
    unknown_model,
)
from tunesmith.serve.turns import check_fields, to_conversation  # noqa: F401 (to_conversation: re-exported)

API_KEY_ENV = "TUNESMITH_API_KEY"
BATCHING_HEADER = "X-Tunesmith-Batching"
logger = logging.getLogger(__name__)


def create_app(engine: Engine, api_key: str | None = None, *, ui: bool = True, label_project: str | None = None,
               default_options: GenerationOptions | None = None, default_max_history_turns: int | None = None,
               title: str = "tunesmith", max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """The FastAPI app.  api_key (or $TUNESMITH_API_KEY) makes every route but /health need it (Bearer).
    A request body over max_request_bytes is refused with 413 (the web UIs excepted: Gradio limits its own)."""
    api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    defaults = (default_options or GenerationOptions()).validate()
    if max_request_bytes < 1:
        raise ConfigError(f"max_request_bytes: expected an integer >= 1 (got {max_request_bytes})")
    auth_errors = (401,) if api_key else ()
    # 404 is the answer to any unknown path, so every route declares it; 422 replaces FastAPI's own
    # validation schema, which is not the body this app sends.
    app = FastAPI(title=title, docs_url="/docs" if api_key is None else None, redoc_url=None,
                  responses=error_responses(*auth_errors, 404))
    app.state.engine = engine
    add_error_handlers(app)
    if api_key:
        add_key_check(app, api_key)
    add_model_routes(app, engine)
    add_chat_route(app, engine, defaults, default_max_history_turns)
    if ui:
        mount_web_uis(app, engine, api_key, defaults, default_max_history_turns, label_project)
    # Outermost, so that a body is measured before anything reads it.
    app.add_middleware(BodyLimit, limit=max_request_bytes, exempt=UI_PATHS)
    return app


# -- health and models ------------------------------------------------------------------------------
def add_model_routes(app: FastAPI, engine: Engine) -> None:
    """GET /health, GET /v1/models ("base" and every adapter) and GET /v1/models/{name}."""

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": engine.adapter_names}

    def model_card(name: str, now: int) -> dict:
        card = {"id": name, "object": "model", "created": now, "owned_by": "tunesmith",
                "root": engine.model_name, "parent": None if name == BASE else BASE}
        char = engine.character_for(name)
        if char is not None:  # an adapter trained as a character: a client opens its chats with the greeting
            card["character"] = {"name": char.name, "greeting": char.greetings[0] if char.greetings else None,
                                 "greetings": list(char.greetings)}
        generation = engine.generation_for(name)
        if generation:  # the recommended sampler: what a request that leaves these fields out gets
            card["generation"] = generation
        return card

    @app.get("/v1/models")
    async def list_models():
        now = int(time.time())
        return {"object": "list", "data": [model_card(name, now) for name in engine.adapter_names]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        if name not in engine.adapter_names:
            raise unknown_model(name)
        return model_card(name, int(time.time()))


# -- chat completions -------------------------------------------------------------------------------
def add_chat_route(app: FastAPI, engine: Engine, defaults: GenerationOptions,
                   default_max_history_turns: int | None) -> None:
    """POST /v1/chat/completions: streamed (server-sent events) or one JSON answer; a client that goes away
    cancels its generation."""

    @app.post("/v1/chat/completions", responses=error_responses(400, 413, 422, 503))
    async def chat_completions(req: ChatCompletionRequest, request: Request, response: Response):
        if req.model not in engine.adapter_names:
            raise unknown_model(req.model)
        check_fields(req)
        system, messages = to_conversation(req.messages)
        options = to_options(req, engine.options_for(req.model, defaults))
        batching = _batching_note(engine, options)
        response.headers[BATCHING_HEADER] = batching
        turns = req.max_history_turns if req.max_history_turns is not None else default_max_history_turns
        created = int(time.time())
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        with engine.incoming():  # lets the engine batch this request with others arriving now
            try:
                prompt = await run_in_threadpool(engine.prompt_ids, messages, system, req.model, options, turns)
            except TunesmithError as e:
                status, body = error_for(e)
                raise APIError(status, body["error"]["message"], body["error"]["type"], body["error"]["param"],
                               body["error"]["code"]) from None
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                events: asyncio.Queue = asyncio.Queue()
                pending = engine.enqueue(prompt, req.model, options, _queue_writer(events))
                return StreamingResponse(_sse(pending, events, req.model, options, cid, created, include_usage),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                                  BATCHING_HEADER: batching})
            pending = engine.enqueue(prompt, req.model, options)
        return await _answer(request, pending, req.model, cid, created)


_logged_fallbacks: set[str] = set()


def _batching_note(engine: Engine, options: GenerationOptions) -> str:
    """How the request will run ("continuous" or "padded (why)"); each reason for padded batches under a
    continuous-batching engine is logged once."""
    note = engine.served_batching(options)
    if note.startswith("padded (") and note not in _logged_fallbacks:
        _logged_fallbacks.add(note)
        logger.warning("requests run as padded batches: %s", note[len("padded ("):-1])
    return note


async def _answer(request: Request, pending, model: str, cid: str, created: int):
    """The non-streamed answer: the completions as one chat.completion body, once they are all generated."""
    try:
        completions = await _unless_disconnected(request, pending.future)
    except asyncio.CancelledError:
        # uvicorn cancels what still runs when its graceful shutdown ends: say so (a retryable 503)
        # instead of the 500 and traceback an escaping cancellation becomes
        pending.cancel()
        return JSONResponse(error_body("the server is shutting down; retry the request", "server_error"),
                            status_code=503, headers={"Connection": "close", "Retry-After": "1"})
    if completions is None:  # the client went away: stop generating for it (no one reads the answer)
        pending.cancel()
        return Response(status_code=499)
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason, "logprobs": None}
                        for i, c in enumerate(completions)],
            "usage": _usage(completions)}


# -- the web UIs ------------------------------------------------------------------------------------
def mount_web_uis(app: FastAPI, engine: Engine, api_key: str | None, defaults: GenerationOptions,
                  default_max_history_turns: int | None, label_project: str | None) -> None:
    """The web chat at /ui, the labeling UI at /label (with a labeling project), and / redirecting to /ui/."""
    import gradio as gr

    from tunesmith.serve.webui import build_chat_ui, gradio_launch_kwargs

    auth = ((lambda _user, password: secrets.compare_digest(str(password).encode(), api_key.encode()))
            if api_key else None)
    gr.mount_gradio_app(app, build_chat_ui(engine, defaults, default_max_history_turns), path="/ui", auth=auth,
                        auth_message="Enter any user name and the server's API key as password.",
                        **gradio_launch_kwargs())
    if label_project is not None:
        build_label_ui = find_label_ui()
        if build_label_ui is None:
            raise ConfigError("--label-project: the labeling UI is not available in this installation")
        gr.mount_gradio_app(app, build_label_ui(label_project, engine=engine), path="/label", auth=auth,
                            **gradio_launch_kwargs())

    @app.get("/", include_in_schema=False)
    async def root():
        from fastapi.responses import RedirectResponse

        return RedirectResponse("/ui/")


async def _unless_disconnected(request: Request, future):
    """The future's result, or None when the client disconnects first (its body is read by then, so the
    next message from the server is the disconnect)."""
    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    result = asyncio.wrap_future(future)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not result.done():
        result.cancel()
        return None
    return result.result()


def find_label_ui():
    """The labeling UI builder `build_label_ui(project_dir, engine=None)`, or None when it is not installed."""
    try:
        from tunesmith.label.ui import build_label_ui
    except ImportError:
        return None
    return build_label_ui


def _usage(completions) -> dict:
    prompt = completions[0].prompt_tokens if completions else 0
    done = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _chunk(cid: str, created: int, model: str, choices: list[dict], usage: dict | None = None) -> str:
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


_DONE = object()


def _queue_writer(events: asyncio.Queue):
    """on_text for the engine: hands (choice, piece) from the worker thread to this event loop."""
    loop = asyncio.get_running_loop()

    def on_text(choice: int, piece: str) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (choice, piece))

    return on_text


async def _sse(pending, events: asyncio.Queue, model: str, options: GenerationOptions, cid: str, created: int,
               include_usage: bool):
    """Server-sent events in the OpenAI format; text pieces arrive from the engine's worker thread."""
    loop = asyncio.get_running_loop()
    done = _DONE
    pending.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(events.put_nowait, done))
    try:
        yield _chunk(cid, created, model, [{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None} for i in range(options.n)])
        while True:
            item = await events.get()
            if item is done:
                break
            choice, piece = item
            yield _chunk(cid, created, model, [{"index": choice, "delta": {"content": piece}, "finish_reason": None}])
        try:
            completions = pending.future.result()
        except TunesmithError as e:
            yield f"data: {json.dumps(error_for(e)[1], ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
            return
        except Exception:  # an engine failure mid-stream: the status line is already sent, report it in-band
            yield f"data: {json.dumps(error_body('generation failed', 'server_error'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        yield _chunk(cid, created, model, [{"index": i, "delta": {}, "finish_reason": c.finish_reason}
                                           for i, c in enumerate(completions)])
        if include_usage:
            yield _chunk(cid, created, model, [], usage=_usage(completions))
        yield "data: [DONE]\n\n"
    finally:
        if not pending.future.done():  # the client went away: stop generating for it
            pending.cancel()
