"""What makes tunesmith's LoRA training step faster on a CPU: the same packed batches through variants of one step.

    python bench/bench_train_step_cpu.py                       # every variant, 6 steps each
    python bench/bench_train_step_cpu.py --variants fp32,share --steps 8 --repeats 3 --append

The step is tunesmith's own: the default model (SmolLM2-135M-Instruct) with LoRA r8 / alpha 16 on all linear
layers (peft), its packed attention (one row per batch, causal attention per conversation), its PackedCollator and
answer_loss_sum (the output head on answer positions only), AdamW on the LoRA weights, lr 2e-4. Batches: 8 of the
first RoleBench-zh general-train 李白 answers each, in file order, the same batches for every variant.

Variants (each in a process of its own, so one's threads, compiled code or allocator state does not touch the next):
- fp32: what `dtype: fp32` trains (fp32 weights, no autocast)
- bf16-autocast: fp32 weights and LoRA, matmuls under torch.autocast("cpu", bfloat16) (AMX where the CPU has it)
- bf16-weights: the base weights in bf16 plus autocast, LoRA in fp32 (what `dtype: bf16` loads)
Modifiers, joined with "-" (e.g. compile-bf16-weights, rows-1024-bf16-weights, share-bf16-weights):
- share: shared prompt prefixes (tunesmith's default, data.share_prefixes): the persona the 8 conversations begin
  with is computed once per row (a lone "share" is fp32 with it)
- compile: the decoder layers compiled as `compile: true` does (tunesmith.train.compiling: in place, dynamic
  shapes, the packed attention eager between them); its compile time shows in the first step
- 1thread: one torch thread instead of one per core
- cast: peft's LoRA layers copy autocast's bf16 activations to their fp32 weights' dtype (autocast copies them
  back for the matmul), as before tunesmith switched that off for the training loss
- flashbwd: the packed attention's backward in sdpa's own fused kernel (tunesmith.train.attention's
  RECOMPUTE_BACKWARD_ON_CPU off), against the recomputed-softmax backward tunesmith runs on CPUs
- keep1: the model's own forward keeps one logit position (`logits_to_keep=1`, as before tunesmith asked for
  none): on a CPU that one position's product copies the whole output head weight every step
- passive: the worker's OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE, what `tunesmith train` set before
  it chose by the machine's load); without it they wait as OpenMP does by default (spin a moment, then sleep)
- rows-N: packing to a fixed context instead of 8 conversations a row: conversations are laid end to end
  until a row would pass N tokens, one row per step

Reported: real tokens/s (the conversations' own tokens) from the end of step 1 to the end of the last step (the
same interval as the other training benches), the tokens a step really computes (fewer with share), peak RSS,
the first step's loss (a check that a variant computes the same thing), and the fraction of this CPU's matmul
peak the step reaches: 4 x parameters x computed tokens/s (forward + the backward to the activations; the frozen
weights get no gradient) over a square fp32 (bf16 for bf16 variants) torch.mm's FLOP/s on the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "datasets" / "rolebench-zh" / "general" / "train.jsonl"
VARIANTS = ["fp32", "share", "bf16-weights", "share-bf16-weights", "bf16-autocast", "fp32-1thread", "rows-2048",
            "compile", "compile-share"]


def batches(tok, steps: int, batch: int, row_tokens: int | None):
    """Encoded samples in file order, grouped as the step's conversations (8 each, or up to row_tokens)."""
    from tunesmith.data import load
    from tunesmith.template import resolve_template
    from tunesmith.train.dataset import encode_all

    convs = load(DATA, "rolebench", roles=["李白"])[: steps * 64]
    samples, _ = encode_all(convs, tok, resolve_template("auto", tok), max_source_len=256, max_target_len=256)
    out, i = [], 0
    while len(out) < steps:
        if row_tokens is None:
            out.append(samples[i:i + batch])
            i += batch
            continue
        group, n = [], 0
        while i < len(samples) and n + len(samples[i]["input_ids"]) <= row_tokens:
            group.append(samples[i])
            n += len(samples[i]["input_ids"])
            i += 1
        out.append(group)
    return out


