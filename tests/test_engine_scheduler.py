"""The scheduler: one queue and one worker thread for every generation (served requests, eval's batches)."""

from __future__ import annotations

import threading
import time

import pytest

from tunesmith.conversation import Message
from tunesmith.errors import ModelError
from tunesmith.infer.options import GenerationOptions
from tunesmith.infer.request import Completion, PendingRequest
from tunesmith.infer.scheduler import Scheduler
from tunesmith.template import ChatTemplate

TPL = ChatTemplate(name="chatml")


def _request(adapter: str = "base", **options) -> PendingRequest:
    return PendingRequest([1, 2, 3], adapter, TPL, GenerationOptions(**options), None)


def _fake_runner(log: list):
    def run(batch, take_more=None):
        log.append(("batch", [r.adapter for r in batch]))
        return [[Completion(r.adapter, 3, 1, "stop")] for r in batch]
    return run


def test_compatible_requests_share_a_batch_and_jobs_run_alone_in_order():
    log: list = []
    scheduler = Scheduler(_fake_runner(log), max_batch_size=8, batch_wait_s=0.05)
    gate = threading.Event()
    blocker = scheduler.submit_job(lambda: gate.wait(5) and log.append(("job", "blocker")))
    a, b = scheduler.submit(_request("a")), scheduler.submit(_request("b"))
    job = scheduler.submit_job(lambda: log.append(("job", "eval")) or "done")
    a2 = scheduler.submit(_request("a"))
    gate.set()
    assert scheduler.wait(job) == "done"
    assert [f.result(5)[0].text for f in (a.future, b.future, a2.future)] == ["a", "b", "a"]
    scheduler.wait(blocker)
    # the oldest item runs first; "a" takes the later "a" along, the job waits its turn behind "b"
    assert log == [("job", "blocker"), ("batch", ["a", "a"]), ("batch", ["b"]), ("job", "eval")]
    scheduler.close()


def test_cancelled_work_is_skipped_and_close_cancels_what_waits():
    log: list = []
    scheduler = Scheduler(_fake_runner(log), batch_wait_s=0.0)
    gate = threading.Event()
    running = scheduler.submit_job(lambda: gate.wait(5))
    skipped = scheduler.submit_job(lambda: log.append("ran"))
    skipped.cancel()
    queued = scheduler.submit(_request())
    time.sleep(0.1)
    scheduler.close(timeout=0.1, cancel=True)
    gate.set()
    assert skipped.finished.wait(5) and log == []
    assert queued.cancelled and queued.future.cancelled() and running.future.cancelled()
    with pytest.raises(ModelError, match="closed"):
        scheduler.submit(_request())


def test_a_failing_job_fails_its_caller_and_the_worker_lives_on():
    scheduler = Scheduler(_fake_runner([]), batch_wait_s=0.0)
    with pytest.raises(ZeroDivisionError):
        scheduler.wait(scheduler.submit_job(lambda: 1 / 0))
    assert scheduler.wait(scheduler.submit_job(lambda: "still here")) == "still here"
    scheduler.close()


def test_generate_and_served_requests_never_run_the_model_at_once(engine_with_adapter, monkeypatch):
    """generate() queues its batches behind the requests already waiting: every model call is on the worker
    thread, one at a time, and the answers are those each path gives alone."""
    engine = engine_with_adapter
    greedy = GenerationOptions(max_new_tokens=10)
    convs = [(None, [Message("user", q)]) for q in ["你好", "hi", "床前明月光"]]
    want_generate = engine.generate(convs, adapter="libai", options=greedy, batch_size=2)
    want_chat = engine.chat(convs[0][1], options=greedy)
    model = engine.model
    original = model.generate
    state = {"inside": 0, "most": 0, "threads": set()}
    lock = threading.Lock()

    def watched(*args, **kwargs):
        with lock:
            state["inside"] += 1
            state["most"] = max(state["most"], state["inside"])
            state["threads"].add(threading.current_thread().name)
        try:
            time.sleep(0.02)
            return original(*args, **kwargs)
        finally:
            with lock:
                state["inside"] -= 1

    monkeypatch.setattr(model, "generate", watched)
    answers: dict[str, object] = {}
    start = threading.Barrier(3)

    def serve(i):
        start.wait()
        answers[f"chat{i}"] = "".join(engine.stream(convs[0][1], options=greedy))

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    start.wait()
    answers["generate"] = engine.generate(convs, adapter="libai", options=greedy, batch_size=2)
    for t in threads:
        t.join(60)
    assert answers == {"chat0": want_chat, "chat1": want_chat, "generate": want_generate}
    assert state["most"] == 1 and state["threads"] == {"tunesmith-engine"}
