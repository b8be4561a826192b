"""What every benchmark records beside its table: the CPU, and an atomic append to BENCHMARKS.md.

The bench scripts run as `python bench/NAME.py`, so this folder is on sys.path and they import it as `_env`.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def cpu_name() -> str:
    """The CPU model and the number of cores this process may see, e.g. 'Intel(R) Xeon(R) Processor (2 cores visible)'."""
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
