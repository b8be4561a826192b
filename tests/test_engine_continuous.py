"""Continuous batching of served requests (infer/continuous.py): same answers as padded batches, a finished
or cancelled reply's slot goes to the next request at once, per-request options and adapters, fallbacks."""

from __future__ import annotations

import threading
import time

import pytest

from tunesmith.conversation import Message
from tunesmith.infer.engine import Engine, GenerationOptions

QUESTIONS = ["你好，请问你是谁？", "Tell me about the moon.", "写一首诗", "What is 2+2?", "今天天气怎么样？"]


@pytest.fixture(scope="module")
def adapters(tiny_qwen2, make_adapter) -> dict[str, str]:
    return {"libai": str(make_adapter(tiny_qwen2, seed=1, default_system="你是李白")),
            "ie": str(make_adapter(tiny_qwen2, seed=2, template="plain"))}


@pytest.fixture(scope="module")
def engines(tiny_qwen2, adapters):
    made = {mode: Engine.load(str(tiny_qwen2), adapters, device="cpu", batching=mode, max_batch_size=4)
            for mode in ("padded", "continuous")}
    yield made
    for eng in made.values():
        eng.close()


def _sessions(engine: Engine, monkeypatch) -> list[list[int]]:
    """Record, per continuous session, the ids of the requests it served (its first ones and those it took in)."""
    seen: list[list[int]] = []
    real = engine.batcher.run

    def spy(first, take_more, *args):
        seen.append([r.id for r in first])

        def more(fits, room):
            joined = take_more(fits, room)
            seen[-1].extend(r.id for r in joined)
            return joined
        return real(first, more, *args)

    monkeypatch.setattr(engine.batcher, "run", spy)
    return seen


