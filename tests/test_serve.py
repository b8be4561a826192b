"""`tunesmith serve`: the OpenAI-compatible API against a real uvicorn server, with the official openai client."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.support import RunningServer, free_port, wait_until_healthy
from tunesmith.conversation import Message
from tunesmith.infer.options import GenerationOptions
from tunesmith.serve.api import create_app

KEY = "test-key-123"




@pytest.fixture(scope="module")
def serve_engine(engine_with_adapter):
    return engine_with_adapter


@pytest.fixture(scope="module")
def server(serve_engine):
    app = create_app(serve_engine, api_key=KEY, ui=False,
                     default_options=GenerationOptions(max_new_tokens=16))
    with RunningServer(app) as s:
        yield s


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


HELLO = [{"role": "user", "content": "你好"}]


def test_health_is_open_everything_else_needs_the_key(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="base", messages=HELLO)


def test_models_lists_base_and_adapters(client):
    assert [m.id for m in client.models.list().data] == ["base", "libai"]


def test_completion_matches_engine_and_counts_usage(client, serve_engine):
    r = client.chat.completions.create(model="libai", messages=HELLO, max_tokens=10)
    msgs = [Message("user", "你好")]
    opts = GenerationOptions(max_new_tokens=10)
    want = serve_engine.complete(msgs, adapter="libai", options=opts)[0]
    assert r.choices[0].message.content == want.text and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(serve_engine.prompt_ids(msgs, adapter="libai")) == want.prompt_tokens
    assert r.usage.completion_tokens == want.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason == ("length" if want.completion_tokens == 10 else "stop")
    # the system message of the request is the system prompt
    s = client.chat.completions.create(model="base", messages=[{"role": "system", "content": "你是曹操"}, *HELLO],
                                       max_tokens=6)
    assert s.usage.prompt_tokens == len(serve_engine.prompt_ids(msgs, system="你是曹操"))


def test_streaming_with_openai_client(client):
    full = client.chat.completions.create(model="libai", messages=HELLO, max_tokens=12).choices[0].message.content
    stream = client.chat.completions.create(model="libai", messages=HELLO, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(pieces) == full and len(pieces) > 1 and finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0


def test_raw_sse_ends_with_done(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "base", "messages": HELLO, "stream": True, "max_tokens": 4}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"


def test_sampling_n_seed_stop_beams_and_history(client, serve_engine):
    r = client.chat.completions.create(model="base", messages=HELLO, n=3, temperature=1.5, top_p=1.0, seed=3,
                                       max_tokens=12, extra_body={"top_k": 0})
    assert len(r.choices) == 3 and [c.index for c in r.choices] == [0, 1, 2]
    again = client.chat.completions.create(model="base", messages=HELLO, n=3, temperature=1.5, top_p=1.0, seed=3,
                                           max_tokens=12, extra_body={"top_k": 0})
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in r.choices}) > 1
    full = client.chat.completions.create(model="base", messages=HELLO, max_tokens=16).choices[0].message.content
    stop = full[4:6]
    cut = client.chat.completions.create(model="base", messages=HELLO, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop"
    beams = client.chat.completions.create(model="libai", messages=HELLO, max_tokens=8, n=2,
                                           extra_body={"num_beams": 3, "repetition_penalty": 1.2})
    assert len(beams.choices) == 2
    long = [{"role": r, "content": f"第{i}句"} for i in range(8) for r in ("user", "assistant")] + HELLO
    all_turns = client.chat.completions.create(model="base", messages=long, max_tokens=2)
    two = client.chat.completions.create(model="base", messages=long, max_tokens=2,
                                         extra_body={"max_history_turns": 2})
    msgs = [Message(m["role"], m["content"]) for m in long]
    assert two.usage.prompt_tokens == len(serve_engine.prompt_ids(msgs, max_history_turns=2))
    assert two.usage.prompt_tokens < all_turns.usage.prompt_tokens


def _error(server, body: dict, status: int) -> dict:
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize("body,status,param", [
    ({"model": "nope", "messages": HELLO}, 404, "model"),
    ({"model": "../../etc/passwd", "messages": HELLO}, 404, "model"),
    ({"model": "base", "messages": []}, 400, "messages"),
    # a greeting alone, a trailing assistant turn, a system message between turns: answered (test_serve_sillytavern)
    ({"model": "base", "messages": [*HELLO, {"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[1].content"),
    ({"model": "base", "messages": HELLO, "logit_bias": {"7": 100}}, 400, "logit_bias"),
    ({"model": "base", "messages": HELLO, "logprobs": True}, 400, "logprobs"),
    ({"model": "base", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
    ({"model": "base", "messages": HELLO, "top_p": 2}, 400, "top_p"),
    ({"model": "base", "messages": HELLO, "temperature": -1}, 400, "temperature"),
    ({"model": "base", "messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "base", "messages": HELLO, "n": 0}, 400, "n"),
    ({"model": "base", "messages": HELLO, "n": 3, "num_beams": 2}, 400, "n"),
    ({"model": "base", "messages": HELLO, "num_beams": 0}, 400, "num_beams"),
    ({"model": "base", "messages": HELLO, "stop": [""]}, 400, "stop"),
    ({"model": "base", "messages": HELLO, "max_tokens": 10**6}, 400, None),
    ({"model": "base", "messages": [{"role": "user", "content": "长" * 5000}]}, 400, "messages"),
    ({"model": "base", "messages": HELLO, "temperature": "hot"}, 422, "temperature"),
    ({"model": "base", "messages": HELLO, "max_history_turns": -1}, 422, "max_history_turns"),
    ({"messages": HELLO}, 422, "model"),
    ({"model": "base", "messages": "hi"}, 422, "messages"),
])
def test_client_mistakes_get_openai_errors_not_500(server, body, status, param):
    err = _error(server, body, status)
    assert err["param"] == param


def test_too_long_prompt_has_context_code_and_bad_json_is_400(server):
    err = _error(server, {"model": "base", "messages": [{"role": "user", "content": "长" * 5000}]}, 400)
    assert err["code"] == "context_length_exceeded"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(server.url + "/v1/nothing-here", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and "error" in r.json()


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="base", messages=HELLO, top_p=5)


def test_concurrent_streaming_clients_get_their_own_answers(client, serve_engine):
    questions = [f"第{i}个问题" for i in range(5)]
    want = {q: serve_engine.chat([Message("user", q)], options=GenerationOptions(max_new_tokens=10)) for q in questions}
    got: dict[str, str] = {}

    def ask(q):
        s = client.chat.completions.create(model="base", messages=[{"role": "user", "content": q}], max_tokens=10,
                                           stream=True)
        got[q] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == want


def test_api_key_from_environment(serve_engine, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("TUNESMITH_API_KEY", "env-key")
    app = create_app(serve_engine, ui=False)
    with TestClient(app) as tc:
        assert tc.get("/v1/models").status_code == 401
        assert tc.get("/v1/models", headers={"Authorization": "Bearer env-key"}).status_code == 200
        assert tc.get("/health").status_code == 200
    monkeypatch.delenv("TUNESMITH_API_KEY")
    with TestClient(create_app(serve_engine, ui=False)) as tc:
        assert tc.get("/v1/models").status_code == 200


def test_serve_command_runs_a_server(tiny_qwen2, tmp_path):
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "TUNESMITH_CACHE": str(tmp_path), "TUNESMITH_API_KEY": "from-env"}
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", "--model", str(tiny_qwen2), "--port",
                             str(port), "--no-ui", "--threads", "1", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, proc.stderr.read)
        assert httpx.get(url + "/v1/models").status_code == 401  # the key came from TUNESMITH_API_KEY
        client = openai.OpenAI(base_url=url + "/v1", api_key="from-env", max_retries=0)
        r = client.chat.completions.create(model="base", messages=HELLO, max_tokens=4)
        assert r.usage.completion_tokens >= 1
    finally:
        proc.terminate()
        proc.wait(30)
    bad = subprocess.run([sys.executable, "-m", "tunesmith.cli", "serve", "--model", str(tiny_qwen2),
                          "--max-batch-size", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "--max-batch-size" in bad.stderr


def test_a_character_greeting_may_open_the_conversation(client, server):
    greeted = [{"role": "assistant", "content": "吾乃李白，来饮一杯？"}, {"role": "user", "content": "好啊"}]
    reply = client.chat.completions.create(model="libai", messages=greeted, max_tokens=4)
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens >= 1
    # two in a row are one turn (a group chat's characters; the rule is tested in test_serve_sillytavern.py)
    two = [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}, *HELLO]
    assert client.chat.completions.create(model="libai", messages=two, max_tokens=4).usage.completion_tokens >= 1
