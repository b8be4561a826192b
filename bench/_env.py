"""What every benchmark records beside its table: the CPU, and an atomic append to BENCHMARKS.md.

The bench scripts run as `python bench/NAME.py`, so this folder is on sys.path and they import it as `_env`.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def cpu_name() -> str:
    """The CPU model and the number of cores this process may see,
    e.g. 'Intel(R) Xeon(R) Processor (2 cores visible)'."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({cores} cores visible)"


def append_section(section: str, path: Path = BENCHMARKS) -> Path:
    """Append a section to BENCHMARKS.md through a temp file + rename: an interrupted bench never leaves half a file."""
    current = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(current.rstrip("\n") + "\n\n" + section.strip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


DATASETS = Path(__file__).resolve().parents[1] / "datasets"  # the data the repository carries


def libai_prompts(n: int) -> list:
    """The first n questions of 李白's RoleBench general test with the persona system prompt: (system, messages)."""
    from tunesmith.data import load

    convs = load(DATASETS / "rolebench-zh" / "general" / "test.jsonl", "rolebench", roles=["李白"], answers="first")
    return [(c.system, c.prompt_messages) for c in convs[:n]]


def generation_header(title: str, load_avg: tuple[float, float, float], command: str) -> list[str]:
    """The heading and the date / CPU / versions / command lines of a generation bench's BENCHMARKS.md section."""
    import time

    import torch
    import transformers

    return ["", f"## {title}", "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- CPU: {cpu_name()}, shared machine; load average before the run "
            f"{load_avg[0]:.2f} / {load_avg[1]:.2f} / {load_avg[2]:.2f}",
            f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, torch threads {torch.get_num_threads()}",
            f"- command: `{command.strip()}`"]


def generation_arguments(description: str, prompts: int):
    """The options every generation bench takes; a bench adds its own to the returned parser."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="default")
    ap.add_argument("--prompts", type=int, default=prompts)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--append", action="store_true", help="append a section to BENCHMARKS.md")
    return ap


def prepare_training_bench(threads: int) -> None:
    """Torch on `threads` threads, transformers quiet (errors only, no progress bars), and the default model
    converted before any timing starts."""
    import torch
    import transformers.utils.logging as tlog

    from tunesmith.model import default_model_dir

    torch.set_num_threads(threads)
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    default_model_dir()
