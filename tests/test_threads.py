"""The CPU thread choice: busy cores are left alone, niced work counts as free, the line says why."""

from __future__ import annotations

from types import SimpleNamespace

import psutil
import pytest

from tunesmith import threads
from tunesmith.threads import CpuLoad, choose_threads, cpu_load


def _sample(user=0.0, nice=0.0, system=0.0, idle=0.0, steal=0.0, iowait=0.0):
    """A psutil.cpu_times_percent result: percentages of all cores together."""
    return SimpleNamespace(user=user, nice=nice, system=system, idle=idle, iowait=iowait, irq=0.0, softirq=0.0,
                           steal=steal, guest=0.0, guest_nice=0.0)


@pytest.fixture(autouse=True)
def no_earlier_sample(monkeypatch):
    """A load sample an earlier test's run left behind (tunesmith.threads reuses one for up to 10 s) stays out."""
    monkeypatch.setattr(threads, "_sampled", [])
    monkeypatch.setattr(threads, "_decided", [])


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    samples: list = []

    def fake(interval=None, percpu=False):
        return samples.pop(0)

    monkeypatch.setattr(psutil, "cpu_times_percent", fake)
    return samples


def test_niced_work_counts_as_free(four_cores):
    # a nice-19 job keeps two of four cores busy: all four are the run's (the job yields at once)
    four_cores.extend([_sample(nice=50.0, idle=50.0)] * 3)
    load = cpu_load(window_s=0)
    assert load.busy == 0 and load.niced == pytest.approx(2.0)
    choice = choose_threads(None, "cpu", load)
    assert choice.threads == 4
    assert choice.line() == "threads: 4 (4 of 4 cores free; 2.0 cores of niced work, which yields)"


def test_normal_priority_work_takes_its_cores(four_cores):
    four_cores.extend([_sample(user=45.0, system=5.0, idle=50.0)] * 3)
    choice = choose_threads(None, "cpu", cpu_load(window_s=0))
    assert choice.threads == 2
    assert "2 of 4 cores free: other work keeps 2.0 cores busy" in choice.line()


def test_busy_and_niced_together(four_cores):
    # one core of normal work and one of niced work: three threads, and the line names both
    four_cores.extend([_sample(user=25.0, nice=25.0, idle=50.0)] * 3)
    choice = choose_threads(None, "cpu", cpu_load(window_s=0))
    assert choice.threads == 3
    assert "keeps 1.0 core busy" in choice.reason and "1.0 core of niced work" in choice.reason


def test_the_quietest_sample_counts(four_cores):
    # a command that ran for a moment shows in one sample only; a lasting job shows in all
    four_cores.extend([_sample(user=100.0), _sample(user=25.0, idle=75.0), _sample(user=75.0, idle=25.0)])
    assert choose_threads(None, "cpu", cpu_load(window_s=0)).threads == 3


def test_hypervisor_steal_is_busy_and_at_least_one_thread(four_cores):
    four_cores.extend([_sample(user=60.0, steal=40.0)] * 3)
    assert choose_threads(None, "cpu", cpu_load(window_s=0)).threads == 1


def test_asked_threads_and_other_devices_skip_the_sample(monkeypatch):
    monkeypatch.setattr(threads, "cpu_load", lambda *a, **k: pytest.fail("sampled the CPU"))
    assert choose_threads(3, "cpu").line() == "threads: 3 (as asked)"
    assert choose_threads(None, "cuda").threads is None


def test_no_more_threads_than_physical_cores(monkeypatch):
    # four logical CPUs on two physical cores (hyper-threads): two threads on an idle machine
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4 if logical else 2)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert choose_threads(None, "cpu", CpuLoad(cores=4, busy=0.0, niced=0.0)).threads == 2


def test_training_logs_the_thread_line(tiny_qwen2, tmp_path, monkeypatch, capsys):
    """A training run prints one `threads:` line with the reason and sets torch to it."""
    import torch

    from tunesmith.train import train_from_config

    monkeypatch.setattr(threads, "cpu_load", lambda *a, **k: CpuLoad(cores=2, busy=1.0, niced=1.0))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    data = tmp_path / "d.jsonl"
    line = '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "吾乃李白"}]}\n'
    data.write_text(line * 4, encoding="utf-8")
    before = torch.get_num_threads()
    try:
        train_from_config({"model": str(tiny_qwen2), "data": {"train": str(data)}, "max_steps": 1, "warmup": 0,
                           "output_dir": str(tmp_path / "run"), "device": "cpu", "dtype": "fp32"})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("threads:")]
    assert lines == ["threads: 1 (1 of 2 cores free: other work keeps 1.0 core busy (a threads setting overrides); "
                     "1.0 core of niced work, which yields)"]


# -- how OpenMP threads wait, and giving cores up while training ---------------------------------------------
@pytest.fixture
def no_wait_env(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)


