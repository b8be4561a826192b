"""The API against hostile clients: every client-caused failure is a 4xx, work is bounded by what can be
served, a client that leaves cancels its work, and SIGTERM stops a busy server within seconds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support import RunningServer, free_port, wait_until_healthy
from tunesmith.conversation import Message
from tunesmith.errors import DataError
from tunesmith.infer import runners as runners_module
from tunesmith.infer.engine import PromptTooLongError
from tunesmith.infer.history import fit_prompt
from tunesmith.infer.options import GenerationOptions
from tunesmith.serve.api import DEFAULT_MAX_REQUEST_BYTES, create_app
from tunesmith.template import encode_prompt, resolve_template

KEY = "hardening-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "你好"}]


@pytest.fixture(scope="module")
def server(engine_with_adapter):
    app = create_app(engine_with_adapter, api_key=KEY, ui=False, default_options=GenerationOptions(max_new_tokens=8))
    with RunningServer(app) as s:
        yield s


def _post(server, body, **kw) -> httpx.Response:
    """POST a body given as JSON text (so that it can hold what Python's encoder would refuse, e.g. "\\ud800")."""
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(server.url + "/v1/chat/completions", content=content,
                      headers={**AUTH, "content-type": "application/json"}, timeout=60, **kw)


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


# -- 1. any string JSON can carry ------------------------------------------------------------------------
SURROGATE = "x\\ud800y"  # JSON text: a lone high surrogate between two letters


@pytest.mark.parametrize("body,param", [
    ('{"model": "base", "messages": [{"role": "user", "content": "%s"}]}', "messages[0].content"),
    ('{"model": "base", "messages": [{"role": "system", "content": "%s"}, {"role": "user", "content": "hi"}]}',
     "messages[0].content"),
    ('{"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}]}]}',
     "messages[0].content[0].text"),
    ('{"model": "base", "messages": [{"role": "user", "content": [{"type": "%s", "text": "a"}]}]}',
     "messages[0].content[0].type"),
    ('{"model": "base", "messages": [{"role": "%s", "content": "hi"}]}', "messages[0].role"),
    ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ('{"model": "base", "messages": [{"role": "user", "content": "hi"}], "stop": "%s"}', "stop"),
    ('{"model": "base", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "%s"]}', "stop[1]"),
])
def test_lone_surrogate_in_any_text_field_is_a_4xx_naming_it(server, body, param):
    for stream in (False, True):
        text = body % SURROGATE
        if stream:
            text = text[:-1] + ', "stream": true}'
        err = _error(_post(server, text), 422)
        assert err["param"] == param and "surrogate" in err["message"] and "\\ud800" in err["message"], err


def test_engine_refuses_lone_surrogates_too(engine_with_adapter):
    """The web UI and Python callers reach the engine without the API's schema."""
    with pytest.raises(DataError, match="surrogate"):
        engine_with_adapter.prompt_ids([Message("user", "x\ud800y")])
    with pytest.raises(DataError, match="system prompt.*surrogate"):
        engine_with_adapter.prompt_ids([Message("user", "hi")], system="\udfff")


# -- 2. any number JSON can carry ------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,param", [
    ("seed", "18446744073709551616", "seed"),  # 2**64: overflowed torch.manual_seed
    ("seed", "99999999999999999999999999999999", "seed"),
    ("seed", "-1", "seed"),
    ("repetition_penalty", "1e-300", "repetition_penalty"),  # logits / 1e-300 = inf
    ("temperature", "1e400", "temperature"),  # inf after parsing
    ("temperature", "NaN", "temperature"),  # Python's JSON reader takes it
    ("top_p", "-0.0", "top_p"),
    ("max_tokens", "100000000000000000000000000", None),
    ("n", "1e30", "n"),
    ("num_beams", "-9223372036854775809", "num_beams"),
])
def test_extreme_numbers_are_4xx_streamed_or_not(server, field, value, param):
    for stream in (False, True):
        text = ('{"model": "base", "messages": [{"role": "user", "content": "hi"}], '
                f'"stream": {"true" if stream else "false"}, "{field}": {value}}}')
        r = _post(server, text)
        assert 400 <= r.status_code < 500, r.text  # streamed too: refused before the 200 is sent
        assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("extra", [
    {"seed": 2**64 - 1, "temperature": 1.0},
    {"temperature": 1e-320, "do_sample": True},  # below 1e-5: greedy (was NaN probabilities in torch)
    {"temperature": 5e-324, "do_sample": True, "repetition_penalty": 10},
    {"top_k": 10**30, "temperature": 1.0},
    {"max_history_turns": 10**30},
    {"top_p": 5e-324, "temperature": 1.0},
])
def test_extreme_but_valid_numbers_are_answered(server, extra):
    for stream in (False, True):
        r = _post(server, {"model": "base", "messages": HELLO, "max_tokens": 3, "stream": stream, **extra})
        assert r.status_code == 200, r.text
        if stream:
            assert '"error"' not in r.text and r.text.rstrip().endswith("data: [DONE]")


