"""Benchmark: eval-shaped generation with continuous batching vs left-padded batches.

    .venv/bin/python bench/bench_continuous_batching.py                          # base model, 李白 questions
    .venv/bin/python bench/bench_continuous_batching.py --task iecls --adapter runs/proof/ie_cls_sample/adapter \
        --prompts 48 --max-new-tokens 320 --append                                # a trained IE+CLS adapter

A padded batch runs until its longest answer ends: when one of 16 answers loops to the length limit,
the 15 finished rows keep being computed.  Continuous batching (transformers' `generate_batch`, what
`tunesmith eval` now uses for greedy decoding) starts the next prompt in a finished row's slot.  The
gain therefore depends on how unequal the answer lengths are, which is why this bench runs real eval
prompts through a real model: 李白's RoleBench questions with the persona (`--task libai`), or the
IE + classification dev file (`--task iecls`, with the adapter trained on it: answers from 5 to 500+
tokens).  An fp32 adapter is merged into the weights, as eval does.  Each repeat runs both modes back
to back in alternating order, as one `Engine.generate` call over all prompts with `--batch-size` slots;
tokens are counted by re-tokenizing the answers, and the answers of the two modes are compared
(greedy both: they should be identical).  Never run by the tests.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from _env import DATASETS, append_section, generation_arguments, generation_header, libai_prompts

MODES = ("padded", "continuous")


def iecls_prompts(n: int) -> list:
    """The first n contexts of the mixed IE + classification dev file, as (system, messages)."""
    from tunesmith.data import load

    convs = load(DATASETS / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl", "context-target")
    return [(c.system, c.prompt_messages) for c in convs[:n]]


def main() -> int:
    ap = generation_arguments(__doc__.split("\n")[0], prompts=48)
    ap.add_argument("--task", choices=("libai", "iecls"), default="libai")
    ap.add_argument("--adapter", default=None, help="a trained LoRA adapter folder (default: the base model alone)")
    ap.set_defaults(max_new_tokens=160)
    args = ap.parse_args()

    import torch

    from tunesmith.infer.engine import Engine
    from tunesmith.infer.options import GenerationOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()
    engine = Engine.load(args.model, adapters={"a": args.adapter} if args.adapter else None, dtype="fp32",
                         device="cpu", max_batch_size=args.batch_size)
    adapter = "a" if args.adapter else "base"
    merged = bool(args.adapter) and engine.merge("a")
    convs = (libai_prompts if args.task == "libai" else iecls_prompts)(args.prompts)
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens)
    tok = engine.tokenizer
    for mode in MODES:  # warm-up
        engine.generate(convs[:2], adapter=adapter, options=GenerationOptions(max_new_tokens=4), batching=mode)

    times: dict[str, list[float]] = {m: [] for m in MODES}
    tokens: dict[str, list[int]] = {m: [] for m in MODES}
    outputs: dict[str, list[str]] = {}
    for r in range(args.repeats):
        for mode in MODES[r % 2:] + MODES[:r % 2]:  # alternate who goes first
            t0 = time.perf_counter()
            out = engine.generate(convs, adapter=adapter, options=opts, batch_size=args.batch_size, batching=mode)
            dt = time.perf_counter() - t0
            times[mode].append(dt)
            tokens[mode].append(sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in out if t))
            outputs[mode] = out
            print(f"repeat {r + 1}: {mode:10s} {dt:7.2f} s, {tokens[mode][-1]} tokens, "
                  f"{tokens[mode][-1] / dt:7.1f} tokens/s", file=sys.stderr, flush=True)
    engine.close()

    lengths = sorted(len(tok(t, add_special_tokens=False)["input_ids"]) for t in outputs["padded"])
    same = sum(a == b for a, b in zip(outputs["padded"], outputs["continuous"]))
    # continuous / padded within each repeat (back to back, which cancels part of the load drift)
    paired = [p / c for p, c in zip(times["padded"], times["continuous"])]
    table = ["| batching | wall median s | wall min–max s | generated tokens/s median | speed-up vs padded |",
             "|---|---|---|---|---|"]
    for m in MODES:
        med_t = statistics.median(times[m])
        table.append(f"| {m} | {med_t:.1f} | {min(times[m]):.1f}–{max(times[m]):.1f} | "
                     f"{statistics.median(tokens[m]) / med_t:.1f} | "
                     f"{statistics.median(times['padded']) / med_t:.2f}x |")
    verdict = (f"continuous batching answers the {len(convs)} prompts {statistics.median(paired):.2f}x faster "
               f"(per-repeat paired wall-time ratios {min(paired):.2f}–{max(paired):.2f}x, median of {len(paired)}); "
               f"{same}/{len(convs)} answers identical in both modes; answer lengths (tokens) min "
               f"{lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}.")
    print("\n".join(table))
    print(verdict)
    if args.append:
        cmd = ".venv/bin/python bench/bench_continuous_batching.py " + " ".join(sys.argv[1:])
        what = ("李白 RoleBench general-test questions with the persona" if args.task == "libai"
                else "contexts of chatglm-mixed-ie-cls/mixed_dev_dataset.jsonl")
        section = "\n".join([
            *generation_header(f"Eval: continuous batching vs padded batches ({args.model} model"
                               + (", adapter merged" if merged else "") + ", cpu, fp32)", load_avg, cmd),
            f"- job: the first {len(convs)} {what}, greedy, max_new_tokens {args.max_new_tokens}, one "
            f"`Engine.generate` call per mode with {args.batch_size} rows in flight; "
            + (f"adapter `{args.adapter}`" if args.adapter else "no adapter")
            + f"; {args.repeats} repeats, order alternated",
            "", *table, "", verdict, ""])
        print(f"appended to {append_section(section)}", file=sys.stderr)
    print(json.dumps({"speedup_paired": paired, "identical": same, "prompts": len(convs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
