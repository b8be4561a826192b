"""Keep a CPU run's torch threads within the cores that other work leaves free, while it trains.

    guard = OtherWorkGuard(threads=2, stream=sys.stdout)   # a TrainerCallback; build_trainer adds it
    # after a step: "threads: 2 -> 1 (other work keeps 1.0 core busy)"; later "threads: 1 -> 2 (cores free again)"

A run whose OpenMP threads spin while they wait (tunesmith.threads.openmp_wait_policy leaves that on when every
core was free at the start) is fast on an idle machine and several times slower as soon as another process
takes one of its cores: a spinning thread holds its core while the thread it waits for cannot get one (a
2-thread step of the default model beside one busy process: 40-50 s instead of 4 s on one thread).  So after
every step this looks at how much of the machine other work used since the last look, and sets torch's
threads to the cores left (at least one), or back up to the run's threads when they are free again.  Compiled
layers follow too: their kernels read the thread count when they run (`cpp.dynamic_threads`).
"""

from __future__ import annotations

from transformers import TrainerCallback

from tunesmith.threads import other_work_line
from tunesmith.train.runtime import log

CHECK_EVERY_STEPS = 1  # a look costs two psutil reads; a step under contention can cost minutes


class OtherWorkGuard(TrainerCallback):
    """Lower torch's threads when other work takes cores, raise them again when it leaves (module docstring).
    `measure`: a function giving other work's cores since its last call (tests); by default the machine's CPU
    times less this process's own."""

    def __init__(self, threads: int, stream=None, every: int = CHECK_EVERY_STEPS, measure=None, cores=None):
        import psutil

        self.threads = self.current = threads
        self.every = every
        self.stream = stream
        # the machine's CPUs, as tunesmith.threads.choose_threads counts free ones: on a big shared host other
        # work on other cores leaves this run's cores alone
        self.cores = cores or psutil.cpu_count() or 1
        self._measure = measure
        self._own = None

    def _other_work(self) -> float:
        if self._measure is not None:
            return self._measure()
        import psutil

        from tunesmith.threads import other_work_cores

        if self._own is None:
            self._own = psutil.Process()
            other_work_cores(self._own, self.cores)  # the first call starts the interval
            return 0.0
        return other_work_cores(self._own, self.cores)

    def _set(self, threads: int, why: str) -> None:
        import torch

        log(f"threads: {self.current} -> {threads} ({why})", self.stream)
        torch.set_num_threads(threads)
        self.current = threads

    def on_train_begin(self, args, state, control, **kwargs):
        import torch._inductor.config as inductor

        inductor.cpp.dynamic_threads = True  # compiled kernels ask for the thread count when they run
        self._other_work()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every:
            return
        others = self._other_work()
        free = max(1, min(self.threads, self.cores - round(others)))
        if free < self.current:
            self._set(free, other_work_line(others))
        elif free > self.current:
            self._set(free, "cores free again")

    def on_train_end(self, args, state, control, **kwargs):
        if self.current != self.threads:
            import torch

            torch.set_num_threads(self.threads)  # what the run set up; the next phase chooses again
            self.current = self.threads
