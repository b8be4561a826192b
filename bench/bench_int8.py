"""Benchmark: one stream decoded with int8 weights vs fp32, and how far their answers agree.

    .venv/bin/python bench/bench_int8.py                      # default model, 16 prompts, 3 repeats
    .venv/bin/python bench/bench_int8.py --repeats 3 --append # also append a section to BENCHMARKS.md

Two engines on the default model: fp32 (what `--dtype auto` gives on a CPU) and the same with
`quantization="int8"` (on a CPU: torch's dynamic int8 linear layers, int8 weights, activations quantized
per call).
Each answers 李白's RoleBench general-test questions with the persona, greedy, one request at a time
through `Engine.complete` (a single stream: what one chat user gets).  Each repeat runs both, in an
alternating order; tokens/s = completion tokens / wall time of the whole pass.

Agreement: the int8 answers against the fp32 answers of the same prompts, exact match and ROUGE-L (chars).

The floor: a decoded token reads every weight matrix once (the embedding table only for one row), so a
stream cannot go faster than memory bandwidth / bytes of weights.  Bandwidth is measured here as the best
of a few sums over a 1 GiB tensor (a read-only stream, what decoding does).  "of floor" is the measured
tokens/s over that bound.  Never run by the tests.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from _env import append_section, generation_arguments, generation_header, libai_prompts

MODES = ("fp32", "int8")


def read_bandwidth_gbs(gib: float = 1.0, repeats: int = 5) -> float:
    """Best read bandwidth of a sum over a large fp32 tensor, in GB/s."""
    import torch

    x = torch.ones(int(gib * 2**30 / 4), dtype=torch.float32)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def weight_bytes_per_token(model) -> int:
    """Bytes a decoded token reads: every linear layer's weights (int8 data + scales when quantized), the norms;
    the embedding table only for one row (it is not counted), unless it is also the output layer."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    total = 0
    for module in model.modules():
        if isinstance(module, DynamicInt8Linear):  # torch's dynamic int8: int8 data, one scale per tensor
            total += module.weight().numel() + module.bias().numel() * 4 if module.bias() is not None \
                else module.weight().numel()
        elif isinstance(module, torch.nn.Linear):
            w = module.weight
            if hasattr(w, "qdata"):  # torchao Int8Tensor: int8 data and one scale per output channel
                total += w.qdata.numel() * w.qdata.element_size() + w.scale.numel() * w.scale.element_size()
            else:
                total += w.numel() * w.element_size()
            if module.bias is not None:
                total += module.bias.numel() * module.bias.element_size()
        elif "Norm" in type(module).__name__ and getattr(module, "weight", None) is not None:
            total += module.weight.numel() * module.weight.element_size()
    return total


def one_pass(engine, prompts, opts) -> tuple[list[str], int, float]:
    texts, tokens = [], 0
    start = time.perf_counter()
    for system, messages in prompts:
        comp = engine.complete(messages, system, options=opts)[0]
        texts.append(comp.text)
        tokens += comp.completion_tokens
    return texts, tokens, time.perf_counter() - start


def main() -> None:
    ap = generation_arguments(__doc__.splitlines()[0], prompts=16)
    args = ap.parse_args()
    import torch

    from tunesmith.eval.rouge import rouge_l_zh
    from tunesmith.infer.engine import Engine, GenerationOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()
    prompts = libai_prompts(args.prompts)
    opts = GenerationOptions(max_new_tokens=args.max_new_tokens)
    engines = {"fp32": Engine.load(args.model, device="cpu", dtype="fp32"),
               "int8": Engine.load(args.model, device="cpu", dtype="fp32", quantization="int8")}
    bandwidth = read_bandwidth_gbs()
    weights = {m: weight_bytes_per_token(e.model) for m, e in engines.items()}
    for e in engines.values():  # warm-up: the first generate of an engine is slow
        e.complete(prompts[0][1], prompts[0][0], options=GenerationOptions(max_new_tokens=4))
    tps: dict[str, list[float]] = {m: [] for m in MODES}
    texts: dict[str, list[str]] = {}
    for rep in range(args.repeats):
        for mode in (MODES if rep % 2 == 0 else MODES[::-1]):
            out, tokens, wall = one_pass(engines[mode], prompts, opts)
            texts.setdefault(mode, out)
            tps[mode].append(tokens / wall)
            print(f"repeat {rep + 1} {mode}: {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} tok/s", flush=True)
    for e in engines.values():
        e.close()

    same = sum(a == b for a, b in zip(texts["fp32"], texts["int8"]))
    rouge = statistics.mean(rouge_l_zh(b, a) for a, b in zip(texts["fp32"], texts["int8"]))
    ratios = [b / a for a, b in zip(tps["fp32"], tps["int8"])]
    rows = []
    for mode in MODES:
        med = statistics.median(tps[mode])
        floor = bandwidth * 1e9 / weights[mode]
        rows.append(f"| {mode} | {weights[mode] / 1e6:.0f} | {med:.1f} | {min(tps[mode]):.1f}–{max(tps[mode]):.1f} "
                    f"| {statistics.median(tps[mode]) / statistics.median(tps['fp32']):.2f}x | {floor:.1f} "
                    f"| {med / floor:.0%} |")
    lines = generation_header("Decoding: int8 weights (torch dynamic int8) vs fp32, one stream (default model, cpu)",
                              load_avg, ".venv/bin/python bench/bench_int8.py " + " ".join(sys.argv[1:]))
    lines += [f"- job: {len(prompts)} 李白 general-test questions with the persona, greedy, max_new_tokens "
              f"{args.max_new_tokens}, one request at a time through Engine.complete; {args.repeats} repeats, "
              "order alternated",
              f"- memory read bandwidth (best sum over 1 GiB): {bandwidth:.1f} GB/s; floor = bandwidth / weight bytes "
              "read per token", "",
              "| weights | MB read per token | tokens/s median | min–max | vs fp32 | floor tokens/s | of floor |",
              "|---|---|---|---|---|---|---|", *rows, "",
              "int8 vs fp32 per repeat: " + " / ".join(f"{r:.2f}x" for r in ratios)
              + f" (median {statistics.median(ratios):.2f}x).",
              f"Answer agreement with fp32: {same}/{len(prompts)} identical, mean ROUGE-L (chars) {rouge:.3f}."]
    section = "\n".join(lines)
    print(section)
    if args.append:
        print(f"appended to {append_section(section)}")


if __name__ == "__main__":
    main()
