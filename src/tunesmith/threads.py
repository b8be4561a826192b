"""How many CPU threads a run computes with, and the one line that says why.

    from tunesmith.threads import choose_threads
    choice = choose_threads(None, "cpu")    # looks at the machine: idle cores, and cores only niced work uses
    choice.apply()                          # torch.set_num_threads(choice.threads)
    print(choice.line())                    # threads: 2 (2 of 2 cores free; 1.0 core of niced work, which yields)

Training, evaluation, make-pairs and the demo call this at the start of each phase, so a run that began
while another job was busy looks again when it moves on (the demo trains, then evaluates).

How the threads wait between parallel regions is decided once, before torch loads (OpenMP reads it then):
`openmp_wait_policy()` leaves OpenMP's own waiting (spin a moment, then sleep) when every core is free, and asks
for passive waiting (sleep at once) when other work is busy.  On a 2-core Intel Xeon a training step ran 1.5x
faster spinning than passive on an idle machine, and several times slower spinning beside one busy process
(BENCHMARKS.md, "OpenMP waiting").  So a spinning run also carries `OtherWorkGuard`: while training it looks at
the machine after every step and gives cores up (torch.set_num_threads) as soon as other work takes them, and
takes them back when they are free again.

Why cores and not the load average: the 1-minute mean still counts this process's own setup work for a
minute after it ended.  Why niced work counts as free: a process at nice 19 gives the core up as soon as
one at nice 0 wants it, so an OpenMP thread placed there runs almost at full speed, while one placed on a
core that normal-priority work keeps busy makes every step wait for it.  Linux reports the two apart in
/proc/stat (`user` against `nice`); a job at idle scheduling priority but nice 0 shows as `user` and is
counted as busy.
"""

from __future__ import annotations

import os
import time
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
    load = load or _fresh_sample() or cpu_load()
    usable = usable_cores()
    free = max(1, min(usable, load.cores - round(load.busy)))
    reason = f"{free} of {usable} cores free"
    if free < usable:
        reason += f": {other_work_line(load.busy)} (a threads setting overrides)"
    if load.niced >= 0.1:
        reason += f"; {load.niced:.1f} core{_s(load.niced)} of niced work, which yields"
    return ThreadChoice(free, reason)


PASSIVE = "PASSIVE"
_decided: list[str] = []  # what openmp_wait_policy decided in this process, for the run's threads line
_sampled: list[tuple[float, CpuLoad]] = []  # its load sample, which the run's thread choice right after reuses
FRESH_S = 10.0


def openmp_wait_policy(asked_threads: int | None = None, load: CpuLoad | None = None) -> str:
    """Set how OpenMP threads wait (module docstring) unless the environment already says, and say which.
    Call it before torch loads; passive when threads were asked for (nothing watches them) or under torchrun."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return f"OpenMP waiting as the environment sets it ({os.environ.get('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')})"
    why = None
    if asked_threads:
        why = "threads were set"
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        why = "several processes"
    else:
        load = load or cpu_load()
        _sampled[:] = [(time.monotonic(), load)]
        if load.cores - round(load.busy) < usable_cores():
            why = other_work_line(load.busy)
    if why:
        os.environ["OMP_WAIT_POLICY"] = PASSIVE
        line = f"OpenMP threads wait passively ({why})"
    else:
        line = "OpenMP threads spin a moment before they sleep (every core free; given up if other work starts)"
    _decided[:] = [line]
    return line


def _fresh_sample() -> CpuLoad | None:
    """openmp_wait_policy's load sample when it is under FRESH_S old, once (a later phase samples again)."""
    if _sampled and time.monotonic() - _sampled[0][0] < FRESH_S:
        return _sampled.pop()[1]
    _sampled.clear()
    return None


def wait_policy_line() -> str | None:
    """openmp_wait_policy's line when this process decided it, else None."""
    return _decided[0] if _decided else None


def spinning() -> bool:
    """Do this process's OpenMP threads spin while they wait (OpenMP's default)?"""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() != PASSIVE and os.environ.get("GOMP_SPINCOUNT") != "0"


def other_work_cores(own, cores: int) -> float:
    """Cores that other normal-priority work kept busy since the last call (niced work left out): the machine's
    busy share less this process's own (`own`, a psutil.Process; its spinning threads count as its own)."""
    import psutil

    machine = _busy_percent(psutil.cpu_times_percent(interval=None)) / 100 * cores
    return max(0.0, machine - own.cpu_percent(interval=None) / 100)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), no more than the physical
    cores: a second thread on a hyper-thread sibling slows matmuls down more than it adds."""
    import psutil

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(allowed, psutil.cpu_count(logical=False) or allowed))


def other_work_line(busy: float) -> str:
    """"other work keeps 1.0 core busy": the words the thread choice, the wait policy and the guard share."""
    return f"other work keeps {busy:.1f} core{_s(busy)} busy"


def _s(n: float) -> str:
    return "" if round(n, 1) == 1 else "s"
