"""Serving throughput: aggregate tokens/s and time to first token for 1, 4 and 16 concurrent streaming clients.

    .venv/bin/python bench/bench_serve.py --repeats 3            # appends a section to BENCHMARKS.md
    .venv/bin/python bench/bench_serve.py --repeats 1 --no-write --clients 1 4

Servers are started with `tunesmith serve` (the default model, no web UI), each in its own process:
  - continuous: continuous batching (--batching auto, --max-batch-size 16), as shipped: a request joins the
                running batch at the next step, a finished reply's slot is refilled at once;
  - padded:     --batching padded: requests that arrive together run as one padded `generate` batch;
  - reference:  --max-batch-size 1, i.e. requests answered one at a time in arrival order (what a plain
                "call model.generate per request" server does); --no-reference leaves it out (it is slow).
Every client is a thread with the official `openai` client streaming chat completions; each sends
--requests-per-client requests one after another.  Tokens are the server's usage.completion_tokens.
Contenders and client counts are interleaved within each repeat so that load from other processes on a
shared machine affects them alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from _env import append_section, cpu_name

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "你好，请介绍一下你自己。", "What is the capital of France?", "Write a short poem about the sea.",
    "4*5等于多少？", "Give me three tips for learning Python.", "请用一句话描述秋天。",
    "Explain what a LoRA adapter is.", "List five fruits.", "How do I make tea?", "讲一个简短的笑话。",
    "What is machine learning?", "Describe a cat in two sentences.", "谁是李白？", "Name three planets.",
    "Why is the sky blue?", "Translate 'good morning' into French.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, max_batch_size: int, batching: str, model: str, threads: int | None, dtype: str):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "tunesmith.cli", "serve", "--model", model, "--no-ui", "--dtype", dtype,
                    "--port", str(self.port), "--max-batch-size", str(max_batch_size), "--batching", batching,
                    "--log-level", "warning"]
        if threads:
            self.cmd += ["--threads", str(threads)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        import httpx

        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{self.name} server did not start")
            time.sleep(0.5)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_load(url: str, clients: int, requests_per_client: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    tokens = [0] * clients
    ttft: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []
    barrier = threading.Barrier(clients)

    def one_client(i: int) -> None:
        barrier.wait()
        for r in range(requests_per_client):
            q = QUESTIONS[(i * requests_per_client + r) % len(QUESTIONS)]
            t0 = time.perf_counter()
            first = None
            try:
                stream = client.chat.completions.create(
                    model="base", messages=[{"role": "user", "content": q}], max_tokens=max_tokens, stream=True,
                    stream_options={"include_usage": True})
                for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter() - t0
                    if chunk.usage:
                        tokens[i] += chunk.usage.completion_tokens
            except Exception as e:  # noqa: BLE001 - reported in the table
                errors.append(repr(e))
            if first is not None:
                with lock:
                    ttft.append(first)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {"tokens": sum(tokens), "wall": wall, "tps": sum(tokens) / wall, "ttft": statistics.median(ttft)}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads per server (0: torch's choice). 1 because two busy servers, the clients "
                         "and other jobs share the CPU: more threads than free cores make OpenMP threads wait on "
                         "each other (measured here: 1.8 s per forward with 2 threads vs 0.13 s with 1)")
    ap.add_argument("--dtype", default="auto", help="the servers' --dtype (auto is fp32 on a CPU)")
    ap.add_argument("--no-reference", action="store_true", help="leave out the one-at-a-time server")
    ap.add_argument("--no-padded", action="store_true", help="leave out the padded-batches server")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not append to BENCHMARKS.md")
    args = ap.parse_args()

    import openai
    import torch
    import transformers

    load_before = os.getloadavg()
    contenders = ([("continuous", 16, "auto")] + ([] if args.no_padded else [("padded", 16, "padded")])
                  + ([] if args.no_reference else [("reference (one at a time)", 1, "auto")]))
    results: dict[tuple[str, int], list[dict]] = {}
    servers = [Server(name, mbs, batching, args.model, args.threads or None, args.dtype)
               for name, mbs, batching in contenders]
    for s in servers:
        s.__enter__()
    try:
        for s in servers:  # warm-up: the first generate of a process is slow
            run_load(s.url, 2, 1, 8)
        for rep in range(args.repeats):
            for clients in args.clients:
                for s in servers:
                    res = run_load(s.url, clients, args.requests_per_client, args.max_tokens)
                    results.setdefault((s.name, clients), []).append(res)
                    print(f"repeat {rep + 1} {s.name:>26} clients={clients:>2}: {res['tps']:.1f} tok/s, "
                          f"TTFT {res['ttft'] * 1000:.0f} ms, {res['tokens']} tokens in {res['wall']:.1f} s",
                          flush=True)
    finally:
        for s in servers:
            s.__exit__(None, None, None)

    base_tps = statistics.median(r["tps"] for r in results[(contenders[0][0], args.clients[0])])
    rows = []
    for clients in args.clients:
        for name, *_ in contenders:
            rs = results[(name, clients)]
            tps = [r["tps"] for r in rs]
            tt = [r["ttft"] * 1000 for r in rs]
            rows.append(f"| {name} | {clients} | {statistics.median(tps):.1f} | {min(tps):.1f}–{max(tps):.1f} | "
                        f"{statistics.median(tps) / base_tps:.2f}x | {statistics.median(tt):.0f} | "
                        f"{min(tt):.0f}–{max(tt):.0f} |")
    table = "\n".join([
        f"| server | clients | aggregate tokens/s (median) | min–max | vs {contenders[0][0]}, {args.clients[0]} "
        "client | TTFT ms (median) | TTFT min–max |",
        "|---|---|---|---|---|---|---|", *rows])
    lo, hi = min(args.clients), max(args.clients)
    ratios = []
    for name, *_ in contenders:  # each server's own many-vs-one ratio, per repeat (one run, side by side)
        per = [b["tps"] / a["tps"] for a, b in zip(results[(name, lo)], results[(name, hi)])]
        ratios.append(f"{name}: {hi} clients vs {lo}, per repeat "
                      + " / ".join(f"{r:.1f}x" for r in per) + f" (median {statistics.median(per):.1f}x)")
    ratio_lines = "\n".join(f"- {r}" for r in ratios)
    cmd = ".venv/bin/python bench/bench_serve.py " + " ".join(sys.argv[1:])
    section = f"""
## Serving: aggregate tokens/s and time to first token, 1 / 4 / 16 concurrent streaming clients

- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC
- CPU: {cpu_name()}, shared machine; load average before the run {load_before[0]:.2f} / {load_before[1]:.2f} / \
{load_before[2]:.2f}
- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, \
openai {openai.__version__}
- model: {args.model} (the default is SmolLM2-135M-Instruct), --dtype {args.dtype} (auto is fp32 on a CPU); \
torch threads per server: {args.threads or "torch's choice"}
- command: `{cmd.strip()}`
- job: each client streams {args.requests_per_client} chat completions (max_tokens {args.max_tokens}, greedy) \
one after another with the openai client;
  tokens = usage.completion_tokens; {args.repeats} repeats, contenders interleaved. "continuous" is the server as
  shipped (--batching auto), "padded" the same with --batching padded, "reference" with --max-batch-size 1 (one
  request at a time, no batching).

{table}

{ratio_lines}
"""
    print(section)
    if not args.no_write:
        print(f"appended to {append_section(section)}")


if __name__ == "__main__":
    main()
