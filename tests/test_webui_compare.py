"""The Side by side tab of the web chat: the merge of several models' streams (with a fake engine whose
streams run at different rates), the columns' histories, and a headless Chromium comparing base and adapter."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
from fastapi.testclient import TestClient

from tests.support import cjk, needs_browser, ui_page
from tunesmith.character import Character
from tunesmith.conversation import Message
from tunesmith.errors import ConfigError
from tunesmith.infer.options import GenerationOptions
from tunesmith.serve.api import create_app
from tunesmith.serve.webui_compare import (
    Answer,
    chatbot_history,
    column_label,
    column_opening,
    column_view,
    past_turns,
    stream_answers,
)

MAX_NEW = 40
QUESTION = [Message("user", "你好")]


@pytest.fixture(scope="module")
def first_answers(engine_with_adapter) -> dict[str, str]:
    """engine.chat's greedy answer to QUESTION, for the base and for "libai"."""
    opts = GenerationOptions(max_new_tokens=MAX_NEW)
    return {n: engine_with_adapter.chat(QUESTION, adapter=n, options=opts) for n in ("base", "libai")}


class FakeRequest:
    def __init__(self):
        self.future: Future = Future()
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        self.future.cancel()


class FakeEngine:
    """Each adapter streams its scripted pieces from its own thread, one every `delay` seconds, as an engine
    running them together would; a script ending in an exception fails after its pieces."""

    def __init__(self, scripts: dict[str, tuple[float, list]]):
        self.scripts = scripts
        self.requests: dict[str, FakeRequest] = {}
        self.threads: list[threading.Thread] = []
        self.prompts: dict[str, list[Message]] = {}

    def prompt_ids(self, messages, system, adapter, options, max_history_turns):
        if adapter not in self.scripts:
            raise ConfigError(f"{adapter}: prompt of 9999 tokens exceeds the model's context")
        self.prompts[adapter] = list(messages)
        return [len(messages)]

    def enqueue(self, ids, adapter, options, on_text, mix_adapters=False):
        req = self.requests[adapter] = FakeRequest()
        delay, script = self.scripts[adapter]

        def run():
            for piece in script:
                time.sleep(delay)
                if req.cancelled:
                    return
                if isinstance(piece, BaseException):
                    req.future.set_exception(piece)
                    return
                on_text(0, piece)
            req.future.set_result([])

        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()
        return req

    def character_for(self, name):
        if name != "libai":
            return None
        return Character(name="李白", persona="诗人", greetings=["在下李白。", "又见面了。"])


def test_answers_grow_side_by_side_and_an_error_stays_in_its_column():
    engine = FakeEngine({"base": (0.01, list("abcdefgh")), "libai": (0.017, list("床前明月光")),
                         "broken": (0.012, ["x", "y", RuntimeError("CUDA out of memory")])})
    question = [Message("user", "你好")]
    snapshots = [{name: a.text for name, a in answers.items()}
                 for answers in stream_answers(engine, {n: question for n in ("base", "libai", "broken", "huge")})]
    assert snapshots[-1] == {"base": "abcdefgh", "libai": "床前明月光", "broken": "xy", "huge": ""}
    assert snapshots[0] == {"base": "", "libai": "", "broken": "", "huge": ""}
    # both columns were seen half grown at once: the merge reads pieces as they come, not model by model
    both_partial = [s for s in snapshots if 0 < len(s["base"]) < 8 and 0 < len(s["libai"]) < 5]
    assert len(both_partial) >= 2, snapshots


def test_errors_end_only_their_own_answer():
    engine = FakeEngine({"base": (0.01, list("abcdefgh")), "broken": (0.005, ["x", RuntimeError("CUDA oom")])})
    question = [Message("user", "你好")]
    first, *_, last = stream_answers(engine, {"base": question, "broken": question, "huge": question})
    assert first["huge"] == Answer(error="huge: prompt of 9999 tokens exceeds the model's context", done=True)
    assert last["broken"] == Answer(text="x", error="RuntimeError: CUDA oom", done=True)
    assert last["base"] == Answer(text="abcdefgh", done=True)


def test_closing_the_stream_cancels_what_still_runs():
    engine = FakeEngine({"base": (0.01, list("ab")), "libai": (0.05, list("x" * 200))})
    question = [Message("user", "你好")]
    stream = stream_answers(engine, {"base": question, "libai": question})
    for answers in stream:
        if answers["base"].done and answers["libai"].text:
            break
    stream.close()  # what Gradio does when the page goes away
    assert engine.requests["libai"].cancelled and not engine.requests["base"].cancelled
    for thread in engine.threads:
        thread.join(2)
        assert not thread.is_alive()


