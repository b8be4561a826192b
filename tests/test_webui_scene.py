"""The Scene tab of the web chat: the prompt each speaker gets (pure functions), and a headless Chromium scene with
two character adapters on the tiny Qwen2."""

from __future__ import annotations

import itertools
import time

import pytest
from fastapi.testclient import TestClient

from tests.support import cjk, make_lora_adapter, needs_browser, ui_page
from tunesmith.character import Character, save_character
from tunesmith.conversation import Message
from tunesmith.infer.history import check_messages
from tunesmith.infer.options import GenerationOptions
from tunesmith.serve.api import create_app
from tunesmith.serve.webui_scene import (
    CONTINUE_LINE,
    START_LINE,
    TAKE_TURNS,
    clean_reply,
    next_speaker,
    persona_for,
    render_transcript,
    scene_prompt,
    scene_stops,
    stream_line,
)

MAX_NEW = 40
PEOPLE = {"alice": "Alice", "bob": "Bob"}
PERSONAS = {"alice": "你是爱丽丝，一位诗人。", "bob": "你是鲍勃，一位剑客。", "carol": None}


def line(speaker, text, name=None):
    return {"speaker": speaker, "name": name or (PEOPLE.get(speaker, speaker) if speaker else "User"), "text": text}


def test_other_speakers_lines_are_merged_into_one_user_message():
    transcript = [line(None, "hi all"), line("bob", "hello"), line(None, "Alice?")]
    system, messages = scene_prompt(transcript, "alice", PEOPLE, "User", PERSONAS.get)
    assert messages == [Message("user", "User: hi all\nBob: hello\nUser: Alice?")]
    assert system == ("你是爱丽丝，一位诗人。\n\nAlice is in a scene with Bob and User. The others' lines come as "
                      "\"Name: text\". Reply only as Alice, with Alice's next line.")


def test_own_lines_are_assistant_messages():
    transcript = [line(None, "hi"), line("alice", "a1"), line("bob", "b1"), line(None, "u2"), line("alice", "a2"),
                  line(None, "u3")]
    _, messages = scene_prompt(transcript, "alice", PEOPLE, "User", PERSONAS.get)
    assert messages == [Message("user", "User: hi"), Message("assistant", "a1"), Message("user", "Bob: b1\nUser: u2"),
                        Message("assistant", "a2"), Message("user", "User: u3")]
    _, for_bob = scene_prompt(transcript, "bob", PEOPLE, "User", PERSONAS.get)
    assert for_bob == [Message("user", "User: hi\nAlice: a1"), Message("assistant", "b1"),
                       Message("user", "User: u2\nAlice: a2\nUser: u3")]


def test_a_speaker_who_spoke_last_is_asked_to_continue():
    transcript = [line(None, "hi"), line("alice", "a1")]
    _, messages = scene_prompt(transcript, "alice", PEOPLE, "User", PERSONAS.get)
    assert messages == [Message("user", "User: hi"), Message("assistant", "a1"), Message("user", CONTINUE_LINE)]
    # and once it has continued, that line stays between its two lines (the prompt it was asked with)
    _, again = scene_prompt(transcript + [line("alice", "a2")], "alice", PEOPLE, "User", PERSONAS.get)
    assert again == messages + [Message("assistant", "a2"), Message("user", CONTINUE_LINE)]
    _, empty = scene_prompt([], "bob", PEOPLE, "User", PERSONAS.get)
    assert empty == [Message("user", START_LINE)]


def test_an_opening_greeting_stays_assistant_first_for_its_speaker_only():
    transcript = [line("alice", "欢迎！"), line(None, "谢谢")]
    _, for_alice = scene_prompt(transcript, "alice", PEOPLE, "User", PERSONAS.get)
    assert for_alice == [Message("assistant", "欢迎！"), Message("user", "User: 谢谢")]
    _, for_bob = scene_prompt(transcript, "bob", PEOPLE, "User", PERSONAS.get)
    assert for_bob == [Message("user", "Alice: 欢迎！\nUser: 谢谢")]


