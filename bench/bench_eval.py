"""Benchmark: eval generation throughput, batched (as `tunesmith eval` runs it) vs one prompt at a time.

    .venv/bin/python bench/bench_eval.py                       # default model, 32 prompts, batch 16, 3 repeats
    .venv/bin/python bench/bench_eval.py --repeats 5 --append  # also append a section to BENCHMARKS.md

Prompts are the first N questions of 李白's RoleBench general test with the persona system prompt, answered
greedily through `Engine.generate` (the call eval makes) with `max_new_tokens` each.  Batched = one call with
batch_size=B over all prompts; one-at-a-time = one call per prompt.  Both modes run in every repeat
(interleaved, alternating which goes first) on the same loaded engine, after one warm-up call each.
Generated tokens are counted by re-tokenizing the answers (the same count for both modes); the script
also reports how many answers are identical between the two modes (greedy: they should nearly all be).
Never run by the tests.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from _env import append_section, generation_arguments, generation_header, libai_prompts


def count_tokens(tok, texts):
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts if t)


def run(engine, convs, batch_size, options):
    t0 = time.perf_counter()
    if batch_size > 1:
        out = engine.generate(convs, options=options, batch_size=batch_size)
    else:
        out = [engine.generate([c], options=options, batch_size=1)[0] for c in convs]
    return time.perf_counter() - t0, out




def main() -> int:
    ap = generation_arguments(__doc__.split("\n")[0], prompts=32)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch

    from tunesmith.infer.engine import Engine
    from tunesmith.infer.options import GenerationOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()
    engine = Engine.load(args.model, dtype=args.dtype, device=args.device, max_batch_size=args.batch_size)
    convs = libai_prompts(args.prompts)
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens)
    tok = engine.tokenizer
    run(engine, convs[:2], args.batch_size, opts)  # warm-up
    run(engine, convs[:1], 1, opts)

    times: dict[str, list[float]] = {"batched": [], "one-at-a-time": []}
    tokens: dict[str, list[int]] = {"batched": [], "one-at-a-time": []}
    outputs: dict[str, list[str]] = {}
    for r in range(args.repeats):
        order = [("batched", args.batch_size), ("one-at-a-time", 1)]
        for name, bs in order if r % 2 == 0 else order[::-1]:
            dt, out = run(engine, convs, bs, opts)
            times[name].append(dt)
            tokens[name].append(count_tokens(tok, out))
            outputs[name] = out
            print(f"repeat {r + 1}: {name:14s} {dt:7.2f} s, {tokens[name][-1]} tokens, "
                  f"{tokens[name][-1] / dt:7.1f} tokens/s", file=sys.stderr, flush=True)

    same = sum(a == b for a, b in zip(outputs["batched"], outputs["one-at-a-time"]))
    rows = []
    for name in ("batched", "one-at-a-time"):
        rates = [t / s for t, s in zip(tokens[name], times[name])]
        rows.append((name, statistics.median(times[name]), min(times[name]), max(times[name]),
                     statistics.median(rates), min(rates), max(rates)))
    speedup = rows[0][4] / rows[1][4]
    table = ["| mode | wall median s | wall min–max s | generated tokens/s median | tokens/s min–max "
             "| vs one-at-a-time |",
             "|---|---|---|---|---|---|"]
    for name, med, lo, hi, rmed, rlo, rhi in rows:
        table.append(f"| {name}{' (batch ' + str(args.batch_size) + ')' if name == 'batched' else ''} | {med:.2f} | "
                     f"{lo:.2f}–{hi:.2f} | {rmed:.1f} | {rlo:.1f}–{rhi:.1f} | {rmed / rows[1][4]:.2f}x |")
    # Each repeat runs both modes back to back: their ratio cancels part of the load drift of a shared machine.
    paired = [(tb / sb) / (ts / ss) for tb, sb, ts, ss in zip(tokens["batched"], times["batched"],
                                                              tokens["one-at-a-time"], times["one-at-a-time"])]
    verdict = (f"batched / one-at-a-time = {speedup:.2f}x generated tokens/s (ratio of medians; per-repeat paired "
               f"ratios median {statistics.median(paired):.2f}x, {min(paired):.2f}–{max(paired):.2f}x; target >= 5x at "
               f"batch 16: {'met' if speedup >= 5 else 'NOT met'}); {same}/{len(convs)} answers identical between "
               "the modes.")
    print("\n".join(table))
    print(verdict)
    if args.append:
        cmd = ".venv/bin/python bench/bench_eval.py " + " ".join(sys.argv[1:])
        device = str(engine.model.device)
        section = "\n".join([
            *generation_header(f"Eval: batched generation vs one prompt at a time ({args.model} model, {device})",
                               load_avg, cmd),
            f"- job: {len(convs)} 李白 RoleBench general-test questions with the persona system prompt, greedy, "
            f"max_new_tokens {args.max_new_tokens}, through `Engine.generate` as `tunesmith eval` calls it; "
            f"{args.repeats} repeats interleaved; tokens counted by re-tokenizing the answers", "",
            *table, "", verdict, ""])
        print(f"appended to {append_section(section)}", file=sys.stderr)
    print(json.dumps({"speedup": speedup, "paired": paired, "identical": same, "n": len(convs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