def test_each_column_keeps_its_own_conversation():
    engine = FakeEngine({})
    assert column_label(engine, "libai") == "李白 (libai)" and column_label(engine, "base") == "base"
    assert column_opening(engine, "libai") == [{"role": "assistant", "content": "在下李白。"}]
    assert column_opening(engine, "base") == []
    shown = column_view(chatbot_history(column_opening(engine, "libai")), "你是谁？", Answer("我是李白", done=True))
    shown = column_view(chatbot_history(shown), "写诗", Answer("床前", error="cancelled", done=True))
    shown.append({"role": "user", "content": "没答完的问题"})  # a page closed before any answer came
    # the Chatbot hands its value back with content parts and metadata, as Gradio 6 does
    value = [{**m, "content": [{"type": "text", "text": m["content"]}], "metadata": m.get("metadata")} for m in shown]
    history = chatbot_history(value)
    assert [m["error"] for m in history] == [False, False, False, False, False, True, False]
    assert past_turns(history) == [Message("assistant", "在下李白。"), Message("user", "你是谁？"),
                                   Message("assistant", "我是李白")]


def test_the_real_engine_answers_each_column_as_chat_does(engine_with_adapter, first_answers):
    opts = GenerationOptions(max_new_tokens=MAX_NEW)
    *_, last = stream_answers(engine_with_adapter, {"base": QUESTION, "libai": QUESTION}, options=opts)
    assert last == {name: Answer(text, done=True) for name, text in first_answers.items()}
    assert last["base"].text != last["libai"].text


def test_the_tab_is_on_the_page(engine_with_adapter):
    with TestClient(create_app(engine_with_adapter)) as tc:
        config = tc.get("/ui/config").json()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"tab-compare", "compare-models", "compare-system", "compare-max-new-tokens", "compare-do-sample",
            "compare-temperature", "compare-base", "compare-libai", "compare-input", "compare-send",
            "compare-clear"} <= ids


_RECORD_LENGTHS = """() => {
    window.__lengths = [];
    const answer = name => {
        const bots = document.querySelectorAll(`#compare-${name} [data-testid="bot"]`);
        return bots.length ? bots[bots.length - 1].innerText.length : 0;
    };
    new MutationObserver(() => window.__lengths.push([answer('base'), answer('libai')]))
        .observe(document.querySelector('#tab-compare'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.browser
@needs_browser
def test_browser_compares_base_and_adapter(engine_with_adapter, first_answers):

    engine = engine_with_adapter
    opts = GenerationOptions(max_new_tokens=MAX_NEW)
    expected = first_answers
    second = {n: engine.chat(QUESTION + [Message("assistant", expected[n]), Message("user", "再说一遍")],
                             adapter=n, options=opts) for n in ("base", "libai")}
    assert expected["base"] != expected["libai"] and all(len(cjk(t)) > 5 for t in expected.values())
    app = create_app(engine, default_options=opts)
    with ui_page(app, viewport={"width": 1400, "height": 1000}) as (page, url):
        page.goto(url + "/ui/")
        page.get_by_role("tab", name="Side by side").click()
        page.wait_for_selector("#compare-input textarea", timeout=60_000)
        page.evaluate(_RECORD_LENGTHS)

        def answers(n: int) -> dict[str, str]:
            """The n-th answer (0-based) of each column once both are complete."""
            deadline, seen = time.time() + 60, {}
            while True:
                for name in ("base", "libai"):
                    bots = page.locator(f'#compare-{name} [data-testid="bot"]')
                    seen[name] = bots.nth(n).inner_text() if bots.count() > n else ""
                want = expected if n == 0 else second
                if all(cjk(seen[k]) == cjk(want[k]) for k in want):
                    return seen
                assert time.time() < deadline, f"answers never completed: {seen}"
                time.sleep(0.1)

        page.fill("#compare-input textarea", "你好")
        page.click("#compare-send")
        answers(0)
        lengths = page.evaluate("window.__lengths")
        for i, name in enumerate(("base", "libai")):
            final = max(n[i] for n in lengths)
            assert len({n[i] for n in lengths if 0 < n[i] < final}) >= 2, f"{name} did not stream: {lengths}"
        # side by side, not in turn: both answers were seen half-written at the same moment, more than once
        finals = [max(n[i] for n in lengths) for i in (0, 1)]
        together = [n for n in lengths if all(0 < n[i] < finals[i] for i in (0, 1))]
        assert len({tuple(n) for n in together}) >= 2, f"the columns filled one after the other: {lengths}"

        # the second message: each column answers with its own first answer in its history
        page.fill("#compare-input textarea", "再说一遍")
        page.click("#compare-send")
        answers(1)
        for name in ("base", "libai"):
            users = page.locator(f'#compare-{name} [data-testid="user"]')
            assert [users.nth(i).inner_text().strip() for i in range(users.count())] == ["你好", "再说一遍"]

        page.click("#compare-clear")
        page.wait_for_function("document.querySelectorAll('#tab-compare [data-testid=\"user\"]').length === 0")
