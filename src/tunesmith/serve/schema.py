"""The OpenAI chat-completions request and error shapes, and their conversion to the engine's types.

    req = ChatCompletionRequest(model="libai", messages=[{"role": "user", "content": "你好"}], temperature=0.8)
    options = to_options(req, GenerationOptions())       # do_sample=True: a temperature above 0 samples
    status, body = error_for(PromptTooLongError("..."))  # 400, {"error": {..., "code": "context_length_exceeded"}}

The messages become the engine's turns in serve/turns.py (the rule SillyTavern's requests need).
A client mistake found here is an APIError (a 4xx with an OpenAI-style body naming the field); text fields
refuse lone UTF-16 surrogates so that the error names the field instead of failing inside the tokenizer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from tunesmith.errors import ConfigError, DataError, TunesmithError
from tunesmith.infer.adapters import UnknownAdapterError
from tunesmith.infer.history import PromptTooLongError
from tunesmith.infer.options import GenerationOptions

# Engine option names -> the request field a client sets
_PARAM_NAMES = {"max_new_tokens": "max_tokens"}


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


def error_responses(*statuses: int) -> dict:
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
    # Other fields (user, ...) are accepted and ignored, except those that would change the answer and cannot be
    # honoured (a non-empty logit_bias, logprobs, tools, ...): serve/turns.py's check_fields refuses them;
    # presence_penalty and frequency_penalty are honoured (infer/samplers.py).
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
    # samplers against loops: OpenAI's penalties, then llama.cpp's / text-generation-webui's names
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    min_p: float | None = None
    no_repeat_ngram_size: int | None = None
    dry_multiplier: float | None = None
    dry_base: float | None = None
    dry_allowed_length: int | None = None
    dry_sequence_breakers: list[Text] | Text | None = None  # a list, or a JSON list in a string (as tgw sends)
    dry_range: int | None = None
    dry_scope: Text | None = None  # "context" or "reply"


# request fields that map one to one onto GenerationOptions, defaulting to the adapter's recommended sampler
_SAMPLER_FIELDS = ("top_k", "repetition_penalty", "num_beams", "presence_penalty", "frequency_penalty", "min_p",
                   "no_repeat_ngram_size", "dry_multiplier", "dry_base", "dry_allowed_length",
                   "dry_sequence_breakers", "dry_range", "dry_scope")


# -- conversion -------------------------------------------------------------------------------------
def to_options(req: ChatCompletionRequest, defaults: GenerationOptions) -> GenerationOptions:
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    values: dict[str, Any] = {
        "max_new_tokens": defaults.max_new_tokens if max_tokens is None else max_tokens,
        "temperature": defaults.temperature if req.temperature is None else req.temperature,
        "top_p": defaults.top_p if req.top_p is None else req.top_p,
        "seed": defaults.seed if req.seed is None else req.seed,
        "stop": list(defaults.stop if req.stop is None else [req.stop] if isinstance(req.stop, str) else req.stop),
        "n": req.n,
    }
    given = {name: getattr(req, name) for name in _SAMPLER_FIELDS if getattr(req, name) is not None}
    if req.do_sample is not None:
        values["do_sample"] = req.do_sample
    elif req.temperature is not None:
        values["do_sample"] = req.temperature > 0
    else:
        values["do_sample"] = defaults.do_sample
    try:
        # updated() also reads dry_sequence_breakers given as a JSON list in a string
        return replace(defaults, **values).updated(given)
    except ConfigError as e:
        field, _, rest = str(e).partition(":")
        param = _PARAM_NAMES.get(field, field)
        raise APIError(400, f"{param}:{rest}" if rest else str(e), param=param) from None


def unknown_model(name: str) -> APIError:
    return APIError(404, f"model {name!r} does not exist; GET /v1/models lists the loaded ones",
                    param="model", code="model_not_found")


def error_for(exc: TunesmithError) -> tuple[int, dict]:
    """The status and body that answer an engine error."""
    if isinstance(exc, UnknownAdapterError):
        return 404, error_body(str(exc), "invalid_request_error", "model", "model_not_found")
    if isinstance(exc, PromptTooLongError):
        return 400, error_body(str(exc), "invalid_request_error", "messages", "context_length_exceeded")
    if isinstance(exc, DataError):
        return 400, error_body(str(exc), "invalid_request_error", "messages")
    return 400, error_body(str(exc), "invalid_request_error")
