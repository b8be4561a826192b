"""`tunesmith serve` as a SillyTavern backend: the request bodies SillyTavern 1.12.6 sent (recorded in
tests/data/sillytavern/requests/) replayed against the server, the messages -> turns rule on each shape, the
fields that are honoured or refused, any Authorization without a key, and a readable 413 for a whole large body."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from tests.support import RunningServer
from tunesmith.conversation import Message
from tunesmith.infer.engine import Engine
from tunesmith.infer.options import GenerationOptions
from tunesmith.scene import CONTINUE_LINE
from tunesmith.serve.api import create_app
from tunesmith.serve.schema import APIError, ChatCompletionRequest, ChatMessage, to_options
from tunesmith.serve.turns import check_fields, to_conversation

REQUESTS = Path(__file__).parent / "data" / "sillytavern" / "requests"
RECORDED = sorted(REQUESTS.glob("*.json"))


def _recorded(name: str) -> dict:
    return json.loads((REQUESTS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def st_engine(tmp_path_factory, make_adapter):
    """The tiny Qwen2 with a 16k context (SillyTavern's Seraphina prompt is ~6k tokens of its byte-level
    tokenizer) and a random adapter named "seraphina", as in the recording."""
    from tunesmith.tiny import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("tiny16k") / "model", "qwen2", max_positions=16384)
    eng = Engine.load(str(model), {"seraphina": str(make_adapter(model, seed=7))}, device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def st_server(st_engine):
    # SillyTavern sends temperature 1 and no seed: the server's default seed makes the replayed answers the same on
    # every run (the bodies themselves are sent as recorded)
    with RunningServer(create_app(st_engine, ui=False, default_options=GenerationOptions(seed=0))) as s:
        yield s


def _messages(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=r, content=c) for r, c in pairs]


def _sse_text(text: str) -> str:
    events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("error" not in c for c in chunks), chunks
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- the recorded requests, replayed -----------------------------------------------------------------------
def test_every_shape_was_recorded():
    names = {p.stem.split("_", 1)[1] for p in RECORDED}
    assert {"status_models", "one_to_one_stream", "swipe_stream", "continue_stream", "one_to_one",
            "group_seraphina", "group_kestrel", "group_trigger_stream", "include_body_stream"} <= names


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_recorded_request_is_answered(st_server, path):
    rec = json.loads(path.read_text(encoding="utf-8"))
    r = httpx.request(rec["method"], st_server.url + rec["path"], headers=rec["headers"], json=rec.get("body"),
                      timeout=120)
    assert r.status_code == 200, r.text
    if rec["method"] == "GET":
        assert "seraphina" in [m["id"] for m in r.json()["data"]]
        return
    if rec["body"].get("stream"):
        assert r.headers["content-type"].startswith("text/event-stream")
        text = _sse_text(r.text)
    else:
        text = r.json()["choices"][0]["message"]["content"]
    assert text.strip(), f"empty answer to {path.name}"


def test_the_include_body_samplers_are_used(st_server):
    rec = _recorded("09_include_body_stream.json")
    assert {"min_p", "top_k", "repetition_penalty", "dry_multiplier"} <= set(rec["body"])
    opts = to_options(ChatCompletionRequest(**rec["body"]), GenerationOptions())
    assert (opts.min_p, opts.top_k, opts.repetition_penalty, opts.dry_multiplier, opts.dry_base,
            opts.dry_allowed_length) == (0.05, 40, 1.1, 0.8, 1.75, 2)
    r = httpx.post(st_server.url + "/v1/chat/completions", headers=rec["headers"], json=rec["body"], timeout=120)
    assert r.status_code == 200 and r.headers["x-tunesmith-batching"].startswith("padded")


def test_recorded_group_chat_becomes_one_character_turns():
    body = ChatCompletionRequest(**_recorded("07_group_kestrel.json")["body"])
    system, turns = to_conversation(body.messages)
    assert system.startswith("Write Kestrel's next reply") and "Alex: Nice bird." in system
    assert system.endswith("[Start a new group chat. Group members: Seraphina, Kestrel]")
    assert [t.role for t in turns] == ["assistant", "user"] * 4
    assert turns[0].content.splitlines()[1].startswith("Kestrel: *A hooded falcon")  # Name: prefixes stay text
    assert turns[-3].content == "Alright, both of you: which way to the pass?"
    assert turns[-2].content.startswith("Seraphina: ")  # her new line, just answered
    assert turns[-1].content == "[Write the next reply only as Kestrel.]"


def test_recorded_continue_ends_with_the_nudge_after_the_answer():
    body = ChatCompletionRequest(**_recorded("04_continue_stream.json")["body"])
    _, turns = to_conversation(body.messages)
    assert turns[-2].role == "assistant" and body.messages[-2].content == turns[-2].content
    assert turns[-1].role == "user" and turns[-1].content.startswith("[Continue the following message.")


# -- the rule, shape by shape ----------------------------------------------------------------------------
def test_leading_system_messages_are_the_system_text_in_order():
    system, turns = to_conversation(_messages(("system", "main"), ("system", "card"), ("system", "scenario"),
                                              ("user", "hi")))
    assert system == "main\ncard\nscenario" and turns == [Message("user", "hi")]


def test_a_system_message_between_turns_is_a_line_of_the_user_turn_at_its_place():
    _, turns = to_conversation(_messages(("user", "a"), ("assistant", "b"), ("system", "[note]"), ("user", "c")))
    assert turns[-1] == Message("user", "[note]\nc")
    _, turns = to_conversation(_messages(("user", "a"), ("system", "[note]"), ("assistant", "b"), ("user", "c")))
    assert turns[0] == Message("user", "a\n[note]")


def test_a_trailing_system_instruction_ends_the_user_turn_or_is_one():
    _, turns = to_conversation(_messages(("user", "a"), ("system", "[Write the next reply only as Corvin.]")))
    assert turns == [Message("user", "a\n[Write the next reply only as Corvin.]")]
    _, turns = to_conversation(_messages(("user", "a"), ("assistant", "b"), ("system", "[go on]")))
    assert turns[-1] == Message("user", "[go on]")


def test_consecutive_turns_of_one_role_are_merged_with_name_prefixes_kept():
    _, turns = to_conversation(_messages(("assistant", "Seraphina: hello"), ("assistant", "Kestrel: state it"),
                                         ("user", "Alex: hi"), ("user", "Alex: anyone?")))
    assert turns == [Message("assistant", "Seraphina: hello\nKestrel: state it"),
                     Message("user", "Alex: hi\nAlex: anyone?")]


def test_a_greeting_may_open_and_a_trailing_assistant_turn_asks_to_continue():
    system, turns = to_conversation(_messages(("system", "persona"), ("assistant", "*waves*")))
    assert system == "persona" and turns == [Message("assistant", "*waves*"), Message("user", CONTINUE_LINE)]


def test_system_messages_alone_make_the_last_one_the_question():
    system, turns = to_conversation(_messages(("system", "persona"), ("system", "Describe the glade.")))
    assert system == "persona" and turns == [Message("user", "Describe the glade.")]
    system, turns = to_conversation(_messages(("system", "Say hi.")))
    assert system is None and turns == [Message("user", "Say hi.")]


@pytest.mark.parametrize("messages, param", [
    ([("user", "a"), ("tool", "b")], "messages[1].role"),
    ([("system", "s"), ("function", "b"), ("user", "c")], "messages[1].role"),
])
def test_unsupported_roles_are_refused_by_index(messages, param):
    with pytest.raises(APIError) as e:
        to_conversation(_messages(*messages))
    assert e.value.status == 400 and e.value.param == param and param.split(".")[0] in e.value.message


def test_the_served_prompt_is_the_engine_prompt_of_the_rule(st_engine, st_server):
    body = {"model": "seraphina", "max_tokens": 4, "messages": [
        {"role": "system", "content": "persona"}, {"role": "assistant", "content": "Seraphina: hi"},
        {"role": "assistant", "content": "Kestrel: who"}, {"role": "user", "content": "me"},
        {"role": "system", "content": "[Write the next reply only as Kestrel.]"}]}
    r = httpx.post(st_server.url + "/v1/chat/completions", json=body, timeout=60)
    expected = st_engine.prompt_ids([Message("assistant", "Seraphina: hi\nKestrel: who"),
                                     Message("user", "me\n[Write the next reply only as Kestrel.]")], "persona",
                                    "seraphina", GenerationOptions(max_new_tokens=4))
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == len(expected)


# -- fields ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [{"logit_bias": {}}, {"logprobs": False}, {"logprobs": None, "top_logprobs": 0},
                                   {"tools": []}, {"user": "alex"}, {"presence_penalty": 0, "frequency_penalty": 0},
                                   {"typical_p": 1}, {"response_format": {"type": "text"}}])
def test_neutral_fields_are_accepted(st_server, extra):
    body = {"model": "seraphina", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    assert httpx.post(st_server.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200


@pytest.mark.parametrize("extra, param", [
    ({"logit_bias": {"42": 5}}, "logit_bias"), ({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": 1}, "logprobs"), ({"tools": [{"type": "function"}]}, "tools"), ({"typical_p": 0.9}, "typical_p"),
    ({"response_format": {"type": "json_object"}}, "response_format")])
def test_fields_that_would_change_the_answer_are_refused_by_name(st_server, extra, param):
    body = {"model": "seraphina", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    for stream in (False, True):
        r = httpx.post(st_server.url + "/v1/chat/completions", json={**body, "stream": stream}, timeout=60)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param and r.json()["error"]["message"].startswith(param + ":")
    with pytest.raises(APIError):
        check_fields(ChatCompletionRequest(**body))


def test_n_seed_and_stop_are_honoured(st_server):
    body = {"model": "seraphina", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "n": 2,
            "seed": 3, "temperature": 1}
    first = httpx.post(st_server.url + "/v1/chat/completions", json=body, timeout=60).json()
    again = httpx.post(st_server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert len(first["choices"]) == 2 and first["choices"] == again["choices"]
    text = first["choices"][0]["message"]["content"]
    stop = text[2:4] if len(text) > 4 else None
    if stop:
        cut = httpx.post(st_server.url + "/v1/chat/completions", json={**body, "stop": [stop]}, timeout=60).json()
        assert stop not in cut["choices"][0]["message"]["content"]


# -- authorization and the body limit --------------------------------------------------------------------------
@pytest.mark.parametrize("auth", ["Bearer undefined", "Bearer", "Basic dXNlcjpwdw==", "whatever"])
def test_any_authorization_is_accepted_without_a_key(st_server, auth):
    assert httpx.get(st_server.url + "/v1/models", headers={"Authorization": auth}).status_code == 200


def test_a_key_still_refuses_bearer_undefined(st_engine):
    with RunningServer(create_app(st_engine, api_key="k", ui=False)) as s:
        r = httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer undefined"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def _raw_post(port: int, body: bytes, headers: str = "") -> bytes:
    """Send the headers and the whole body first, then read the answer to the end (as node-fetch does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + headers.encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_24_mb_body_sent_whole_gets_a_readable_413(st_server):
    body = b'{"model": "seraphina", "messages": [{"role": "user", "content": "' + b"a" * 24_000_000 + b'"}]}'
    answer = _raw_post(st_server.port, body, f"Content-Length: {len(body)}\r\n")
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(payload)["error"]["code"] == "request_too_large"
    r = httpx.post(st_server.url + "/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "--max-request-bytes" in r.json()["error"]["message"]


def test_a_large_chunked_body_sent_whole_gets_a_readable_413(st_server):
    def chunks():
        yield b'{"model": "seraphina", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"a" * 100_000
        yield b'"}]}'

    r = httpx.post(st_server.url + "/v1/chat/completions", content=chunks(),
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


# -- the loop of docs/sillytavern.md ------------------------------------------------------------------------------
def test_the_loop_in_the_docs_runs_as_written(tiny_qwen2, tmp_path):
    """card + chats -> SFT -> swipe pairs -> DPO -> card: the docs' commands, on the tiny model for 2 steps each."""
    import re
    import subprocess
    import sys

    docs = (Path(__file__).parents[1] / "docs" / "sillytavern.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(T=tests/data/sillytavern.*?)```", docs, re.S).group(1)
    script = (block.replace("model=default", f"model={tiny_qwen2}").replace("max_steps=60", "max_steps=2")
              .replace("max_steps=20", "max_steps=2"))
    script = re.sub(r"^tunesmith serve .*$", "", script, flags=re.M).replace("tunesmith ", f"{sys.executable} -m "
                                                                             "tunesmith.cli ")
    (tmp_path / "tests").symlink_to(Path(__file__).parent)
    run = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "runs/kestrel-dpo/adapter/character.json").exists()
    assert len((tmp_path / "data/kestrel_pairs.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "cards/Kestrel.png").exists()