def test_a_huge_integer_or_a_deep_nesting_is_a_400(server):
    _error(_post(server, '{"model": "base", "messages": [], "seed": ' + "9" * 5000 + "}"), 400)
    _error(_post(server, '{"model": "base", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"), 400)


# -- 3. history fitting is bounded by what fits ---------------------------------------------------------
def _reference_fit(tokenizer, template, system, messages, budget):
    """The old definition: drop the oldest turn while the prompt is too long (re-encoding everything)."""
    kept = list(messages)
    ids = encode_prompt(tokenizer, template, system, kept)
    while len(ids) > budget and len(kept) > 1:
        kept = kept[2:]
        ids = encode_prompt(tokenizer, template, system, kept)
    return ids, kept


@pytest.mark.parametrize("template", ["tokenizer", "chatml", "plain"])
def test_fit_prompt_keeps_what_dropping_one_turn_at_a_time_kept(engine_with_adapter, template):
    tok = engine_with_adapter.tokenizer
    tpl = resolve_template(template, tok)
    msgs = [Message(role, f"第{i}句" + "长" * (i * 7 % 23)) for i in range(30) for role in ("user", "assistant")]
    msgs.append(Message("user", "你好"))
    for budget in [*range(5, 60, 6), *range(60, 700, 71), 5000]:
        for system in (None, "你是李白"):
            try:
                want = _reference_fit(tok, tpl, system, msgs, budget)
            except Exception:
                want = None
            if want is None or len(want[0]) > budget:
                with pytest.raises(PromptTooLongError):
                    fit_prompt(tok, tpl, system, msgs, budget=budget)
            else:
                assert fit_prompt(tok, tpl, system, msgs, budget=budget) == want, (budget, system)


def test_a_thousand_turn_history_is_answered_in_seconds(server, engine_with_adapter):
    long = [{"role": r, "content": f"第{i}句话"} for i in range(1000) for r in ("user", "assistant")] + HELLO
    start = time.monotonic()
    r = _post(server, {"model": "libai", "messages": long, "max_tokens": 4})
    took = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert took < 5, f"a 1,000-turn history took {took:.1f} s"
    usage = r.json()["usage"]["prompt_tokens"]
    assert usage <= engine_with_adapter.context_length - 4
    # the newest turns are the ones kept
    msgs = [Message(m["role"], m["content"]) for m in long]
    ids = engine_with_adapter.prompt_ids(msgs, adapter="libai", options=GenerationOptions(max_new_tokens=4))
    assert len(ids) == usage and "第999句话" in engine_with_adapter.tokenizer.decode(ids)


def test_history_fitting_is_bounded_for_a_large_context(engine_with_adapter):
    """With the tokenizer's own template each turn costs a render of the whole prefix: a large context (here
    30,000 tokens) that holds thousands of short turns must still be fitted in about a second."""
    from tunesmith.infer.history import MAX_TEMPLATE_TURNS

    tok = engine_with_adapter.tokenizer
    msgs = [Message(r, f"第{i}句话") for i in range(3000) for r in ("user", "assistant")] + [Message("user", "hi")]
    for name in ("tokenizer", "chatml"):
        start = time.monotonic()
        ids, kept = fit_prompt(tok, resolve_template(name, tok), None, msgs, budget=30_000)
        took = time.monotonic() - start
        assert took < 3, f"{name}: fitting 3,000 turns to 30,000 tokens took {took:.1f} s"
        assert kept == msgs[len(msgs) - len(kept):] and len(ids) <= 30_000
        if name == "tokenizer":
            assert len(kept) == 2 * MAX_TEMPLATE_TURNS + 1
        else:  # rendered once per message: every turn that fits is kept
            assert len(kept) > 2 * MAX_TEMPLATE_TURNS + 1


def test_too_long_text_is_refused_before_it_is_tokenized(engine_with_adapter, monkeypatch):
    """A message that cannot fit is refused from its length in bytes: the tokenizer never sees it."""
    tok = engine_with_adapter.tokenizer
    seen: list[int] = []
    original = type(tok).__call__

    def spy(self, text, *args, **kwargs):
        seen.append(len(text) if isinstance(text, str) else 0)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", spy)
    huge = "长" * 1_000_000
    start = time.monotonic()
    with pytest.raises(PromptTooLongError) as refused:
        engine_with_adapter.prompt_ids([Message("user", huge)])
    with pytest.raises(PromptTooLongError):
        engine_with_adapter.prompt_ids([Message("user", "hi")], system=huge)
    # an old turn that cannot fit is dropped without being tokenized
    ids = engine_with_adapter.prompt_ids([Message("user", huge), Message("assistant", huge), Message("user", "hi")])
    assert max(seen) < 1000, "a text that could never fit was tokenized"
    assert time.monotonic() - start < 2
    assert ids == engine_with_adapter.prompt_ids([Message("user", "hi")])
    assert "at least" in str(refused.value)  # a lower bound: the exact count was never needed


# -- 4. the request-body limit -------------------------------------------------------------------------
def test_request_body_limit_refuses_before_reading(engine_with_adapter):
    app = create_app(engine_with_adapter, ui=False, max_request_bytes=2000,
                     default_options=GenerationOptions(max_new_tokens=2))
    with RunningServer(app) as s:
        ok = {"model": "base", "messages": HELLO}
        assert httpx.post(s.url + "/v1/chat/completions", json=ok, timeout=60).status_code == 200
        big = {"model": "base", "messages": [{"role": "user", "content": "a" * 3000}]}
        err = _error(httpx.post(s.url + "/v1/chat/completions", json=big, timeout=60), 413)
        assert "2000 bytes" in err["message"] and "--max-request-bytes" in err["message"]

        def chunks():  # no Content-Length: counted as it arrives
            yield b'{"model": "base", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"a" * 500
            yield b'"}]}'

        r = httpx.post(s.url + "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"},
                       timeout=60)
        assert "2000 bytes" in _error(r, 413)["message"]
    with pytest.raises(Exception, match="max_request_bytes"):
        create_app(engine_with_adapter, ui=False, max_request_bytes=0)


def test_a_20_mb_body_is_refused_in_under_a_second(server):
    assert DEFAULT_MAX_REQUEST_BYTES < 20_000_000
    body = b'{"model": "base", "messages": [{"role": "user", "content": "' + b"a" * 20_000_000 + b'"}]}'
    start = time.monotonic()
    # the headers and the first bytes only: the answer must come without the server reading the rest
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:65536])
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    # the whole body, sent by a client that waits for the answer
    r = _post(server, body)
    took = time.monotonic() - start
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert took < 1, f"a 20 MB body took {took:.2f} s to refuse"