def test_openmp_spins_only_when_every_core_is_free(no_wait_env, monkeypatch):
    import os

    line = threads.openmp_wait_policy(None, CpuLoad(cores=2, busy=0.2, niced=0.0))
    assert "spin" in line and "OMP_WAIT_POLICY" not in os.environ and threads.spinning()
    assert threads.wait_policy_line() == line
    # the thread choice right after reuses that sample once (no second second of sampling), then samples again
    monkeypatch.setattr(threads, "cpu_load", lambda *a, **k: CpuLoad(cores=2, busy=1.0, niced=0.0))
    assert choose_threads(None, "cpu").threads == 2 and choose_threads(None, "cpu").threads == 1
    line = threads.openmp_wait_policy(None, CpuLoad(cores=2, busy=1.0, niced=0.0))
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and not threads.spinning()
    assert line == "OpenMP threads wait passively (other work keeps 1.0 core busy)"


@pytest.mark.parametrize("asked, world, why", [(2, None, "threads were set"), (None, "2", "several processes")])
def test_openmp_waits_passively_when_nothing_watches_the_threads(no_wait_env, monkeypatch, asked, world, why):
    import os

    if world:
        monkeypatch.setenv("WORLD_SIZE", world)
    line = threads.openmp_wait_policy(asked, CpuLoad(cores=2, busy=0.0, niced=0.0))
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and line.endswith(f"({why})")


def test_openmp_policy_from_the_environment_is_kept(no_wait_env, monkeypatch):
    import os

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    line = threads.openmp_wait_policy(None, CpuLoad(cores=2, busy=1.5, niced=0.0))
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "environment" in line and threads.spinning()


def test_guard_gives_cores_up_to_other_work_and_takes_them_back(capsys):
    import torch

    from tunesmith.train.thread_guard import OtherWorkGuard

    seen = [0.0, 0.2, 1.1, 0.9, 0.1, 1.6]  # other work's cores at each look (the first starts the interval)
    guard = OtherWorkGuard(threads=2, every=5, measure=lambda: seen.pop(0), cores=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        guard.on_train_begin(None, None, None)
        counts = []
        for step in range(1, 26):
            guard.on_step_end(None, SimpleNamespace(global_step=step), None)
            counts.append(torch.get_num_threads())
        # looks at steps 5, 10, 15, 20, 25: 0.2 -> 2, 1.1 -> 1, 0.9 -> 1, 0.1 -> 2, 1.6 -> 1 (at least one)
        assert counts[4::5] == [2, 1, 1, 2, 1] and counts[:4] == [2] * 4
        guard.on_train_end(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("threads:")]
    assert lines == ["threads: 2 -> 1 (other work keeps 1.1 cores busy)", "threads: 1 -> 2 (cores free again)",
                     "threads: 2 -> 1 (other work keeps 1.6 cores busy)"]


@pytest.mark.parametrize("policy", [None, "PASSIVE"])
def test_training_guards_its_cores_only_when_its_threads_spin(tiny_qwen2, tmp_path, monkeypatch, policy):
    """A CPU run whose OpenMP threads spin carries the guard; one that waits passively does not need it."""
    import torch

    from tunesmith.train import train_from_config
    from tunesmith.train.thread_guard import OtherWorkGuard

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    if policy:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    else:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(threads, "cpu_load", lambda *a, **k: CpuLoad(cores=2, busy=0.0, niced=0.0))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    data = tmp_path / "d.jsonl"
    line = '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "吾乃李白"}]}\n'
    data.write_text(line * 4, encoding="utf-8")
    from transformers import TrainerCallback

    seen = []

    class Recorder(TrainerCallback):  # build_trainer hands a callback with bind_trainer the Trainer
        def bind_trainer(self, trainer):
            seen.extend(trainer.callback_handler.callbacks)

    before = torch.get_num_threads()
    try:
        train_from_config({"model": str(tiny_qwen2), "data": {"train": str(data)}, "max_steps": 1, "warmup": 0,
                           "output_dir": str(tmp_path / "run"), "device": "cpu", "dtype": "fp32"},
                          callbacks=[Recorder()])
    finally:
        torch.set_num_threads(before)
    assert any(isinstance(cb, OtherWorkGuard) for cb in seen) == (policy is None)


def test_guard_counts_the_machines_cores_as_the_thread_choice_does():
    """On a 64-CPU host where other work keeps 40 busy, 24 are free: a 2-thread run keeps both (as at its start)."""
    import torch

    from tunesmith.train.thread_guard import OtherWorkGuard

    guard = OtherWorkGuard(threads=2, measure=lambda: 40.0, cores=64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        guard.on_train_begin(None, None, None)
        guard.on_step_end(None, SimpleNamespace(global_step=1), None)
        assert guard.current == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_other_work_is_the_machines_busy_time_less_this_process(monkeypatch):
    """2 cores 75 % busy (niced time left out) while this process used one core: other work kept half a core."""
    from tunesmith.threads import other_work_cores

    monkeypatch.setattr(psutil, "cpu_times_percent", lambda interval=None: _sample(user=60.0, system=15.0, nice=20.0))
    own = SimpleNamespace(cpu_percent=lambda interval=None: 100.0)
    assert other_work_cores(own, 2) == pytest.approx(0.5)
    own = SimpleNamespace(cpu_percent=lambda interval=None: 200.0)  # its spinning threads are its own, never less
    assert other_work_cores(own, 2) == 0.0