def test_three_participants_and_a_scene_description():
    people = {**PEOPLE, "carol": "carol"}
    transcript = [line("alice", "a1"), line("carol", "c1"), line(None, "u1", name="小明"), line("bob", "b1")]
    system, messages = scene_prompt(transcript, "carol", people, "小明", PERSONAS.get, description="  雨夜，客栈。 ")
    # carol has no persona: the scene description and the scene line only
    assert system == ("雨夜，客栈。\n\ncarol is in a scene with Alice, Bob and 小明. The others' lines come as "
                      "\"Name: text\". Reply only as carol, with carol's next line.")
    assert messages == [Message("user", "Alice: a1"), Message("assistant", "c1"),
                        Message("user", "小明: u1\nBob: b1")]
    assert scene_stops("carol", people, "小明") == ["\nAlice:", "\nAlice：", "\nBob:", "\nBob：", "\n小明:", "\n小明："]


def test_every_transcript_gives_a_prompt_the_engine_accepts():
    speakers = [None, "alice", "bob", "carol"]
    people = {"alice": "Alice", "bob": "Bob", "carol": "Carol"}
    for n in range(5):
        for who in itertools.product(speakers, repeat=n):
            transcript = [line(s, f"t{i}", name=people.get(s, "User")) for i, s in enumerate(who)]
            for speaker in people:
                check_messages(scene_prompt(transcript, speaker, people, "User", lambda a: None)[1])


def test_take_turns_goes_round_after_the_last_character_who_spoke():
    order = ["alice", "bob", "carol"]
    assert next_speaker([], order, TAKE_TURNS) == "alice"
    assert next_speaker([line("alice", "a"), line(None, "u")], order, TAKE_TURNS) == "bob"
    assert next_speaker([line("carol", "c")], order, TAKE_TURNS) == "alice"
    assert next_speaker([line("bob", "b"), line("gone", "g")], order, TAKE_TURNS) == "carol"  # who left is skipped
    assert next_speaker([line("alice", "a")], order, "alice") == "alice"  # an explicit pick wins
    assert next_speaker([line("alice", "a")], order, "dave") == "bob"  # a pick no longer present: take turns
    assert next_speaker([], [], TAKE_TURNS) is None


def test_replies_lose_an_echoed_name_and_lines_render_with_their_speaker():
    assert clean_reply("Alice: 你好", "Alice") == "你好"
    assert clean_reply(" **Alice**：你好 ", "Alice") == "你好"
    assert clean_reply("Alice is here", "Alice") == "Alice is here"
    assert render_transcript([line("alice", "a1"), line(None, "u1")]) == [
        {"role": "assistant", "content": "**Alice**: a1"}, {"role": "user", "content": "u1"}]


class _RecordingEngine:
    """Just enough of an Engine for stream_line: records the call, streams a reply that echoes the name."""

    def __init__(self):
        self.calls = []

    def character_for(self, adapter):
        return Character(name=PEOPLE[adapter], persona=PERSONAS[adapter], greetings=[])

    def stream(self, messages, system=None, adapter="base", options=None, max_history_turns=None):
        self.calls.append((messages, system, adapter, options))
        yield from ["Bo", "b: ", "来", "了"]


def test_stream_line_asks_the_speakers_adapter_with_the_scene_prompt():
    engine = _RecordingEngine()
    transcript = [line("alice", "a1"), line(None, "u1")]
    lines = list(stream_line(engine, transcript, "bob", PEOPLE, "User", None, GenerationOptions(stop=["###"])))
    assert [x["text"] for x in lines] == ["Bo", "", "来", "来了", "来了"]  # the echoed "Bob:" goes once complete
    assert lines[-1] == line("bob", "来了")
    messages, system, adapter, options = engine.calls[0]
    assert (system, messages) == scene_prompt(transcript, "bob", PEOPLE, "User", PERSONAS.get)
    assert adapter == "bob" and options.stop == ["###", *scene_stops("bob", PEOPLE, "User")]


# -- the tab in the served page ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene_engine(tiny_qwen2, tmp_path_factory):
    """An Engine on the tiny Qwen2 with two character adapters, alice and bob (their own folders: character.json
    is written next to them)."""
    from tunesmith.infer.engine import Engine

    paths = {}
    for seed, (key, name) in enumerate(PEOPLE.items(), start=21):
        folder = make_lora_adapter(tiny_qwen2, tmp_path_factory.mktemp(f"scene-{key}") / "adapter", seed=seed)
        save_character(Character(name=name, persona=PERSONAS[key], greetings=[f"你好，我是{name}。"]), folder)
        paths[key] = str(folder)
    eng = Engine.load(str(tiny_qwen2), paths, device="cpu")
    yield eng
    eng.close()