# -- 5. a client that goes away cancels its work -----------------------------------------------------------
@pytest.fixture()
def slow_generation(engine_with_adapter, monkeypatch):
    """Each generated token takes 50 ms; yields the PendingRequests the server enqueues."""
    original = runners_module.CancellableStops.__call__

    def slow(self, *args, **kwargs):
        time.sleep(0.05)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(runners_module.CancellableStops, "__call__", slow)
    requests = []
    enqueue = engine_with_adapter.enqueue

    def recording(*args, **kwargs):
        req = enqueue(*args, **kwargs)
        requests.append(req)
        return req

    monkeypatch.setattr(engine_with_adapter, "enqueue", recording)
    return requests


def _wait_cancelled(req, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if req.cancelled and req.future.done():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_disconnects_cancels_a_non_streamed_request(server, slow_generation):
    body = {"model": "base", "messages": HELLO, "max_tokens": 400, "temperature": 1.0, "n": 4}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after a second and closes the connection
        httpx.post(server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=1.0)
    assert len(slow_generation) == 1
    assert _wait_cancelled(slow_generation[0]), "the request kept generating after its client left"


def test_a_client_that_disconnects_cancels_a_streamed_request(server, slow_generation):
    body = {"model": "base", "messages": HELLO, "max_tokens": 400, "temperature": 1.0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    assert len(slow_generation) == 1
    assert _wait_cancelled(slow_generation[0]), "the stream kept generating after its client left"


# -- 6. SIGTERM stops a busy server ------------------------------------------------------------------------
def test_engine_close_with_cancel_ends_running_and_queued_requests(tiny_qwen2, monkeypatch):
    from tunesmith.infer.engine import Engine

    original = runners_module.CancellableStops.__call__

    def slow(self, *args, **kwargs):
        time.sleep(0.05)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(runners_module.CancellableStops, "__call__", slow)
    engine = Engine.load(str(tiny_qwen2), device="cpu", max_batch_size=1)
    opts = GenerationOptions(max_new_tokens=400, do_sample=True, temperature=1.0)
    prompt = engine.prompt_ids([Message("user", "hi")])
    running, queued = engine.enqueue(prompt, options=opts), engine.enqueue(prompt, options=opts)
    time.sleep(0.5)  # the first is generating (20 s at this pace), the second waits for it
    start = time.monotonic()
    engine.close(timeout=10, cancel=True)
    assert time.monotonic() - start < 2
    assert running.future.cancelled() and queued.future.cancelled()


def test_sigterm_stops_a_busy_server_within_seconds(tiny_qwen2, tmp_path):
    port = free_port()
    env = {**os.environ, "TUNESMITH_CACHE": str(tmp_path)}
    env.pop("TUNESMITH_API_KEY", None)
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", "--model", str(tiny_qwen2), "--port",
                             str(port), "--no-ui", "--threads", "1", "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    results: list = []
    try:
        wait_until_healthy(url, proc, (tmp_path / "server.log").read_text)

        def ask(stream: bool):
            body = {"model": "base", "messages": HELLO, "max_tokens": 1900, "n": 8, "temperature": 1.5,
                    "stream": stream}
            try:
                results.append(httpx.post(url + "/v1/chat/completions", json=body, timeout=120).status_code)
            except httpx.HTTPError as e:
                results.append(type(e).__name__)

        askers = [threading.Thread(target=ask, args=(s,), daemon=True) for s in (False, True)]
        for t in askers:
            t.start()
        time.sleep(2.0)
        assert not results, f"the requests ended before SIGTERM: {results}"  # the server is busy
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - start
        print(f"SIGTERM: a busy server stopped in {took:.2f} s")
        log.seek(0)
        assert proc.poll() is not None and took < 5, f"SIGTERM took {took:.1f} s:\n{log.read()}"
        for t in askers:
            t.join(10)
        assert 500 not in results, results  # the unstreamed request is told 503 (shutting down), not 500
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    bad = subprocess.run([sys.executable, "-m", "tunesmith.cli", "serve", "--model", str(tiny_qwen2),
                          "--max-request-bytes", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "--max-request-bytes" in bad.stderr and "Traceback" not in bad.stderr


# -- 7. the OpenAPI schema and odd methods --------------------------------------------------------------
def test_openapi_declares_the_error_answers(server):
    schema = httpx.get(server.url + "/openapi.json", headers=AUTH).json()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert {"401", "404"} <= set(op["responses"]), (method, path)
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "422"} <= set(chat)
    ref = chat["422"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ErrorResponse")


def test_a_method_not_allowed_names_the_allowed_ones(server):
    for method in ("TRACE", "DELETE", "PUT"):
        r = httpx.request(method, server.url + "/v1/models", headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == "GET" and "error" in r.json()
    r = httpx.request("TRACE", server.url + "/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
