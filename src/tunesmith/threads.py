"""How many CPU threads a run computes with, and the one line that says why.

    from tunesmith.threads import choose_threads
    choice = choose_threads(None, "cpu")    # looks at the machine: idle cores, and cores only niced work uses
    choice.apply()                          # torch.set_num_threads(choice.threads)
    print(choice.line())                    # threads: 2 (2 of 2 cores free; 1.0 core of niced work, which yields)

Training, evaluation, make-pairs and the demo call this at the start of each phase, so a run that began
while another job was busy looks again when it moves on (the demo trains, then evaluates).

Why cores and not the load average: the 1-minute mean still counts this process's own setup work for a
minute after it ended.  Why niced work counts as free: a process at nice 19 gives the core up as soon as
one at nice 0 wants it, so an OpenMP thread placed there runs almost at full speed, while one placed on a
core that normal-priority work keeps busy makes every step wait for it.  Linux reports the two apart in
/proc/stat (`user` against `nice`); a job at idle scheduling priority but nice 0 shows as `user` and is
counted as busy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuLoad:
    """What other work keeps busy right now, in cores (least of a few short samples)."""

    cores: int  # logical CPUs the busy and niced shares are counted over
    busy: float  # normal-priority work (user, system, interrupts, time the hypervisor took)
    niced: float  # work at a positive nice value: it yields to this run


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: not a CPU run, torch keeps its own setting
    reason: str

    def apply(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)

    def line(self) -> str:
        if self.threads is None:
            return f"threads: not set ({self.reason})"
        return f"threads: {self.threads} ({self.reason})"


def cpu_load(window_s: float = 0.3, samples: int = 3) -> CpuLoad:
    """Sample the whole machine's CPU time a few times while this process waits; keep the quietest sample
    (a job that lasts shows in every one; a command that runs for a moment does not)."""
    import psutil

    cores = psutil.cpu_count() or os.cpu_count() or 1
    taken = [psutil.cpu_times_percent(interval=window_s) for _ in range(samples)]
    quietest = min(taken, key=_busy_percent)
    return CpuLoad(cores=cores, busy=_busy_percent(quietest) / 100 * cores,
                   niced=getattr(quietest, "nice", 0.0) / 100 * cores)


def _busy_percent(t) -> float:
    """Busy share of all cores in a psutil cpu_times_percent sample, niced time left out: idle, iowait and
    nice are what a new thread can have."""
    return sum(getattr(t, k, 0.0) for k in ("user", "system", "irq", "softirq", "steal"))


def choose_threads(asked: int | None, device: str, load: CpuLoad | None = None) -> ThreadChoice:
    """The threads for a run on `device`: `asked` when given, else as many as there are cores that no
    normal-priority work keeps busy (niced work counts as free), at least one."""
    if device != "cpu":
        return ThreadChoice(None, f"device {device}")
    if asked:
        return ThreadChoice(asked, "as asked")
    load = load or cpu_load()
    usable = usable_cores()
    free = max(1, min(usable, load.cores - round(load.busy)))
    reason = f"{free} of {usable} cores free"
    if free < usable:
        reason += f": other work keeps {load.busy:.1f} core{_s(load.busy)} busy (a threads setting overrides)"
    if load.niced >= 0.1:
        reason += f"; {load.niced:.1f} core{_s(load.niced)} of niced work, which yields"
    return ThreadChoice(free, reason)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), no more than the physical
    cores: a second thread on a hyper-thread sibling slows matmuls down more than it adds."""
    import psutil

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(allowed, psutil.cpu_count(logical=False) or allowed))


def _s(n: float) -> str:
    return "" if round(n, 1) == 1 else "s"
