"""The web chat at /ui (and the labeling page at /label) in the served app; a headless Chromium chats with it."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.support import cjk, needs_browser, ui_page
from tunesmith.conversation import Message
from tunesmith.infer.options import GenerationOptions
from tunesmith.serve.api import create_app

MAX_NEW = 120


@pytest.fixture(scope="module")
def ui_engine(engine_with_adapter):
    return engine_with_adapter


def test_ui_label_and_root_are_served(ui_engine, tmp_path):
    app = create_app(ui_engine, label_project=str(tmp_path / "label-project"))
    with TestClient(app) as tc:
        page = tc.get("/ui/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        config = tc.get("/ui/config").json()
        labels = {c.get("props", {}).get("label") for c in config["components"]}
        assert {"Role / adapter", "System prompt", "Do sample", "Temperature", "Top-p", "Top-k (0: off)", "Beams",
                "Max new tokens", "Max history (turns)"} <= labels
        assert tc.get("/label/").status_code == 200
        assert tc.get("/", follow_redirects=False).headers["location"] == "/ui/"
        assert tc.get("/v1/models").json()["data"][1]["id"] == "libai"


def test_ui_asks_for_the_api_key(ui_engine):
    with TestClient(create_app(ui_engine, api_key="sekret")) as tc:
        assert tc.get("/ui/config").status_code == 401
        assert tc.post("/ui/login", data={"username": "me", "password": "wrong"}).status_code == 400
        assert tc.post("/ui/login", data={"username": "me", "password": "sekret"}).status_code == 200
        assert tc.get("/ui/config").status_code == 200
        assert tc.get("/v1/models").status_code == 401  # the UI login does not open the API



@pytest.mark.browser
@needs_browser
def test_browser_chat_streams_the_answer(ui_engine):

    app = create_app(ui_engine, default_options=GenerationOptions(max_new_tokens=MAX_NEW))
    expected = ui_engine.chat([Message("user", "你好")], adapter="libai",
                              options=GenerationOptions(max_new_tokens=MAX_NEW))
    assert len(cjk(expected)) > 10
    with ui_page(app) as (page, url):
        page.goto(url + "/ui/")
        page.wait_for_selector("#user-input textarea", timeout=60_000)
        # record every length the answer bubble goes through
        page.evaluate("""() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
                if (bots.length) window.__lengths.push(bots[bots.length - 1].innerText.length);
            }).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
        }""")
        page.fill("#user-input textarea", "你好")
        page.click("#submit-btn")
        bot = page.locator('#chatbot [data-testid="bot"]').last
        deadline = time.time() + 90
        while cjk(bot.inner_text() if bot.count() else "") != cjk(expected):
            assert time.time() < deadline, f"answer never completed: {bot.inner_text() if bot.count() else None!r}"
            time.sleep(0.1)
        lengths = page.evaluate("window.__lengths")
        partial = {n for n in lengths if 0 < n < max(lengths)}
        assert len(partial) >= 2, f"the answer did not stream (lengths seen: {lengths})"
        assert page.locator('#chatbot [data-testid="user"]').first.inner_text().strip() == "你好"

        # Retry answers the same question again (greedy: the same answer), Clear empties the chat
        page.click("#retry-btn")
        time.sleep(0.5)
        deadline = time.time() + 90
        while cjk(bot.inner_text() if bot.count() else "") != cjk(expected):
            assert time.time() < deadline
            time.sleep(0.1)
        assert page.locator('#chatbot [data-testid="user"]').count() == 1
        page.click("#clear-btn")
        page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=\"user\"]').length === 0")
