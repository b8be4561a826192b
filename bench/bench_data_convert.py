"""How fast is `tunesmith data convert` on all of rolebench-zh, next to the usual alternatives?

    /work/venv/bin/python bench/bench_data_convert.py                 # 5 repeats, appends to BENCHMARKS.md
    /work/venv/bin/python bench/bench_data_convert.py --repeats 3 --no-append

The job, done the same way by every contender: read the 4 split files (general/role_specific x
train/test), turn each of the 36,329 answers into one conversation {system: persona from desc.json,
messages: [user question, assistant answer], meta: {role, split, question, answer_index, type?}} and
write one JSONL file per split. Contenders:
  tunesmith         tunesmith.data.load(..., "rolebench") + tunesmith.data.save(...)
  datasets          datasets.load_dataset("json") (fresh cache folder per repeat) + batched map + to_json
  pandas            pandas.read_json(lines=True) + explode + to_json(lines=True)
The requirement is tunesmith under 2 s. Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _env import append_section, cpu_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "datasets" / "rolebench-zh"
SPLITS = ("general/train.jsonl", "general/test.jsonl", "role_specific/train.jsonl", "role_specific/test.jsonl")
EXPECTED = 27572 + 6982 + 1535 + 240


def _personas(root: Path) -> dict[str, str]:
    # The same system prompt every contender uses: tunesmith's persona_prompt over desc.json.
    from tunesmith.data.rolebench import load_profiles, persona_prompt

    return {r: persona_prompt(r, d) for r, d in load_profiles(root / "profiles-zh" / "desc.json").items()}


def run_tunesmith(root: Path, out: Path) -> int:
    from tunesmith.data import load, save

    n = 0
    for rel in SPLITS:
        convs = load(root / rel, "rolebench")
        save(convs, out / rel.replace("/", "_"))
        n += len(convs)
    return n


def _explode_batch(batch: dict, personas: dict[str, str], split: str, subset: str) -> dict:
    out = {"system": [], "messages": [], "meta": []}
    types = batch.get("type") or [None] * len(batch["role"])
    for role, question, generated, typ in zip(batch["role"], batch["question"], batch["generated"], types):
        q = question.strip()
        for i, ans in enumerate(generated):
            out["system"].append(personas[role])
            out["messages"].append([{"role": "user", "content": q}, {"role": "assistant", "content": ans.strip()}])
            meta = {"source": "rolebench", "subset": subset, "split": split, "role": role, "question": q,
                    "answer_index": i}
            if typ is not None:
                meta["type"] = json.dumps(typ, ensure_ascii=False)  # str in train, list in test: one arrow type
            out["meta"].append(meta)
    return out


def run_datasets(root: Path, out: Path) -> int:
    import datasets

    datasets.disable_progress_bars()
    personas = _personas(root)
    cache = Path(tempfile.mkdtemp(prefix="hfcache-"))
    n = 0
    try:
        for rel in SPLITS:
            subset, split = rel.split("/")[0], Path(rel).stem
            ds = datasets.load_dataset("json", data_files=str(root / rel), split="train", cache_dir=str(cache))
            ds = ds.map(_explode_batch, batched=True, remove_columns=ds.column_names, keep_in_memory=True,
                        fn_kwargs={"personas": personas, "split": split, "subset": subset})
            ds.to_json(out / rel.replace("/", "_"), force_ascii=False, lines=True)
            n += len(ds)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return n


def run_pandas(root: Path, out: Path) -> int:
    import pandas as pd

    personas = _personas(root)
    n = 0
    for rel in SPLITS:
        subset, split = rel.split("/")[0], Path(rel).stem
        df = pd.read_json(root / rel, lines=True, dtype=False)
        df["answer_index"] = df["generated"].map(lambda g: list(range(len(g))))
        df = df.explode(["generated", "answer_index"], ignore_index=True)
        q = df["question"].str.strip()
        rows = pd.DataFrame({
            "system": df["role"].map(personas),
            "messages": [[{"role": "user", "content": a}, {"role": "assistant", "content": b.strip()}]
                         for a, b in zip(q, df["generated"])],
            "meta": [{"source": "rolebench", "subset": subset, "split": split, "role": r, "question": qq,
                      "answer_index": int(i),
                      **({"type": t} if "type" in df else {})}
                     for r, qq, i, t in zip(df["role"], q, df["answer_index"],
                                            df["type"] if "type" in df else [None] * len(df))],
        })
        rows.to_json(out / rel.replace("/", "_"), orient="records", lines=True, force_ascii=False)
        n += len(rows)
    return n


CONTENDERS = {"tunesmith": run_tunesmith, "datasets": run_datasets, "pandas": run_pandas}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the rolebench-zh folder")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = ap.parse_args()
    if args.repeats < 3:
        ap.error("--repeats must be at least 3")

    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    times: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    cpu: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    counts: dict[str, int] = {}
    for rep in range(args.repeats):
        for name, fn in CONTENDERS.items():  # interleaved, so drift in machine load hits everyone alike
            out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
            try:
                t, c = time.perf_counter(), time.process_time()
                counts[name] = fn(args.data, out)
                times[name].append(time.perf_counter() - t)
                # CPU seconds of this process: less sensitive than wall time to other jobs on a shared machine.
                cpu[name].append(time.process_time() - c)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        print(f"repeat {rep + 1}/{args.repeats}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()),
              file=sys.stderr)
    for name, n in counts.items():
        if n != EXPECTED:
            raise SystemExit(f"{name} produced {n} conversations, expected {EXPECTED}")

    import pandas

    import datasets
    import tunesmith

    ours = statistics.median(times["tunesmith"])
    rows = ["| contender | wall median s | wall min–max s | CPU median s | conversations/s (wall median) "
            "| vs tunesmith (wall) |",
            "|---|---|---|---|---|---|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(f"| {name} | {med:.3f} | {min(ts):.3f}–{max(ts):.3f} | {statistics.median(cpu[name]):.3f} | "
                    f"{EXPECTED / med:,.0f} | {med / ours:.2f}x |")
    table = "\n".join(rows)
    verdict = "meets" if ours < 2.0 else "MISSES"
    section = f"""
## Data: convert all of rolebench-zh (4 split files -> {EXPECTED:,} conversations)

- date: {time.strftime('%Y-%m-%d %H:%M %Z')}
- CPU: {cpu_name()}, shared machine; load average before the run {load_before}
- versions: Python {platform.python_version()}, tunesmith {tunesmith.__version__}, datasets {datasets.__version__}, \
pandas {pandas.__version__}
- command: `/work/venv/bin/python bench/bench_data_convert.py --repeats {args.repeats}`
- job: read general/role_specific train+test JSONL, one conversation per answer with the persona system prompt \
and meta, write JSONL;
  `datasets` builds its Arrow cache in a fresh folder each repeat (a first run), {args.repeats} repeats interleaved

{table}

tunesmith wall median {ours:.3f} s (CPU {statistics.median(cpu['tunesmith']):.3f} s): {verdict} the < 2 s requirement.
Load alone (no writing) is about a third of this; the rest is JSON encoding of ~34 MB of output
(the persona system prompt is repeated in every conversation, and test files carry all references).
"""
    print(section)
    if not args.no_append:
        print(f"appended to {append_section(section)}", file=sys.stderr)


if __name__ == "__main__":
    main()
