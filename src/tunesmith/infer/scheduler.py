"""The one way onto the model: a queue of work and the worker thread that runs it, one item at a time.

    scheduler = Scheduler(run_batch, max_batch_size=16, batch_wait_s=0.02)
    scheduler.submit(request)                       # a PendingRequest; may share a padded batch with others
    job = scheduler.submit_job(lambda: run_continuous(...), requests=[])   # a prepared unit that runs alone
    scheduler.wait(job)                             # its result; an interrupted wait cancels the job
    with scheduler.incoming(): ...                  # a request is on its way: wait for it before batching
    scheduler.close(timeout=60, cancel=True)

Everything that generates goes through here (the API server's and web UI's requests, `Engine.generate`'s
sorted batches for eval, continuous batching), so two callers never run the model at once.  The worker
takes the oldest item.  A submitted request waits a few milliseconds for company, then runs with every
waiting request of the same batch key as one padded batch through `run_batch(requests)`; a job runs as
it is.  A request with a `seed` has a batch key of its own, so its result does not depend on what else
was running.

This is where a policy goes: `_take` chooses what runs next and `_execute` runs it.  `run_batch` gets,
besides the requests `_take` chose, a `take_more(fits, room)` it may call while it runs: a continuous
batching session (infer/continuous.py) calls it between decoding steps to admit requests of the same
batch key that arrived since, oldest first.  It hands over nothing once something of another key (or a
job) is the oldest waiting item, so the session drains and that item runs next: no key waits for ever.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import ModelError
from tunesmith.infer.request import Completion, PendingRequest, settle

INCOMING_WAIT_S = 0.5  # longest wait for announced requests (see Scheduler.incoming)
CANCEL_WAIT_S = 10.0  # how long an interrupted wait lets its running job end (a padded batch ends at its next token)


@dataclass
class Job:
    """A prepared unit of work: `fn()` runs alone on the worker thread; `future` gives its result."""

    fn: Callable[[], Any]
    requests: list[PendingRequest]  # the rows it generates, so that cancel() ends them at the next token
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)  # set once the worker is done with it

    @property
    def cancelled(self) -> bool:
        return self.future.cancelled()

    def cancel(self) -> None:
        for r in self.requests:
            r.cancel()
        self.future.cancel()


class Scheduler:
    def __init__(self, run_batch: Callable[..., list[list[Completion]] | None], *,
                 max_batch_size: int = 16, batch_wait_s: float = 0.02):
        # run_batch(requests, take_more): requests with one batch key -> their Completions, or None when it
        # settled every request's future itself (a continuous session, which also settles what take_more gave)
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._cv = threading.Condition()
        self._pending: list[PendingRequest | Job] = []
        self._running: list[PendingRequest | Job] = []  # what the worker is generating
        self._worker: threading.Thread | None = None
        self._last_batch_end = 0.0
        self._incoming = 0
        self._closed = False
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    # -- what callers do ----------------------------------------------------------------------------
    def submit(self, request: PendingRequest) -> PendingRequest:
        """Queue a request; its future gives its Completions."""
        self._put(request)
        return request

    def submit_job(self, fn: Callable[[], Any], requests: Iterable[PendingRequest] = ()) -> Job:
        """Queue `fn` to run alone on the worker thread (after what is queued before it)."""
        job = Job(fn, list(requests))
        self._put(job)
        return job

    def wait(self, job: Job) -> Any:
        """The job's result.  When the wait is interrupted (Ctrl-C), the job is cancelled and its running
        rows get a moment to end, so that the worker is out of the model when the caller leaves."""
        try:
            return job.future.result()
        finally:
            if not job.future.done():
                job.cancel()
                job.finished.wait(CANCEL_WAIT_S)

    @contextmanager
    def incoming(self):
        """Announce a request that is about to be submitted (its prompt is being prepared).

        The worker waits for announced requests (briefly) before starting a batch, so that requests a
        server received together are batched together even when preparing their prompts takes a while.
        """
        with self._cv:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cv:
                self._incoming -= 1
                self._cv.notify_all()

    def close(self, timeout: float = 60.0, *, cancel: bool = False) -> None:
        """Stop taking work, let the worker finish what it runs (or, with cancel, end it at the next
        token), and wait for it.

        Waiting matters: a daemon thread still inside torch when the interpreter exits aborts the
        process ("terminate called without an active exception").
        """
        with self._cv:
            self._closed = True
            if cancel:
                for item in [*self._pending, *self._running]:
                    item.cancel()
            self._cv.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def _put(self, item: PendingRequest | Job) -> None:
        with self._cv:
            if self._closed:
                raise ModelError("the engine is closed")
            self._pending.append(item)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._worker_loop, name="tunesmith-engine", daemon=True)
                self._worker.start()
            self._cv.notify_all()

    # -- the worker ---------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return
                if isinstance(self._pending[0], PendingRequest):
                    self._wait_for_company()
                work = self._take()
                self._running = list(work)
            try:
                self._execute(work)
            finally:
                with self._cv:
                    self._running = []
            self._last_batch_end = time.monotonic()

    def _wait_for_company(self) -> None:
        """Wait briefly for requests arriving together, so that they share one batch (called holding _cv).

        Until no new request came for batch_wait_s (at most 5 * batch_wait_s), and while a server is still
        preparing prompts it announced with incoming() (at most INCOMING_WAIT_S).  Counted from the end of
        the last batch too: clients answered by it send their next requests right after it."""
        start = max(self._pending[0].arrived, self._last_batch_end)
        deadline = start + 5 * self.batch_wait_s
        while self._waiting_rows() < self.max_batch_size and not self._closed:
            quiet_until = min(deadline, max(self._pending[-1].arrived, self._last_batch_end) + self.batch_wait_s)
            if self._incoming > 0:
                quiet_until = max(quiet_until, start + INCOMING_WAIT_S)
            now = time.monotonic()
            if now >= quiet_until:
                break
            self._cv.wait(quiet_until - now)

    def _waiting_rows(self) -> int:
        return sum(r.rows for r in self._pending if isinstance(r, PendingRequest))

    def _take(self) -> list[PendingRequest | Job]:
        """What runs next (called holding _cv): the oldest job alone, or the oldest request with every
        waiting request of its batch key, up to max_batch_size rows.  Cancelled items are dropped."""
        head = self._pending[0]
        if isinstance(head, Job):
            self._pending.pop(0)
            if head.cancelled:
                head.finished.set()
                return []
            return [head]
        key = head.batch_key()
        batch: list[PendingRequest | Job] = []
        rest: list[PendingRequest | Job] = []
        rows = 0
        for r in self._pending:
            if isinstance(r, Job):
                rest.append(r)
            elif r.cancelled:
                r.future.cancel()
            elif r.batch_key() == key and (not batch or rows + r.rows <= self.max_batch_size):
                batch.append(r)
                rows += r.rows
            else:
                rest.append(r)
        self._pending = rest
        return batch

    def _execute(self, work: list[PendingRequest | Job]) -> None:
        """Run what `_take` chose; an error goes to every waiting caller and the worker lives on."""
        if not work:
            return
        if isinstance(work[0], Job):
            job = work[0]
            try:
                settle(job.future, result=job.fn())
            except BaseException as e:
                settle(job.future, exception=e)
            finally:
                job.finished.set()
            return
        key = work[0].batch_key()
        try:
            results = self.run_batch(work, lambda fits, room: self.take_more(key, fits, room))
        except BaseException as e:
            with self._cv:
                running = list(self._running)
            for r in running:
                settle(r.future, exception=e)
            return
        if results is not None:
            for r, res in zip(work, results):
                settle(r.future, result=res)

    def take_more(self, key: tuple, fits: Callable[[PendingRequest], bool], room: int) -> list[PendingRequest]:
        """Waiting requests of batch key `key` that may join the running session (oldest first, at most `room`,
        each one `fits`): none once the oldest waiting item is of another key or a job (see the docstring)."""
        taken: list[PendingRequest] = []
        with self._cv:
            while self._pending and len(taken) < room and not self._closed:
                head = self._pending[0]
                if isinstance(head, Job) or head.batch_key() != key:
                    break
                if head.cancelled:
                    self._pending.pop(0).future.cancel()
                    continue
                if not fits(head):
                    break
                taken.append(self._pending.pop(0))
            self._running.extend(taken)
        return taken