def worker(variant: str, steps: int, threads: int) -> dict:
    import contextlib

    import torch

    parts = variant.split("-")
    torch.set_num_threads(1 if "1thread" in parts else threads)
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.model import load_tokenizer, resolve_model_path
    from tunesmith.train import attention
    from tunesmith.train.attention import register_packed_attention, use_packed_attention
    from tunesmith.train.dataset import PackedCollator
    from tunesmith.train.trainer import answer_loss_sum, output_head

    transformers.logging.set_verbosity_error()
    path = resolve_model_path("default")
    tok = load_tokenizer(path)
    bf16_weights = "weights" in parts
    autocast = "bf16" in parts
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16_weights else torch.float32)
    register_packed_attention()
    use_packed_attention(model)
    attention.RECOMPUTE_BACKWARD_ON_CPU = "flashbwd" not in parts
    torch.manual_seed(42)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if autocast and "cast" not in parts:  # as TunesmithTrainer's loss: bf16 activations go to LoRA as they are
        for m in model.modules():
            if hasattr(m, "cast_input_dtype_enabled"):
                m.cast_input_dtype_enabled = False
    if "keep1" in parts:
        from tunesmith.train import trainer

        trainer.hidden_states_only = lambda m, **kw: m(**kw, use_cache=False, output_hidden_states=True,
                                                       logits_to_keep=1)
    head = output_head(model)
    model.train()
    if "compile" in parts:
        from tunesmith.train.compiling import compile_layers

        compile_layers(model)
    forward_model = model
    row_tokens = int(parts[parts.index("rows") + 1]) if "rows" in parts else None
    groups = batches(tok, steps, 8, row_tokens)
    collate = PackedCollator(share_prefixes="share" in parts)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    marks, losses, tokens, computed = [], [], 0, []
    started = time.perf_counter()
    for group in groups:
        inputs = collate(group)
        tokens += inputs["num_tokens"]
        computed.append(inputs["input_ids"].shape[1])
        with ctx():
            loss_sum, n = answer_loss_sum(forward_model, inputs, head, ctx if autocast else None)
        loss = loss_sum / n
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        marks.append((time.perf_counter(), tokens))
    (t0, k0), (t1, k1) = marks[0], marks[-1]
    return {"variant": variant, "tok_s": (k1 - k0) / (t1 - t0), "step_s": (t1 - t0) / (len(marks) - 1),
            "first_step_s": marks[0][0] - started, "tokens_per_step": (k1 - k0) / (len(marks) - 1),
            "computed_per_step": sum(computed[1:]) / (len(computed) - 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "loss0": losses[0], "losses": losses, "threads": torch.get_num_threads(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def matmul_peak(threads: int, dtype: str, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a square n x n torch.mm in `dtype` on `threads` threads (best of `reps`, after a warm-up)."""
    import torch

    torch.set_num_threads(threads)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the variants (interleaved)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds a variant may take (compiling included)")
    ap.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.steps, args.threads)))
        return 0
    results: dict[str, list[dict]] = {}
    peaks = {d: matmul_peak(args.threads, d) for d in ("fp32", "bf16")}
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s", flush=True)
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for v in args.variants.split(","):
            load = os.getloadavg()[0]
            try:
                env = {k: x for k, x in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                if "passive" in v.split("-"):
                    env["OMP_WAIT_POLICY"] = "PASSIVE"
                proc = subprocess.run([sys.executable, __file__, "--worker", v, "--steps", str(args.steps),
                                       "--threads", str(args.threads)], capture_output=True, text=True,
                                      timeout=args.timeout, env=env)
            except subprocess.TimeoutExpired:
                print(f"{v}: over {args.timeout} s, stopped", flush=True)
                continue
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{v}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            r = json.loads(line[7:])
            r["load"] = load
            results.setdefault(v, []).append(r)
            print(f"{v:24s} {r['tok_s']:7.1f} tok/s  {r['step_s']:6.2f} s/step  {r['tokens_per_step']:6.0f} tok/step  "
                  f"first step {r['first_step_s']:6.1f} s  loss0 {r['loss0']:.4f}  peak RSS {r['peak_rss_mb']:.0f} MB  "
                  f"load {load:.2f}", flush=True)
    print("\n" + (text := report(args, results, peaks, load_before, os.getloadavg())))
    if args.append:
        sys.path.insert(0, str(Path(__file__).parent))
        from _env import append_section

        print(f"appended to {append_section(text)}")
    return 0


def report(args, results: dict, peaks: dict, load_before, load_after) -> str:
    import peft
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).parent))
    from _env import cpu_name

    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    def ratios(rs, base):
        each = [r["tok_s"] / b["tok_s"] for r, b in zip(rs, base)]
        return f"{statistics.median(each):.2f}x ({', '.join(f'{x:.2f}' for x in each)})"

    first = next(iter(results))  # the ratio column compares each variant with the first one named, repeat by repeat
    lines = [
        f"## Training step variants on this CPU (default model, LoRA r8, 8 李白 conversations a step) "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
        f"- CPU: {cpu_name()}, {args.threads} threads; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}; torch {torch.__version__}, transformers {transformers.__version__}, peft "
        f"{peft.__version__}",
        f"- matmul peak (square 2048 torch.mm, best of 10): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 "
        f"{peaks['bf16'] / 1e9:.0f} GFLOP/s; a step's rate: 4 x {next(iter(results.values()))[0]['parameters']:,} "
        "parameters x computed tokens/s",
        f"- {args.steps} steps a run, tokens/s over steps 2..{args.steps}, {args.repeats} interleaved repeats, each "
        "run its own process",
        f"- command: `python bench/bench_train_step_cpu.py {' '.join(sys.argv[1:])}`", "",
        f"| variant | real tokens/s median (min–max) | vs {first}: median (per repeat) | computed tokens/step | "
        "real tokens/step | of matmul peak | first step s | loss step 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, rs in results.items():
        m = med(rs, "tok_s")
        rate = 4 * rs[0]["parameters"] * m * med(rs, "computed_per_step") / med(rs, "tokens_per_step")
        peak = peaks["bf16" if "bf16" in v.split("-") else "fp32"]
        lines.append(f"| {v} | {m:.1f} ({min(r['tok_s'] for r in rs):.1f}–{max(r['tok_s'] for r in rs):.1f}) | "
                     f"{ratios(rs, results[first])} | {med(rs, 'computed_per_step'):.0f} | "
                     f"{med(rs, 'tokens_per_step'):.0f} | "
                     f"{rate / peak:.0%} | {med(rs, 'first_step_s'):.1f} | {rs[0]['loss0']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
