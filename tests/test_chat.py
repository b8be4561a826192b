"""`tunesmith chat`: the terminal loop driven through its input/output streams, and the real command via stdin."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError
from tunesmith.infer.options import GenerationOptions, parse_bool
from tunesmith.infer.terminal import ChatState, run_chat


@pytest.fixture(scope="module")
def chat_engine(engine_with_adapter):
    return engine_with_adapter


def drive(engine, lines: list[str], **state_kw) -> tuple[ChatState, str]:
    state = ChatState(adapter=state_kw.pop("adapter", "base"),
                      options=state_kw.pop("options", GenerationOptions(max_new_tokens=8)), **state_kw)
    out = io.StringIO()
    run_chat(engine, state, io.StringIO("".join(line + "\n" for line in lines)), out, prompt="> ")
    return state, out.getvalue()


def test_multi_turn_history_and_streamed_output(chat_engine):
    state, out = drive(chat_engine, ["你好", "4*5等于多少", "/history", "/exit", "never read"])
    assert [m.role for m in state.messages] == ["user", "assistant", "user", "assistant"]
    # the second answer was generated with the first turn in the prompt
    want = chat_engine.chat(state.messages[:3], options=GenerationOptions(max_new_tokens=8))
    assert state.messages[3].content == want and want in out
    assert "[user] 4*5等于多少" in out and "never read" not in out


def test_retry_clear_system_adapter_commands(chat_engine):
    greedy = GenerationOptions(max_new_tokens=8)
    state, out = drive(chat_engine, ["你好", "/retry"])
    assert len(state.messages) == 2  # retry replaced the answer, did not add a turn
    assert out.count(state.messages[1].content) >= 2
    state, out = drive(chat_engine, ["你好", "/clear", "/system 你是李白", "/adapter libai", "你好"])
    assert state.system == "你是李白" and state.adapter == "libai" and len(state.messages) == 2
    assert state.messages[1].content == chat_engine.chat([Message("user", "你好")], system="你是李白",
                                                         adapter="libai", options=greedy)
    state, out = drive(chat_engine, ["/adapter nope", "/adapter"])
    assert "unknown adapter 'nope'" in out and "*base" in out and state.adapter == "base"


def test_set_parses_values_by_type(chat_engine):
    state, out = drive(chat_engine, ["/set do_sample=true temperature=1.2 top_k=5 seed=3 max_history_turns=2",
                                     "/set do_sample=false", "/set num_beams=2 stop=a|b"])
    assert state.options.do_sample is False  # "false" really is False
    assert state.options.temperature == 1.2 and state.options.top_k == 5 and state.options.seed == 3
    assert state.options.num_beams == 2 and state.options.stop == ["a", "b"] and state.max_history_turns == 2
    state, out = drive(chat_engine, ["/set top_p=2", "/set colour=red", "/set do_sample=maybe",
                                     "/set max_history_turns=x"])
    assert out.count("error:") == 4 and state.options == GenerationOptions(max_new_tokens=8)
    assert "top_p: expected a number in (0, 1]" in out and "unknown generation option 'colour'" in out


def test_beams_and_sampling_in_chat(chat_engine):
    state, _ = drive(chat_engine, ["/set num_beams=3", "你好", "/set num_beams=1 do_sample=true seed=1", "再说一次"])
    assert len(state.messages) == 4 and all(m.content is not None for m in state.messages)


def test_too_long_message_is_reported_not_kept(chat_engine):
    state, out = drive(chat_engine, ["长" * 3000, "短"])
    assert "error:" in out and "fit" in out
    assert [m.content for m in state.messages if m.role == "user"] == ["短"]


def test_parse_bool():
    assert parse_bool("False") is False and parse_bool("on") is True
    with pytest.raises(ConfigError):
        parse_bool("maybe")


def test_chat_command_reads_stdin(tiny_qwen2, tmp_path):
    env = {**os.environ, "TUNESMITH_CACHE": str(tmp_path)}
    script = "你好\n/set do_sample=false\n/history\n/exit\n"
    proc = subprocess.run([sys.executable, "-m", "tunesmith.cli", "chat", "--model", str(tiny_qwen2),
                           "--max-new-tokens", "6", "--device", "cpu", "--system", "你是李白"],
                          input=script, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "[system] 你是李白" in proc.stdout and "[user] 你好" in proc.stdout and "[assistant]" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "tunesmith.cli", "chat", "--model", str(tmp_path / "missing")],
                         input="", capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "no such model folder" in bad.stderr
