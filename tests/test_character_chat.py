"""A character travels with its adapter: the engine reads its character.json, `chat` opens with the greeting,
`serve` lists it in /v1/models, and the web chat's role picker starts a conversation with it (headless Chromium).

The card is SillyTavern's default card, Seraphina (datasets/character-cards), JSON and PNG, each trained for two steps
on a tiny model.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support import cjk, needs_browser, ui_page
from tunesmith.character import Character, save_character
from tunesmith.cli import main
from tunesmith.conversation import Message
from tunesmith.infer.engine import Engine
from tunesmith.infer.options import GenerationOptions
from tunesmith.infer.terminal import ChatState, run_chat
from tunesmith.serve.api import create_app
from tunesmith.train import train_from_config

CARDS = Path(__file__).resolve().parents[1] / "datasets" / "character-cards"
GREEDY = GenerationOptions(max_new_tokens=8)


def _train(model: Path, out: Path, card: Path):
    return train_from_config({
        "model": str(model), "output_dir": str(out), "dtype": "fp32", "batch_size": 2, "lr": 5e-3, "max_steps": 2,
        "warmup": 0, "device": "cpu", "plot": False, "logging_steps": 1,
        "data": {"train": str(card), "max_source_len": 256, "max_target_len": 64}})


@pytest.fixture(scope="module")
def long_qwen2(tmp_path_factory) -> Path:
    """A tiny Qwen2 with room for the card: the byte-level tokenizer spells persona + greeting in ~2,500 tokens."""
    from tunesmith.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("long-qwen2") / "model", max_positions=8192)


@pytest.fixture(scope="module")
def seraphina(long_qwen2, tmp_path_factory) -> Path:
    """The adapter of two training steps on the Seraphina JSON card (test_train_character trains on the PNG)."""
    return _train(long_qwen2, tmp_path_factory.mktemp("seraphina-json") / "run", CARDS / "Seraphina.json").adapter_dir


@pytest.fixture(scope="module")
def seraphina_png(long_qwen2, tmp_path_factory) -> Path:
    """The same card as a PNG (the card in its `chara` chunk), trained for two steps."""
    return _train(long_qwen2, tmp_path_factory.mktemp("seraphina-png") / "run", CARDS / "Seraphina.png").adapter_dir


@pytest.fixture(scope="module")
def char_engine(long_qwen2, seraphina, make_adapter):
    libai = make_adapter(long_qwen2, seed=5, default_system="你是李白")
    eng = Engine.load(str(long_qwen2), {"seraphina": str(seraphina), "libai": str(libai)}, device="cpu")
    yield eng
    eng.close()


def _drive(engine, lines: list[str], adapter: str = "seraphina") -> tuple[ChatState, str]:
    state = ChatState(adapter=adapter, options=GREEDY)
    out = io.StringIO()
    run_chat(engine, state, io.StringIO("".join(line + "\n" for line in lines)), out, prompt="> ")
    return state, out.getvalue()


def test_the_engine_reads_the_character_next_to_each_adapter(char_engine):
    char = char_engine.character_for("seraphina")
    assert char is not None and char.name == "Seraphina" and char.greetings[0].startswith("*You wake with a start")
    assert char_engine.character_for("libai") is None and char_engine.character_for("base") is None
    assert char_engine.template_for("seraphina").default_system == char.persona


def test_chat_opens_with_the_greeting_and_the_model_answers_after_it(char_engine):
    greeting = char_engine.character_for("seraphina").greetings[0]
    state, out = _drive(char_engine, ["Where am I?"])
    assert out.index("[Seraphina] *You wake with a start") < out.index("> ")  # printed before the first prompt
    assert [m.role for m in state.messages] == ["assistant", "user", "assistant"]
    assert state.messages[0].content == greeting
    # the reply is the one to the conversation that opens with the greeting, as the card trained it
    expected = char_engine.chat([Message("assistant", greeting), Message("user", "Where am I?")],
                                adapter="seraphina", options=GREEDY)
    assert state.messages[2].content == expected


def test_clear_greets_again_and_greeting_picks_another(char_engine):
    char = char_engine.character_for("seraphina")
    state, out = _drive(char_engine, ["Hi", "/clear"])
    assert [m.content for m in state.messages] == [char.greetings[0]]
    if len(char.greetings) > 1:
        state, out = _drive(char_engine, ["/greeting", "/greeting 2"])
        assert "1. *You wake with a start" in out and state.messages[0].content == char.greetings[1]
    state, out = _drive(char_engine, ["/greeting 99", "/greeting x"])
    assert "error: greeting 99" in out and "expected a number" in out
    state, out = _drive(char_engine, ["/greeting"], adapter="libai")
    assert "is not a character" in out and state.messages == []
    state, out = _drive(char_engine, ["/adapter seraphina"], adapter="base")
    assert state.messages and state.messages[0].content == char.greetings[0]  # switching to it with no chat yet


def test_chat_command_prints_the_greeting_first(long_qwen2, seraphina_png, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n/history\n/exit\n"))
    assert main(["chat", "--model", str(long_qwen2), "-a", f"seraphina={seraphina_png}", "--max-new-tokens", "4",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.index("[Seraphina] *You wake with a start") < out.index(">>> ")
    history = out[out.index("[assistant] *You wake"):]
    assert history.index("[assistant] *You wake") < history.index("[user] Hello") < history.index("[assistant]", 1)


def test_models_list_each_character_with_its_greetings(char_engine):
    with TestClient(create_app(char_engine)) as tc:
        data = {m["id"]: m for m in tc.get("/v1/models").json()["data"]}
        one = tc.get("/v1/models/seraphina").json()
    char = char_engine.character_for("seraphina")
    assert data["seraphina"]["character"] == {"name": "Seraphina", "greeting": char.greetings[0],
                                              "greetings": char.greetings} == one["character"]
    assert "character" not in data["libai"] and "character" not in data["base"]


def test_a_character_without_greetings_opens_nothing(tiny_qwen2, make_adapter, tmp_path):
    import shutil

    folder = shutil.copytree(make_adapter(tiny_qwen2, seed=11), tmp_path / "quiet")
    save_character(Character(name="Quiet", persona="You are Quiet.", greetings=[]), folder)
    eng = Engine.load(str(tiny_qwen2), {"quiet": str(folder)}, device="cpu")
    try:
        state, out = _drive(eng, [], adapter="quiet")
        assert state.messages == [] and "[Quiet]" not in out
    finally:
        eng.close()


@pytest.mark.browser
@needs_browser
def test_picking_a_character_in_the_web_chat_starts_with_its_greeting(char_engine):

    char = char_engine.character_for("seraphina")
    opts = GenerationOptions(max_new_tokens=12)
    expected = char_engine.chat([Message("assistant", char.greetings[0]), Message("user", "Where am I?")],
                                adapter="seraphina", options=opts)
    with ui_page(create_app(char_engine, default_options=opts)) as (page, url):
        page.goto(url + "/ui/")
        page.wait_for_selector("#user-input textarea", timeout=60_000)
        page.click("#adapter input")
        page.get_by_role("option", name="Seraphina (seraphina)").click()
        page.wait_for_function("() => document.querySelector('#chatbot').innerText.includes('You wake')",
                               timeout=30_000)
        page.fill("#user-input textarea", "Where am I?")
        page.click("#submit-btn")
        # the whole expected answer, compared by its CJK characters (markdown rendering changes the rest)
        page.wait_for_function(
            "e => (document.querySelector('#chatbot').innerText.match(/[\\u4e00-\\u9fff]/g) || []).join('')"
            ".endsWith(e)", arg=cjk(expected), timeout=60_000)
        text = page.locator("#chatbot").inner_text()
    assert text.index("You wake with a start") < text.index("Where am I?")
    assert cjk(text).endswith(cjk(expected)) and len(cjk(expected)) > 3
