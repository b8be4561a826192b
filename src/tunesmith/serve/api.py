"""OpenAI-compatible HTTP API over an Engine, plus the web chat at /ui, in one FastAPI app.

    from tunesmith.infer.engine import Engine
    from tunesmith.serve.api import create_app
    app = create_app(Engine.load("default", {"libai": "runs/libai/adapter"}), api_key="secret")
    # uvicorn.run(app, port=8000)   -- or: tunesmith serve --adapter libai=runs/libai/adapter

Routes: GET /health, GET /v1/models ("base" and every adapter), POST /v1/chat/completions (stream or not,
n, max_tokens, temperature, top_p, stop, seed; extensions top_k, num_beams, repetition_penalty,
do_sample, max_history_turns), the web chat at /ui and, with a labeling project, the labeling UI at /label.

Sampling: a request samples when it sets `do_sample: true`, or a temperature above 0 without do_sample;
otherwise it decodes greedily (or with beams when num_beams > 1).

Every client mistake is answered with an OpenAI-style error body and a 4xx status, never a 500:
    {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p", "code": null}}
The `model` field names a loaded adapter (or "base"); it is looked up by name, never used as a path.

Hostile input costs little: a body over `max_request_bytes` is refused (413) before it is read or parsed,
a prompt that cannot fit the context is refused before most of it is tokenized (see infer/history.py),
and a client that goes away cancels its generation, streamed or not.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError, DataError, TunesmithError
from tunesmith.infer.engine import BASE, Engine, PromptTooLongError, UnknownAdapterError
from tunesmith.infer.options import GenerationOptions

API_KEY_ENV = "TUNESMITH_API_KEY"
OPEN_PATHS = ("/health", "/")  # "/" only redirects to the web chat
# The web UIs (Gradio) ask for the key on their own login page (any user name, the key as password).
UI_PATHS = ("/ui", "/label")
# Engine option names -> the request field a client sets
_PARAM_NAMES = {"max_new_tokens": "max_tokens"}
# The largest request body taken (413 above it).  A full 128k-token context of Chinese sent as JSON
# escapes is about 1.2 MB; the limit leaves room above that and keeps a hostile body cheap to refuse.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every 4xx answer (OpenAI's error format)."""

    error: ErrorDetail


def _error_responses(*statuses: int) -> dict:
    """OpenAPI declarations of the error answers a route can give (clients and fuzzers read them)."""
    what = {400: "Invalid request (a parameter out of range, messages out of order, a prompt longer than the "
                 "context)", 401: "Missing or wrong API key", 404: "Unknown model (or path)",
            413: "Request body over the server's --max-request-bytes",
            503: "The server is shutting down (retry)",
            422: "A body of the wrong shape (a field of the wrong type, a missing field, text that is not valid "
                 "Unicode)"}
    return {s: {"model": ErrorResponse, "description": what[s]} for s in statuses}


