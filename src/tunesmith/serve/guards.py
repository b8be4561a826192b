"""What stands in front of the routes: the error handlers, the API-key check and the request-body limit.

    add_error_handlers(app)            # every error answered as {"error": {"message", "type", "param", "code"}}
    add_key_check(app, "secret")       # every route but /health, / and the web UIs needs "Authorization: Bearer secret"
    app.add_middleware(BodyLimit, limit=4 * 1024 * 1024, exempt=UI_PATHS)   # 413 before a large body is read

A body over the limit is refused from its declared Content-Length, or, sent without one, as soon as the bytes
received pass the limit; either way it is never parsed.  The 413 is sent at once, but the connection is closed
only after the rest of the body is read and thrown away (up to DRAIN_BYTES, for at most DRAIN_SECONDS): a client
that sends its whole body before it reads the answer (most do) would otherwise get a connection reset instead of
the 413.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve.schema import APIError, error_body, error_for

OPEN_PATHS = ("/health", "/")  # "/" only redirects to the web chat
# The web UIs (Gradio) ask for the key on their own login page (any user name, the key as password).
UI_PATHS = ("/ui", "/label")
# The largest request body taken (413 above it).  A full 128k-token context of Chinese sent as JSON
# escapes is about 1.2 MB; the limit leaves room above that and keeps a hostile body cheap to refuse.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
# After a 413, the rest of the body is read and dropped (so that the client reads the answer instead of a reset)
# up to this many bytes and seconds; a larger or slower body is cut off.
DRAIN_BYTES = 256 * 1024 * 1024
DRAIN_SECONDS = 30.0


def add_error_handlers(app: FastAPI) -> None:
    """Answer API errors, validation errors, HTTP errors and engine errors in OpenAI's error format."""

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
        code = "request_too_large" if exc.status_code == 413 else None  # a chunked body over the limit
        return JSONResponse(error_body(str(exc.detail), kind, code=code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(TunesmithError)
    async def _tunesmith_error(_request: Request, exc: TunesmithError):
        return JSONResponse(error_for(exc)[1], status_code=error_for(exc)[0])


def add_key_check(app: FastAPI, api_key: str) -> None:
    """Every path but OPEN_PATHS and the web UIs (which have their own login) needs the key as a Bearer token."""

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
        headers = dict(scope.get("headers", ()))
        declared = headers.get(b"content-length")
        # a client waiting for "100 Continue" has sent no body: nothing to drain (reading would invite it)
        drain = b"100-continue" not in headers.get(b"expect", b"").lower()
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            # Connection: close, as the body is not read to reach a next request
            response = JSONResponse(error_body(self._too_large(), "invalid_request_error", code="request_too_large"),
                                    status_code=413, headers={"Connection": "close"})
            await response(scope, receive, _draining_send(send, receive) if drain else send)
            return
        received = 0
        over = False

        async def counted():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    # FastAPI passes an HTTPException from reading the body on to the app's handler
                    raise HTTPException(413, self._too_large(), headers={"Connection": "close"})
            return message

        drained = _draining_send(send, receive)

        async def sending(message):
            await (drained(message) if over and drain else send(message))

        await self.app(scope, counted, sending)


def _draining_send(send, receive):
    """`send` for a 413: the answer goes out whole at once, then the rest of the request body is read and dropped
    before the response ends (and the server closes the connection)."""

    async def draining(message):
        if message["type"] != "http.response.body" or message.get("more_body", False):
            await send(message)
            return
        await send({**message, "more_body": True})
        await _drain(receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return draining


async def _drain(receive) -> None:
    dropped, deadline = 0, time.monotonic() + DRAIN_SECONDS
    while dropped <= DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


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