def test_scene_tab_controls_are_served(scene_engine):
    with TestClient(create_app(scene_engine)) as tc:
        config = tc.get("/ui/config").json()
    props = {c.get("props", {}).get("elem_id"): c.get("props", {}) for c in config["components"]}
    assert props["scene-participants"]["value"] == ["alice", "bob"]
    assert props["scene-next-speaker"]["value"] == TAKE_TURNS
    assert {"scene-chatbot", "scene-input", "scene-send-btn", "scene-continue-btn", "scene-clear-btn",
            "scene-user-name", "scene-description", "scene-do-sample", "scene-max-new-tokens"} <= set(props)



def _expected_line(engine, transcript, speaker, participants, user_name):
    """The line the page should show: the greedy reply to scene_prompt, as the tab asks for it."""
    system, messages = scene_prompt(transcript, speaker, participants, user_name, lambda a: persona_for(engine, a))
    opts = GenerationOptions(max_new_tokens=MAX_NEW, stop=scene_stops(speaker, participants, user_name))
    text = clean_reply(engine.chat(messages, system=system, adapter=speaker, options=opts), participants[speaker])
    return {"speaker": speaker, "name": participants[speaker], "text": text}


def _wait_for_line(page, count: int, expected: dict):
    """Wait until the scene shows `count` character lines, the last one `expected`."""
    bots = page.locator('#scene-chatbot [data-testid="bot"]')
    deadline = time.time() + 60
    while True:
        shown = bots.last.inner_text() if bots.count() else ""
        if bots.count() == count and shown.startswith(expected["name"] + ":") and \
                cjk(shown) == cjk(expected["text"]):
            return
        assert time.time() < deadline, f"expected line {count} {expected}, the page shows {bots.count()}: {shown!r}"
        time.sleep(0.1)


def _pick(page, dropdown: str, label: str):
    page.click(f"{dropdown} input")
    page.get_by_role("option", name=label, exact=True).click()


@pytest.mark.browser
@needs_browser
def test_browser_scene_takes_turns_and_follows_the_picked_speaker(scene_engine):

    app = create_app(scene_engine, default_options=GenerationOptions(max_new_tokens=MAX_NEW))
    # picked in this order, bob speaks first: his greeting opens the scene
    people = {"bob": "Bob", "alice": "Alice"}
    user = "小明"
    transcript = [{"speaker": "bob", "name": "Bob", "text": "你好，我是Bob。"}, line(None, "你们好", name=user)]
    with ui_page(app) as (page, url):
        page.goto(url + "/ui/")
        page.click("#tab-scene-button")
        page.wait_for_selector("#scene-input textarea", timeout=60_000)
        assert page.locator('#scene-chatbot [data-testid="bot"]').first.inner_text().startswith("Alice:")
        page.click('#scene-participants .remove-all')
        _pick(page, "#scene-participants", "Bob (bob)")
        _pick(page, "#scene-participants", "Alice (alice)")
        page.keyboard.press("Escape")
        page.fill("#scene-user-name input, #scene-user-name textarea", user)
        page.click("#scene-clear-btn")
        _wait_for_line(page, 1, transcript[0])

        # Send: the user's line, then (taking turns) the one after bob
        page.fill("#scene-input textarea", "你们好")
        page.click("#scene-send-btn")
        transcript.append(_expected_line(scene_engine, transcript, "alice", people, user))
        _wait_for_line(page, 2, transcript[-1])
        assert page.locator('#scene-chatbot [data-testid="user"]').last.inner_text().strip() == "你们好"

        # Continue, taking turns: bob again, answering what alice said
        page.click("#scene-continue-btn")
        transcript.append(_expected_line(scene_engine, transcript, "bob", people, user))
        _wait_for_line(page, 3, transcript[-1])

        # picked explicitly, bob speaks twice in a row (asked with "(continue)")
        _pick(page, "#scene-next-speaker", "Bob (bob)")
        page.click("#scene-continue-btn")
        transcript.append(_expected_line(scene_engine, transcript, "bob", people, user))
        _wait_for_line(page, 4, transcript[-1])
    texts = [t["text"] for t in transcript[2:]]
    assert all(len(cjk(t)) > 5 for t in texts) and len(set(texts)) == 3, texts  # the checks tell the lines apart