# -- request schema ---------------------------------------------------------------------------------
def _valid_unicode(text: str) -> str:
    # JSON can carry a lone UTF-16 surrogate ("x\ud800y"); it is no character, and the tokenizer fails on it
    # deep inside the template (once a 500).  Every text field is checked here, so the error names the field.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError(
            "unicode_surrogate", "expected valid Unicode text (found a lone UTF-16 surrogate {code} at character "
            "{at})", {"code": f"\\u{ord(text[e.start]):04x}", "at": e.start}) from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Text = "text"
    text: Text = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Text
    content: Text | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Other OpenAI fields (user, presence_penalty, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")
    model: Text
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: Text | list[Text] | None = None
    seed: int | None = None
    # extensions
    top_k: int | None = None
    num_beams: int | None = None
    repetition_penalty: float | None = None
    do_sample: bool | None = None
    max_history_turns: int | None = Field(default=None, ge=0)


# -- conversion -------------------------------------------------------------------------------------
def _text(content: str | list[TextPart] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type != "text":
            raise APIError(400, f"messages[{index}]: only text content is supported (got a {part.type!r} part)",
                           param=f"messages[{index}].content")
        parts.append(part.text)
    return "".join(parts)


def to_conversation(messages: list[ChatMessage]) -> tuple[str | None, list[Message]]:
    """OpenAI messages -> (system, alternating user/assistant messages ending with the user's)."""
    if not messages:
        raise APIError(400, "messages must not be empty (expected at least one user message)", param="messages")
    system_parts: list[str] = []
    convo: list[Message] = []
    for i, m in enumerate(messages):
        text = _text(m.content, i)
        if m.role in ("system", "developer"):
            if convo:
                raise APIError(400, f"messages[{i}]: a system message must come before the user/assistant turns",
                               param=f"messages[{i}].role")
            system_parts.append(text)
            continue
        if m.role not in ("user", "assistant"):
            raise APIError(400, f"messages[{i}]: role {m.role!r} is not supported (expected system, user or assistant)",
                           param=f"messages[{i}].role")
        expected = "user" if len(convo) % 2 == 0 else "assistant"
        if m.role != expected:
            raise APIError(400, f"messages[{i}]: expected role {expected!r} (user and assistant alternate, user first)",
                           param=f"messages[{i}].role")
        convo.append(Message(m.role, text))
    if not convo:
        raise APIError(400, "messages has no user message", param="messages")
    if convo[-1].role != "user":
        raise APIError(400, "the last message must be from the user", param="messages")
    return ("\n".join(system_parts) if system_parts else None), convo


def to_options(req: ChatCompletionRequest, defaults: GenerationOptions) -> GenerationOptions:
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    values: dict[str, Any] = {
        "max_new_tokens": defaults.max_new_tokens if max_tokens is None else max_tokens,
        "temperature": defaults.temperature if req.temperature is None else req.temperature,
        "top_p": defaults.top_p if req.top_p is None else req.top_p,
        "top_k": defaults.top_k if req.top_k is None else req.top_k,
        "repetition_penalty": defaults.repetition_penalty if req.repetition_penalty is None else req.repetition_penalty,
        "num_beams": defaults.num_beams if req.num_beams is None else req.num_beams,
        "seed": req.seed,
        "stop": [req.stop] if isinstance(req.stop, str) else list(req.stop or []),
        "n": req.n,
    }
    if req.do_sample is not None:
        values["do_sample"] = req.do_sample
    elif req.temperature is not None:
        values["do_sample"] = req.temperature > 0
    else:
        values["do_sample"] = defaults.do_sample
    try:
        return GenerationOptions(**values).validate()
    except ConfigError as e:
        field, _, rest = str(e).partition(":")
        param = _PARAM_NAMES.get(field, field)
        raise APIError(400, f"{param}:{rest}" if rest else str(e), param=param) from None


# -- the app ----------------------------------------------------------------------------------------
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
                  responses=_error_responses(*auth_errors, 404))
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError):
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        # the deepest error: when a value fits no member of a union (content: text or a list of parts), the
        # member it got furthest into says what is wrong
        first = max(errors, key=lambda e: len(e.get("loc", ())), default={})
        param = _param_from_loc(first.get("loc", ()))
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg, param = "the request body is not valid JSON", None
        return JSONResponse(error_body(f"{param + ': ' if param else ''}{msg}", "invalid_request_error", param),
                            status_code=422 if first.get("type") != "json_invalid" else 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        # the headers matter: a 405 names the allowed methods in Allow, a 401 asks for a Bearer key
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(TunesmithError)
    async def _tunesmith_error(_request: Request, exc: TunesmithError):
        return JSONResponse(_error_for(exc)[1], status_code=_error_for(exc)[0])

    if api_key:
        @app.middleware("http")
        async def _require_key(request: Request, call_next):
            path = request.url.path
            if path in OPEN_PATHS or any(path == p or path.startswith(p + "/") for p in UI_PATHS):
                return await call_next(request)
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if not given or not secrets.compare_digest(given.encode(), api_key.encode()):
                return JSONResponse(error_body("missing or wrong API key (send 'Authorization: Bearer KEY')",
                                               "authentication_error", code="invalid_api_key"), status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": engine.adapter_names}

    @app.get("/v1/models")
    async def list_models():
        now = int(time.time())
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": now, "owned_by": "tunesmith",
             "root": engine.model_name, "parent": None if name == BASE else BASE}
            for name in engine.adapter_names]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        if name not in engine.adapter_names:
            raise _unknown_model(name)
        return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "tunesmith"}

    @app.post("/v1/chat/completions", responses=_error_responses(400, 413, 422, 503))
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        if req.model not in engine.adapter_names:
            raise _unknown_model(req.model)
        system, messages = to_conversation(req.messages)
        options = to_options(req, defaults)
        turns = req.max_history_turns if req.max_history_turns is not None else default_max_history_turns
        created = int(time.time())
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        with engine.incoming():  # lets the engine batch this request with others arriving now
            try:
                prompt = await run_in_threadpool(engine.prompt_ids, messages, system, req.model, options, turns)
            except TunesmithError as e:
                status, body = _error_for(e)
                raise APIError(status, body["error"]["message"], body["error"]["type"], body["error"]["param"],
                               body["error"]["code"]) from None
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                events: asyncio.Queue = asyncio.Queue()
                pending = engine.enqueue(prompt, req.model, options, _queue_writer(events))
                return StreamingResponse(_sse(pending, events, req.model, options, cid, created, include_usage),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            pending = engine.enqueue(prompt, req.model, options)
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
        usage = _usage(completions)
        return {"id": cid, "object": "chat.completion", "created": created, "model": req.model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                             "finish_reason": c.finish_reason, "logprobs": None}
                            for i, c in enumerate(completions)],
                "usage": usage}

    if ui:
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

    # Outermost, so that a body is measured before anything reads it.
    app.add_middleware(BodyLimit, limit=max_request_bytes, exempt=UI_PATHS)
    return app


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before it is parsed.  A declared
    Content-Length over the limit is refused at once, unread; a body sent without one (chunked) is counted
    as it arrives and refused as soon as it passes the limit.  Paths under `exempt` pass untouched."""

    def __init__(self, app, limit: int, exempt: tuple[str, ...] = ()):
        self.app, self.limit, self.exempt = app, limit, exempt

    def _too_large(self) -> str:
        return f"the request body is over the limit of {self.limit} bytes (the server's --max-request-bytes)"

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or any(path == p or path.startswith(p + "/") for p in self.exempt):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            # Connection: close, as the unread body cannot be skipped to reach a next request
            response = JSONResponse(error_body(self._too_large(), "invalid_request_error", code="request_too_large"),
                                    status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI passes an HTTPException from reading the body on to the app's handler
                    raise HTTPException(413, self._too_large(), headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)


def _param_from_loc(loc) -> str | None:
    """A validation error's location as the request field, e.g. ("body", "messages", 0, "content") ->
    "messages[0].content".  Union members add names such as "list[TextPart]": those are not fields."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() and part != "body":
            param += f".{part}" if param else part
    return param or None


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


def _unknown_model(name: str) -> APIError:
    return APIError(404, f"model {name!r} does not exist; GET /v1/models lists the loaded ones",
                    param="model", code="model_not_found")


def _error_for(exc: TunesmithError) -> tuple[int, dict]:
    if isinstance(exc, UnknownAdapterError):
        return 404, error_body(str(exc), "invalid_request_error", "model", "model_not_found")
    if isinstance(exc, PromptTooLongError):
        return 400, error_body(str(exc), "invalid_request_error", "messages", "context_length_exceeded")
    if isinstance(exc, DataError):
        return 400, error_body(str(exc), "invalid_request_error", "messages")
    return 400, error_body(str(exc), "invalid_request_error")


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
            yield f"data: {json.dumps(_error_for(e)[1], ensure_ascii=False)}\n\n"
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
