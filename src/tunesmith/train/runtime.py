"""Where a training run computes: its processes, device, dtype, CPU threads, and what it leaves of them.

    from tunesmith.train.runtime import setup_runtime
    rt = setup_runtime(cfg)           # device "cpu", dtype "fp32", threads 2, world 1, rank 0
    rt.log("printed once, by the main process")

`dtype: auto` measures on CPU whether bf16 matmuls are really faster than fp32 (many CPUs emulate them);
`threads` default to the free cores (tunesmith.threads: niced work counts as free). Under torchrun every
process calls this; only rank 0 prints.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from tunesmith.errors import ConfigError


def dist_env() -> tuple[int, int, int]:
    """(world size, rank, local rank) as torchrun / accelerate launch set them; (1, 0, 0) alone."""
    return (int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")))


def log(msg: str, stream=None) -> None:
    """Print a progress line from the main process only (every rank runs the same recipe)."""
    if dist_env()[1] == 0:
        print(msg, file=stream or sys.stdout, flush=True)


@dataclass
class Runtime:
    """The resolved place a run computes in."""

    world: int  # processes
    rank: int  # this process
    device: str  # cpu | cuda | mps
    dtype: str  # fp32 | bf16 | fp16
    threads: int | None  # torch CPU threads set for this run (None: left as torch has them)
    thread_reason: str  # why that many (tunesmith.threads), printed as the first line of the run
    started: float  # perf_counter at setup: total_seconds in summary.json counts from here


def setup_runtime(cfg) -> Runtime:
    """Quiet transformers, then resolve device, threads (set on torch) and dtype for `cfg` (a TrainConfig)."""
    import warnings

    import transformers

    from tunesmith.model import resolve_device
    from tunesmith.threads import choose_threads

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*", category=FutureWarning)
    started = time.perf_counter()
    world, rank, _ = dist_env()
    device = resolve_device(cfg.device)
    threads = choose_threads(cfg.threads, device)
    threads.apply()
    dtype = resolve_train_dtype(cfg.dtype, device)
    return Runtime(world=world, rank=rank, device=device, dtype=dtype, threads=threads.threads,
                   thread_reason=threads.reason, started=started)


def cpu_bf16_speedup(n: int = 1024, repeats: int = 3) -> float:
    """How much faster a bf16 matmul is than an fp32 one on this CPU (best of `repeats`, ~0.1 s)."""
    import torch

    best = {}
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best[dt] = min(times)
    return best[torch.float32] / best[torch.bfloat16]


def resolve_train_dtype(dtype: str, device: str) -> str:
    """'auto' -> bf16 on GPUs that have it (else fp16); on CPU bf16 only where it measures faster than fp32."""
    if dtype != "auto":
        if dtype == "fp16" and device == "cpu":
            raise ConfigError("dtype=fp16 needs a GPU (fp16 training on CPU is not supported); use bf16 or fp32")
        return dtype
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu":
        # Many CPUs emulate bf16 matmuls (slower than fp32); use it only where it really is faster.
        return "bf16" if cpu_bf16_speedup() >= 1.3 else "fp32"
    return "fp32"


def peak_memory_mb(device: str) -> float | None:
    """Peak GPU memory on CUDA, else this process's peak resident memory."""
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, OSError):
        return None


def release_process_group() -> None:
    """Close the process group the Trainer opened under torchrun, every rank together: a rank that exits with
    gloo's threads still running can abort ("terminate called without an active exception"), seen on a
    loaded machine."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
