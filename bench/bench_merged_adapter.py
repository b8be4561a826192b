"""Benchmark: decoding with a LoRA adapter merged into the weights vs applied on the fly, and the bare base.

    .venv/bin/python bench/bench_merged_adapter.py                       # default model, 16 prompts, 3 repeats
    .venv/bin/python bench/bench_merged_adapter.py --repeats 5 --append  # also append a section to BENCHMARKS.md

The adapter has the shape the shipped recipes train (rank 16 on every linear layer) with random weights
(init_lora_weights=False, a fixed seed), so the answers differ from the base's.  One engine holds it;
each repeat runs three modes back to back in a rotating order, as one batched `Engine.generate` call
over all prompts (what `tunesmith eval` does): the adapter unmerged, the adapter merged
(`Engine.merge`, what eval now does for fp32 adapters) and the base (adapters disabled).  Prompts are
李白's RoleBench general-test questions with the persona, greedy, a fixed `max_new_tokens`.  Tokens
are counted by re-tokenizing the answers; the script also counts answers identical between merged and
unmerged (same weights up to rounding: they should all be).  Never run by the tests.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _env import append_section, generation_arguments, generation_header, libai_prompts

MODES = ("unmerged", "merged", "base")



def random_adapter(model: str, folder: Path, rank: int) -> Path:
    """A rank-`rank` LoRA on every linear layer with random A and B (so it changes the answers)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunesmith.model import load_model

    torch.manual_seed(0)
    base, _ = load_model(model, dtype="fp32", device="cpu")
    peft_model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                                 init_lora_weights=False))
    with torch.no_grad():  # small B: answers change without turning into noise
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.2)
    peft_model.save_pretrained(folder)
    return folder


def run(engine, convs, mode: str, batch_size: int, options):
    if mode == "merged":
        engine.merge("a")
    else:
        engine.unmerge()
    t0 = time.perf_counter()
    out = engine.generate(convs, adapter="base" if mode == "base" else "a", options=options, batch_size=batch_size)
    return time.perf_counter() - t0, out


def main() -> int:
    ap = generation_arguments(__doc__.split("\n")[0], prompts=16)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()

    import torch

    from tunesmith.infer.engine import Engine
    from tunesmith.infer.options import GenerationOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = random_adapter(args.model, Path(tmp) / "adapter", args.rank)
        engine = Engine.load(args.model, adapters={"a": str(adapter)}, dtype="fp32", device="cpu",
                             max_batch_size=args.batch_size)
    convs = libai_prompts(args.prompts)
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens)
    tok = engine.tokenizer
    for mode in MODES:  # warm-up
        run(engine, convs[:2], mode, args.batch_size, GenerationOptions(max_new_tokens=4))

    times: dict[str, list[float]] = {m: [] for m in MODES}
    tokens: dict[str, list[int]] = {m: [] for m in MODES}
    outputs: dict[str, list[str]] = {}
    for r in range(args.repeats):
        for mode in MODES[r % 3:] + MODES[:r % 3]:  # rotate who goes first
            dt, out = run(engine, convs, mode, args.batch_size, opts)
            times[mode].append(dt)
            tokens[mode].append(sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in out if t))
            outputs[mode] = out
            print(f"repeat {r + 1}: {mode:9s} {dt:7.2f} s, {tokens[mode][-1]} tokens, "
                  f"{tokens[mode][-1] / dt:7.1f} tokens/s", file=sys.stderr, flush=True)
    engine.close()

    same = sum(a == b for a, b in zip(outputs["merged"], outputs["unmerged"]))
    differs_from_base = sum(a != b for a, b in zip(outputs["merged"], outputs["base"]))
    rate = {m: [t / s for t, s in zip(tokens[m], times[m])] for m in MODES}
    med = {m: statistics.median(rate[m]) for m in MODES}
    # merged / unmerged within each repeat: both ran back to back, which cancels part of the load drift
    paired = [a / b for a, b in zip(rate["merged"], rate["unmerged"])]
    table = ["| mode | wall median s | generated tokens/s median | tokens/s min–max | vs unmerged |",
             "|---|---|---|---|---|"]
    for m in MODES:
        table.append(f"| {m} | {statistics.median(times[m]):.2f} | {med[m]:.1f} | "
                     f"{min(rate[m]):.1f}–{max(rate[m]):.1f} "
                     f"| {med[m] / med['unmerged']:.2f}x |")
    verdict = (f"merged / unmerged = {med['merged'] / med['unmerged']:.2f}x generated tokens/s (ratio of medians; "
               f"per-repeat paired ratios median {statistics.median(paired):.2f}x, "
               f"{min(paired):.2f}–{max(paired):.2f}x); "
               f"merged / base = {med['merged'] / med['base']:.2f}x; {same}/{len(convs)} answers identical merged vs "
               f"unmerged; {differs_from_base}/{len(convs)} differ from the base's (the adapter is not a no-op).")
    print("\n".join(table))
    print(verdict)
    if args.append:
        cmd = ".venv/bin/python bench/bench_merged_adapter.py " + " ".join(sys.argv[1:])
        section = "\n".join([
            *generation_header("Eval: adapter merged into the weights vs unmerged vs base "
                               f"({args.model} model, cpu, fp32)",
                               load_avg, cmd),
            f"- job: {len(convs)} 李白 RoleBench general-test questions with the persona, greedy, max_new_tokens "
            f"{args.max_new_tokens}, one batched `Engine.generate` call (batch {args.batch_size}) per mode; random "
            f"rank-{args.rank} LoRA on every linear layer; {args.repeats} repeats, order rotated", "",
            *table, "", verdict, ""])
        print(f"appended to {append_section(section)}", file=sys.stderr)
    print(json.dumps({"merged_vs_unmerged": med["merged"] / med["unmerged"], "paired": paired, "identical": same}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