def _ask_together(engine: Engine, jobs: list[tuple[str, str, GenerationOptions]]):
    """Send every (adapter, question, options) at once from its own thread, streaming; (completion, streamed)."""
    results: list = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def ask(i, adapter, question, opts):
        pieces: list[str] = []
        ids = engine.prompt_ids([Message("user", question)], adapter=adapter, options=opts)
        start.wait()
        comp = engine.submit(ids, adapter, opts, on_text=lambda _c, p: pieces.append(p)).result(120)[0]
        results[i] = (comp, "".join(pieces))

    threads = [threading.Thread(target=ask, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return results


def test_greedy_answers_equal_the_padded_path_with_per_request_options_and_adapters(engines, monkeypatch):
    full = engines["padded"].chat([Message("user", QUESTIONS[2])], adapter="libai",
                                  options=GenerationOptions(max_new_tokens=20))
    stop = full[4:6]  # a stop string the reply is known to reach
    jobs = [("libai", QUESTIONS[0], GenerationOptions(max_new_tokens=20)),
            ("libai", QUESTIONS[1], GenerationOptions(max_new_tokens=7)),
            ("libai", QUESTIONS[2], GenerationOptions(max_new_tokens=20, stop=[stop])),
            ("base", QUESTIONS[3], GenerationOptions(max_new_tokens=15)),
            ("ie", QUESTIONS[4], GenerationOptions(max_new_tokens=12))]
    sessions = _sessions(engines["continuous"], monkeypatch)
    cont = _ask_together(engines["continuous"], jobs)
    padded = _ask_together(engines["padded"], jobs)
    for (c, c_streamed), (p, _), (_adapter, _q, opts) in zip(cont, padded, jobs):
        assert (c.text, c.completion_tokens, c.finish_reason) == (p.text, p.completion_tokens, p.finish_reason)
        assert c_streamed == c.text  # the stream adds up to the answer, stop strings held back
        assert c.completion_tokens <= opts.max_new_tokens
    assert cont[1][0].completion_tokens == 7 and cont[1][0].finish_reason == "length"
    assert cont[2][0].finish_reason == "stop" and cont[2][0].text == full[:full.find(stop)]
    # every request ran continuously; the three adapters need three sessions (one key each)
    assert sorted(i for s in sessions for i in s) == sorted(set(i for s in sessions for i in s))
    assert len([i for s in sessions for i in s]) == len(jobs) and len(sessions) >= 3


def test_a_request_that_arrives_later_joins_the_running_batch(engines, monkeypatch):
    eng = engines["continuous"]
    sessions = _sessions(eng, monkeypatch)
    long_opts, short_opts = GenerationOptions(max_new_tokens=150), GenerationOptions(max_new_tokens=4)
    first_piece = threading.Event()
    done_at: dict[str, float] = {}
    long_ids = eng.prompt_ids([Message("user", QUESTIONS[0])], options=long_opts)
    short_ids = eng.prompt_ids([Message("user", QUESTIONS[1])], options=short_opts)
    long_req = eng.submit(long_ids, options=long_opts, on_text=lambda _c, _p: first_piece.set())
    long_req.add_done_callback(lambda _f: done_at.setdefault("long", time.monotonic()))
    assert first_piece.wait(60)
    short = eng.submit(short_ids, options=short_opts).result(60)[0]
    done_at["short"] = time.monotonic()
    long = long_req.result(120)[0]
    # the short reply did not wait for the long one: it finished first, in the same session
    assert done_at["short"] < done_at["long"]
    assert short.completion_tokens <= 4 and long.completion_tokens > 4
    assert len(sessions) == 1 and len(sessions[0]) == 2


def test_a_cancelled_request_frees_its_slot_for_the_next(tiny_qwen2, adapters):
    eng = Engine.load(str(tiny_qwen2), adapters, device="cpu", batching="continuous", max_batch_size=1)
    try:
        opts = GenerationOptions(max_new_tokens=400)
        started = threading.Event()
        first = eng.enqueue(eng.prompt_ids([Message("user", QUESTIONS[0])], options=opts), options=opts,
                            on_text=lambda _c, _p: started.set())
        assert started.wait(60)
        second = eng.submit(eng.prompt_ids([Message("user", QUESTIONS[1])]),
                            options=GenerationOptions(max_new_tokens=3))
        time.sleep(0.2)
        assert not second.done()  # one slot: the second waits while the first runs
        t0 = time.monotonic()
        first.cancel()  # a client that went away
        assert second.result(30)[0].completion_tokens <= 3
        assert time.monotonic() - t0 < 20
        assert first.future.cancelled()
    finally:
        eng.close()


def test_sampling_runs_continuously_and_seeded_requests_run_padded(engines, monkeypatch):
    eng = engines["continuous"]
    sessions = _sessions(eng, monkeypatch)
    padded_calls: list[int] = []
    real_padded = eng._run_padded
    monkeypatch.setattr(eng, "_run_padded", lambda reqs: padded_calls.append(len(reqs)) or real_padded(reqs))
    ids = eng.prompt_ids([Message("user", QUESTIONS[2])])
    sampled = eng.submit(ids, options=GenerationOptions(max_new_tokens=8, do_sample=True, temperature=0.9))
    assert 1 <= sampled.result(60)[0].completion_tokens <= 8
    assert len(sessions) == 1 and not padded_calls
    seeded = GenerationOptions(max_new_tokens=8, do_sample=True, temperature=0.9, seed=3)
    a, b = (eng.submit(ids, options=seeded).result(60)[0].text for _ in range(2))
    assert a == b and padded_calls == [1, 1] and len(sessions) == 1


def test_padded_mode_and_one_row_auto_never_start_a_session(tiny_qwen2, adapters, engines, monkeypatch):
    padded = engines["padded"]
    sessions = _sessions(padded, monkeypatch)
    padded.chat([Message("user", QUESTIONS[0])], options=GenerationOptions(max_new_tokens=3))
    one = Engine.load(str(tiny_qwen2), device="cpu", max_batch_size=1)
    try:
        sessions += _sessions(one, monkeypatch)
        one.chat([Message("user", QUESTIONS[0])], options=GenerationOptions(max_new_tokens=3))
    finally:
        one.close()
    assert sessions == []


def test_the_manager_lives_between_sessions_and_is_released_before_padded_work(engines):
    eng = engines["continuous"]
    ask = [Message("user", QUESTIONS[1])]
    greedy = GenerationOptions(max_new_tokens=5)
    inner = eng.model.get_base_model()
    eng.generate([(None, ask)], options=greedy, batching="padded")
    own_attn = inner.config._attn_implementation
    first = eng.chat(ask, options=greedy)
    manager = eng.batcher.manager
    assert manager is not None and manager.is_running()
    assert eng.chat(ask, options=greedy) == first and eng.batcher.manager is manager  # reused, not restarted
    # eval's padded batches run the model directly: the manager is stopped first (an eager model's attention,
    # switched to paged|eager for it, restored)
    assert eng.generate([(None, ask)], options=greedy, batching="padded") == [first]
    assert eng.batcher.manager is None and inner.config._attn_implementation == own_attn
    assert eng.chat(ask, options=greedy) == first  # and a new one starts for the next served request
