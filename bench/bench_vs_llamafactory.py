"""Training speed side by side with LLaMA-Factory 0.9.5 on three workloads, each tool at its fastest setting.

    python bench/bench_vs_llamafactory.py --steps 3 --repeats 1 --workloads short   # a quick end-to-end check
    python bench/bench_vs_llamafactory.py --steps 20 --repeats 3 --append           # every workload, into BENCHMARKS.md

LLaMA-Factory is installed once into a venv of its own (runs/bench/llamafactory-venv, reused when present) with
the pins it can run with here: transformers <= 5.6, peft <= 0.18.1, accelerate <= 1.11, datasets <= 4.0 and
the CPU build of torch 2.13.0 (the wheel pip finds beside the project's pins, as scripts/setup.sh installs it;
an unpinned torch pulls a CUDA build). torchvision is uninstalled and torchaudio's CUDA-linked libraries are
deleted: neither loads on a CPU torch, and LLaMA-Factory imports them.

The workloads (WORKLOADS), the first 240 records of each in file order, the same for both tools:
- persona: RoleBench-zh general-train answers of 李白 with the persona system prompt (72 tokens of a ~226-token
  record): where tunesmith's shared prompt prefixes save most;
- short: the same answers with a one-sentence system prompt (17 tokens): little to share, the step itself counts;
- iecls: the IE + CLS training records (instruction in the user turn, ~420 tokens a record), cutoff 512.
Both tools train SmolLM2-135M-Instruct (the project's converted default model folder; both load that folder), LoRA
r8 / alpha 16 / dropout 0 on all linear layers, cutoff 256 (512 for iecls; tunesmith: that many prompt and answer
tokens, see CUTOFFS), batch 8, lr 2e-4 with cosine decay and no warmup. LLaMA-Factory reads the data as a sharegpt
dataset (dataset_info.json) with its `smollm2` template; the bench checks that its token ids and labels equal
tunesmith's `auto` template (the tokenizer's own chat template) on every training record it keeps whole.
File order in both: LLaMA-Factory's `disable_shuffling` (neat_packing then regroups records into rows by length),
tunesmith's `data.shuffle: false` (its packing keeps each batch's 8 records, in order, in one row).

Each tool runs at its fastest setting on this machine, picked by a short trial on the first workload
(--trial-steps) unless given: LLaMA-Factory no packing vs neat_packing x gradient checkpointing on/off x fp32 vs
bf16 (bf16: true, autocast), and no packing with torch_compile; tunesmith packing with shared prompt prefixes (its
default) in fp32 / bf16, each with and without `compile: true`, packing without them, no packing. A CPU whose bf16
matmul is emulated skips the bf16 settings; one whose bf16 runs at least FAST_BF16 x fp32 (AMX) skips the fp32 ones.
The trial's fastest settings then run every workload.

Every run is a subprocess of its own (its peak RSS is the training process's), interleaved LF, ours, LF, ours...
Real (non-padding) tokens/s is measured the same way for both, from the end of step 1 to the end of the last
step, by a TrainerCallback's on_step_end clock: LLaMA-Factory's real tokens are counted where its collator
receives the batch (non-zero attention_mask entries of the unpadded records or packed rows), tunesmith's by its
trainer's own non-padding count. Dev loss: after training, each tool's saved adapter (standard PEFT folders) is
loaded with peft on the same base and one shared function computes the mean answer-token loss on the same 24
held-out records (李白: the last 24 李白 questions of the file, none of them among the 240; iecls: the first 24 of
its dev file), rendered with tunesmith's template, so "the same learning" is measured, not assumed. Every run
compiles with an empty inductor cache, as a first run on a user's machine does; the first step, where
torch.compile compiles, is outside the tokens/s interval and has a column of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "datasets" / "rolebench-zh" / "general" / "train.jsonl"
CACHE = REPO / "runs" / "bench"
LF_VENV = CACHE / "llamafactory-venv"
LF_PINS = ["llamafactory==0.9.5", "torch==2.13.0", "transformers<=5.6.0", "peft<=0.18.1", "accelerate<=1.11.0",
           "datasets<=4.0.0"]
ROLE = "李白"
CUTOFF = 256  # LLaMA-Factory's cutoff_len: prompt + answer (IE + CLS records run to ~500 tokens: 512 there)
CUTOFFS = {"persona": CUTOFF, "short": CUTOFF, "iecls": 2 * CUTOFF}
# tunesmith has separate prompt / answer limits and no total one; 128 + 128 would cut the middle out of 153 of the
# 240 prompts (system + question run to 183 tokens here) where LLaMA-Factory cuts none of them, so each limit is the
# cutoff itself: every record LLaMA-Factory leaves whole (198 of 240) is the same tokens in both tools.

# -- installing LLaMA-Factory ---------------------------------------------------------------------------------


def lf_python() -> Path:
    return LF_VENV / "bin" / "python"


def cuda_linked(so: Path) -> bool:
    """Whether a shared library needs a CUDA runtime library (it cannot load beside a CPU-only torch)."""
    out = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
    needed = [line for line in out.splitlines() if "NEEDED" in line]
    return any(name in line for line in needed for name in ("libcuda", "libcudart", "libc10_cuda", "libtorch_cuda"))


def install_llamafactory() -> tuple[float, bool]:
    """LLaMA-Factory 0.9.5 in a venv of its own: (seconds the install took, whether it was reused)."""
    marker = LF_VENV / "install_seconds.txt"
    if marker.is_file():
        return float(marker.read_text(encoding="utf-8")), True
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LF_VENV)], check=True)
    quiet = subprocess.DEVNULL  # pip names every absent local index folder once per package
    subprocess.run([str(lf_python()), "-m", "pip", "install", "-q", *LF_PINS], check=True, stderr=quiet)
    subprocess.run([str(lf_python()), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=True, stderr=quiet)
    site = next((LF_VENV / "lib").glob("python*/site-packages"))
    for so in (site / "torchaudio").rglob("*.so"):
        if cuda_linked(so):
            so.unlink()
    seconds = time.perf_counter() - t
    marker.write_text(f"{seconds:.1f}\n", encoding="utf-8")
    return seconds, False


def lf_versions() -> str:
    code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
            "('llamafactory', 'torch', 'transformers', 'peft', 'accelerate', 'datasets')))")
    return subprocess.run([str(lf_python()), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# -- the workload ---------------------------------------------------------------------------------------------


SHORT_SYSTEM = "你是唐代诗人李白。"  # one sentence, 17 tokens: too short to be worth sharing (MIN_SHARED 16 + template)
IE_CLS = REPO / "datasets" / "chatglm-mixed-ie-cls"
# the system text SmolLM2's chat template adds when there is none, given explicitly: LLaMA-Factory's `smollm2`
# template's own default ends with a period the tokenizer's does not have
IE_CLS_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
WORKLOADS = {
    "persona": "RoleBench-zh general-train 李白 answers with the persona system prompt (72 tokens)",
    "short": f"the same 李白 answers with a one-sentence system prompt ({SHORT_SYSTEM}, 17 tokens)",
    "iecls": "IE + CLS records (chatglm-mixed-ie-cls train, SmolLM2's default system prompt; dev: its dev file)",
}


def workload(name: str, n_train: int, n_dev: int):
    """(train, dev) Conversations of a workload (WORKLOADS), in file order.

    persona / short: the first n_train 李白 answers; dev: the first answer of each of the last n_dev 李白
    questions (none of which is among the training questions); short swaps the system prompt for SHORT_SYSTEM.
    iecls: the first n_train IE + CLS training records; dev: the first n_dev of its dev file."""
    import dataclasses

    from tunesmith.data import load

    if name == "iecls":
        return tuple([dataclasses.replace(c, system=IE_CLS_SYSTEM) for c in load(IE_CLS / f, "context-target")[:n]]
                     for f, n in (("mixed_train_dataset.jsonl", n_train), ("mixed_dev_dataset.jsonl", n_dev)))
    answers = load(DATA, "rolebench", roles=[ROLE])
    train = answers[:n_train]
    firsts = load(DATA, "rolebench", roles=[ROLE], answers="first")
    dev = firsts[-n_dev:]
    seen = {c.prompt_messages[-1].content for c in train}
    assert not seen & {c.prompt_messages[-1].content for c in dev}, "a dev question is among the training ones"
    if name == "short":
        train, dev = ([dataclasses.replace(c, system=SHORT_SYSTEM) for c in cs] for cs in (train, dev))
    return train, dev


def write_data(train, work: Path) -> dict:
    """The training records for both tools: tunesmith's conversation JSONL, LLaMA-Factory's sharegpt JSON."""
    from tunesmith.data import save

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    save(train, data / "train.jsonl")
    records = [{**({"system": c.system} if c.system else {}), "conversations": [
        {"from": "human" if m.role == "user" else "gpt", "value": m.content} for m in c.messages]} for c in train]
    (data / "libai_train.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    columns = {"messages": "conversations", **({"system": "system"} if any(c.system for c in train) else {})}
    info = {"libai_train": {"file_name": "libai_train.json", "formatting": "sharegpt", "columns": columns}}
    (data / "dataset_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return {"ours": str(data / "train.jsonl"), "lf_dir": str(data), "lf_name": "libai_train"}


# -- settings -------------------------------------------------------------------------------------------------

# Gradient checkpointing is tried in fp32 only: there it made a step 1.2-3x slower on 2-core CPUs. Where a bf16
# matmul measures at least FAST_BF16 times the fp32 one (AMX), the fp32 settings are not tried: earlier trials on
# such a CPU ran them at half the bf16 speed in both tools (BENCHMARKS.md, 2026-12-03).
FAST_BF16 = 2.0
LF_SETTINGS = [{"packing": p, "gc": g, "dtype": "fp32"} for p in (False, True) for g in (False, True)] + [
    {"packing": p, "gc": False, "dtype": "bf16"} for p in (False, True)] + [
    {"packing": False, "gc": False, "dtype": d, "compile": True} for d in ("fp32", "bf16")]
OURS_SETTINGS = [{"packing": True, "share": True, "dtype": d, "compile": c} for c in (False, True)
                 for d in ("fp32", "bf16")] + [{"packing": p, "share": False, "dtype": "fp32"} for p in (True, False)]


def label(tool: str, s: dict) -> str:
    compiled = ", torch.compile" if s.get("compile") else ""
    if tool == "lf":
        return (f"{'neat_packing' if s['packing'] else 'no packing'}, gradient checkpointing "
                f"{'on' if s['gc'] else 'off'}, {s['dtype']}{compiled}")
    packing = ("packing with shared prompt prefixes" if s.get("share") else "packing") if s["packing"] else "no packing"
    return f"{packing}, {s['dtype']}{compiled}"


def parse_setting(tool: str, text: str) -> dict:
    """'neat,nogc,fp32' / 'nopack,gc,bf16' (LLaMA-Factory) or 'pack,share,fp32' / 'pack,fp32' / 'nopack,auto'
    (tunesmith; 'share': shared prompt prefixes); either
    with ',compile' (torch.compile: TrainingArguments' torch_compile in LLaMA-Factory, `compile: true` in ours)."""
    words = set(text.split(","))
    s = {"packing": bool(words & {"neat", "pack"}), "dtype": next((w for w in words if w in ("fp32", "bf16", "auto")),
                                                                    "fp32"), "compile": "compile" in words}
    if tool == "lf":
        s["gc"] = "gc" in words
    else:
        s["share"] = s["packing"] and "share" in words
    return s


def lf_args(spec: dict) -> dict:
    s = spec["setting"]
    return {
        "stage": "sft", "do_train": True, "model_name_or_path": spec["model"], "finetuning_type": "lora",
        "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target": "all",
        "dataset": spec["data"]["lf_name"], "dataset_dir": spec["data"]["lf_dir"], "template": "smollm2",
        "cutoff_len": spec["cutoff"], "overwrite_cache": True, "preprocessing_num_workers": None,
        "packing": s["packing"], "neat_packing": s["packing"], "disable_shuffling": True,
        "disable_gradient_checkpointing": not s["gc"], "bf16": s["dtype"] == "bf16",
        "output_dir": spec["out"], "overwrite_output_dir": True, "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1, "learning_rate": 2e-4, "lr_scheduler_type": "cosine", "warmup_ratio": 0.0,
        "max_steps": spec["steps"], "logging_steps": 1, "save_strategy": "no", "plot_loss": False,
        "report_to": "none", "disable_tqdm": True, "dataloader_num_workers": 0, "seed": 42,
        "use_cpu": True,  # without it transformers refuses bf16 on a machine with no GPU
        "torch_compile": bool(s.get("compile")),
    }


def ours_recipe(spec: dict) -> dict:
    s = spec["setting"]
    return {
        "model": spec["model"], "output_dir": spec["out"], "template": "auto", "dtype": s["dtype"], "device": "cpu",
        "threads": spec["threads"], "overwrite": True,
        "data": {"train": {"path": spec["data"]["ours"], "format": "conversation"}, "max_source_len": spec["cutoff"],
                 "max_target_len": spec["cutoff"], "packing": s["packing"], "share_prefixes": bool(s.get("share")),
                 "shuffle": False},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["all-linear"]},
        "batch_size": 8, "lr": 2e-4, "scheduler": "cosine", "warmup": 0, "max_steps": spec["steps"],
        "logging_steps": 1, "save_steps": 100_000, "seed": 42, "plot": False, "sample_tokens": 0,
        "gradient_checkpointing": False, "compile": "true" if s.get("compile") else "false",
    }


# -- the worker processes (one per run; the LLaMA-Factory one runs in its own venv) -------------------------


class Clock:
    """A TrainerCallback's clock: (time, real tokens so far) at the end of every step, the losses logged, and
    the base weights' dtype and gradient checkpointing as the model really trains."""

    def __init__(self, tokens_of):
        from transformers import TrainerCallback

        clock = self
        self.tokens_of = tokens_of
        self.marks: list[tuple[float, int]] = []
        self.losses: list[float] = []
        self.seen: dict = {}
        self.began: float | None = None  # the start of the first step

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if model is not None:
                    frozen = next(p for p in model.parameters() if not p.requires_grad)
                    clock.seen = {"base_dtype": str(frozen.dtype).replace("torch.", ""),
                                  "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False))}

            def on_step_begin(self, args, state, control, **kwargs):
                if clock.began is None:
                    clock.began = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.marks.append((time.perf_counter(), clock.tokens_of()))

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    clock.losses.append(float(logs["loss"]))

        self.callback = _CB()

    def result(self, adapter: str, started: float) -> dict:
        (t0, k0), (t1, k1) = self.marks[0], self.marks[-1]
        return {"tok_s": (k1 - k0) / (t1 - t0) if t1 > t0 else float("nan"), "tokens": k1 - k0,
                "first_step_s": t0 - self.began if self.began else float("nan"),
                "step_s": (t1 - t0) / max(1, len(self.marks) - 1), "steps": len(self.marks), "losses": self.losses,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "adapter": adapter,
                "wall_s": time.perf_counter() - started, **self.seen}


def worker_lf(spec: dict) -> dict:
    started = time.perf_counter()
    import torch

    torch.set_num_threads(spec["threads"])
    import llamafactory.data.collator as collator
    from llamafactory.train.tuner import run_exp

    count = {"tokens": 0}
    call = collator.SFTDataCollatorWith4DAttentionMask.__call__

    def counting_call(self, features):
        # real tokens: the records' own tokens (neat_packing marks a packed row's padding with 0 in attention_mask)
        count["tokens"] += sum(sum(1 for m in f["attention_mask"] if m) for f in features)
        return call(self, features)

    collator.SFTDataCollatorWith4DAttentionMask.__call__ = counting_call
    clock = Clock(lambda: count["tokens"])
    run_exp(lf_args(spec), callbacks=[clock.callback])
    return clock.result(spec["out"], started)


def worker_lf_encode(spec: dict) -> dict:
    """LLaMA-Factory's own training records (its data pipeline, no packing): input ids and labels."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(lf_args(spec))
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    ds = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)["train_dataset"]
    return {"records": [{"input_ids": list(r["input_ids"]), "labels": list(r["labels"])} for r in ds]}


def worker_ours(spec: dict) -> dict:
    started = time.perf_counter()
    from tunesmith.train.run import train_from_config

    trainer = {}
    clock = Clock(lambda: trainer["t"].tokens_seen)
    clock.callback.bind_trainer = lambda t: trainer.update(t=t)
    result = train_from_config(ours_recipe(spec), callbacks=[clock.callback])
    out = clock.result(str(result.adapter_dir), started)
    out["resolved_dtype"] = result.summary.get("dtype") or out.get("base_dtype")
    return out


def run_worker(kind: str, spec: dict, work: Path) -> dict:
    """One run in a process of its own; its stdout/stderr go to a log file beside the spec."""
    name = f"{kind}-{spec['name']}"
    spec_path, result_path, log_path = (work / "specs" / f"{name}{ext}" for ext in (".json", ".result.json", ".log"))
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, ensure_ascii=False, indent=1), encoding="utf-8")
    python = str(lf_python()) if kind.startswith("lf") else sys.executable
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_CACHE=str(work / "hf-datasets"), DISABLE_VERSION_CHECK="1", WANDB_DISABLED="true",
               # every run compiles cold (a first run on a user's machine does), not from an earlier run's cache
               TORCHINDUCTOR_CACHE_DIR=tempfile.mkdtemp(prefix=f"inductor-{name}-"))
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            rc = subprocess.run([python, __file__, "--worker", kind, str(spec_path), str(result_path)], env=env,
                                stdout=log, stderr=subprocess.STDOUT).returncode
    finally:
        shutil.rmtree(env["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)  # tens of MB a run, never read again
    if rc != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{name} failed (exit {rc}); the end of {log_path}:\n{tail}")
    return json.loads(result_path.read_text(encoding="utf-8"))


# -- checks both tools share: token agreement and the dev loss ----------------------------------------------


def token_agreement(train, lf_records: list[dict], cutoff: int) -> dict:
    """Compare LLaMA-Factory's training records with tunesmith's encoding of the same conversations: input ids,
    and labels (LLaMA-Factory's template also learns the "\\n" after <|im_end|>; tunesmith stops at <|im_end|>)."""
    from tunesmith.model import load_tokenizer
    from tunesmith.template import resolve_template
    from tunesmith.train.dataset import encode_all
    from tunesmith.train.shared_prefix import saving_line

    tok = load_tokenizer("default")
    ours, _ = encode_all(train, tok, resolve_template("auto", tok), max_source_len=cutoff, max_target_len=cutoff)
    newline = tok.encode("\n", add_special_tokens=False)
    pairs = list(zip(ours, lf_records))
    whole = [(o, r) for o, r in pairs if len(r["input_ids"]) == len(o["input_ids"])]  # LLaMA-Factory cut nothing

    def labels_match(o, r):  # equal apart from LLaMA-Factory also learning the newline after <|im_end|>
        lf = list(r["labels"])
        if lf[-len(newline):] == newline and o["labels"][-len(newline):] == [-100] * len(newline):
            lf[-len(newline):] = [-100] * len(newline)
        return lf == o["labels"]

    o0, r0 = pairs[0]
    return {"cutoff": cutoff, "records": len(ours), "lf_records": len(lf_records), "lf_cut": len(pairs) - len(whole),
            "ids_equal": sum(o["input_ids"] == r["input_ids"] for o, r in pairs),
            "ids_equal_whole": sum(o["input_ids"] == r["input_ids"] for o, r in whole), "whole": len(whole),
            "labels_equal": sum(o["labels"] == r["labels"] for o, r in pairs),
            "labels_match": sum(labels_match(o, r) for o, r in whole),
            "first_ids_equal": o0["input_ids"] == r0["input_ids"], "first_labels_match": labels_match(o0, r0),
            "longest_ours": max(len(o["input_ids"]) for o in ours),
            "longest_lf": max(len(r["input_ids"]) for r in lf_records),
            "sharing": saving_line(ours, 8, batches=len(ours) // 8)}


def dev_losses(adapters: list[str | None], dev, cutoff: int) -> list[float]:
    """Mean answer-token loss on `dev` of the base with each adapter (None: the base alone), all computed alike:
    the default model in fp32, the adapter loaded with peft, tunesmith's template, one record at a time."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.model import load_tokenizer, resolve_model_path
    from tunesmith.template import resolve_template
    from tunesmith.train.dataset import encode_all

    path = resolve_model_path("default")
    tok = load_tokenizer(path)
    samples, _ = encode_all(dev, tok, resolve_template("auto", tok), max_source_len=cutoff, max_target_len=cutoff)
    out = []
    for adapter in adapters:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for s in samples:
                ids = torch.tensor([s["input_ids"]])
                labels = torch.tensor(s["labels"][1:])
                logits = model(input_ids=ids).logits[0, :-1].float()
                total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
                n += int((labels != -100).sum())
        out.append(total / n)
    return out


# -- the bench ------------------------------------------------------------------------------------------------


def trial(work: Path, base: dict, steps: int) -> tuple[dict, dict, list[str]]:
    """The fastest setting of each tool on this machine, by a short run of each (tokens/s over steps 2..steps).
    Results are kept in trial.json as they come: a trial that stops resumes where it left off."""
    path = work / "trial.json"
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if saved.get("steps") != steps:
        saved = {"steps": steps, "results": {}}
    done = saved["results"]
    from tunesmith.train.runtime import cpu_bf16_speedup

    bf16 = cpu_bf16_speedup()
    skip = "bf16" if bf16 < 1.0 else "fp32" if bf16 >= FAST_BF16 else None
    skipped = [] if skip is None else [
        f"bf16 settings not tried: a bf16 matmul runs at {bf16:.3f}x the fp32 speed on this CPU (no bf16 "
        "instructions, emulated)" if skip == "bf16" else
        f"fp32 settings not tried: a bf16 matmul runs at {bf16:.1f}x the fp32 speed on this CPU (AMX; FAST_BF16)"]
    for tool, settings in (("lf", LF_SETTINGS), ("ours", OURS_SETTINGS)):
        for i, s in enumerate(settings):
            key = f"{tool}: {label(tool, s)}"
            if key in done or s["dtype"] == skip:
                continue
            spec = dict(base, setting=s, steps=steps, name=f"trial{i}", out=str(work / "out" / f"trial-{tool}{i}"))
            load = os.getloadavg()[0]
            r = run_worker(tool, spec, work)
            note = (f" (base weights {r.get('base_dtype')}, checkpointing {r.get('gradient_checkpointing')}"
                    f", peak RSS {r['peak_rss_mb']:.0f} MB, 1-min load before {load:.2f})")
            line = (f"{'LLaMA-Factory' if tool == 'lf' else 'tunesmith'} {label(tool, s)}: {r['tok_s']:.1f} "
                    f"tok/s, {r['step_s']:.2f} s/step" + note)
            done[key] = {"tool": tool, "setting": s, "tok_s": r["tok_s"], "line": line}
            saved["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            path.write_text(json.dumps(saved, ensure_ascii=False, indent=1), encoding="utf-8")
            print("trial: " + line, flush=True)
    best = {tool: max((d for d in done.values() if d["tool"] == tool), key=lambda d: d["tok_s"])["setting"]
            for tool in ("lf", "ours")}
    saved.update(lf=best["lf"], ours=best["ours"], lines=[d["line"] for d in done.values()] + skipped)
    path.write_text(json.dumps(saved, ensure_ascii=False, indent=1), encoding="utf-8")
    return best["lf"], best["ours"], saved["lines"]


def summarize(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"


def main_worker(argv: list[str]) -> int:
    kind, spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    fn = {"lf": worker_lf, "lf-encode": worker_lf_encode, "ours": worker_ours}[kind]
    Path(result_path).write_text(json.dumps(fn(spec), ensure_ascii=False), encoding="utf-8")
    return 0


def arguments():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-samples", type=int, default=240)
    ap.add_argument("--dev-samples", type=int, default=24)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of both tools (default: all cores)")
    ap.add_argument("--trial-steps", type=int, default=5, help="steps of each setting's trial run")
    ap.add_argument("--lf-setting", default=None, help="skip LLaMA-Factory's trial: e.g. nopack,nogc,fp32 or "
                                                        "neat,gc,bf16")
    ap.add_argument("--ours-setting", default=None, help="skip tunesmith's trial: e.g. pack,share,fp32, pack,fp32 or "
                                                          "nopack,auto")
    ap.add_argument("--trial-only", action="store_true", help="run the setting trial only (saved as trial.json in "
                                                                  "--work; a later run with both settings given "
                                                                  "reports it)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of " + ", ".join(WORKLOADS))
    ap.add_argument("--work", default=str(CACHE / "vs-llamafactory"))
    ap.add_argument("--append", action="store_true", help="append the section to BENCHMARKS.md")
    return ap.parse_args()


def main() -> int:
    args = arguments()
    from _env import append_section, cpu_name, prepare_training_bench

    threads = args.threads or len(os.sched_getaffinity(0))
    load_before = os.getloadavg()
    seconds, reused = install_llamafactory()
    print(f"LLaMA-Factory venv {LF_VENV}: " + (f"reused (its install took {seconds:.0f} s)" if reused
                                              else f"installed in {seconds:.0f} s"), flush=True)
    prepare_training_bench(threads)
    from tunesmith.model import default_model_dir

    work = Path(args.work)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"--workloads: unknown {', '.join(unknown)} (expected some of {', '.join(WORKLOADS)})")
    cases = {}
    for name in names:
        train, dev = workload(name, args.train_samples, args.dev_samples)
        case_dir = work / name
        base = {"model": str(default_model_dir()), "data": write_data(train, case_dir), "threads": threads,
                "cutoff": CUTOFFS[name]}
        enc = run_worker("lf-encode", dict(base, setting={"packing": False, "gc": False, "dtype": "fp32"}, steps=1,
                                           name="encode", out=str(case_dir / "out" / "encode")), case_dir)
        agree = token_agreement(train, enc["records"], CUTOFFS[name])
        print(f"{name}: token check: " + agreement_text(agree), flush=True)
        cases[name] = {"base": base, "dev": dev, "agree": agree, "dir": case_dir, "runs": {"lf": [], "ours": []}}

    # the setting trial runs on the first workload; its fastest settings then run every workload
    first = cases[names[0]]
    trial_lines = []
    trial_note = f"{args.trial_steps} steps each on the {names[0]} workload, tokens/s over steps 2..{args.trial_steps}"
    lf_set = parse_setting("lf", args.lf_setting) if args.lf_setting else None
    ours_set = parse_setting("ours", args.ours_setting) if args.ours_setting else None
    if lf_set is None or ours_set is None or args.trial_only:
        t_lf, t_ours, trial_lines = trial(first["dir"], first["base"], args.trial_steps)
        lf_set, ours_set = lf_set or t_lf, ours_set or t_ours
        if args.trial_only:
            print(f"fastest: LLaMA-Factory {label('lf', t_lf)}; tunesmith {label('ours', t_ours)}")
            return 0
    elif (first["dir"] / "trial.json").is_file():
        saved = json.loads((first["dir"] / "trial.json").read_text(encoding="utf-8"))
        trial_lines = saved["lines"]
        trial_note = (f"an earlier `--trial-only` run, {saved['when']}: {saved['steps']} steps each on the "
                      f"{names[0]} workload, tokens/s over steps 2..{saved['steps']}; fastest LLaMA-Factory "
                      f"{label('lf', saved['lf'])}, tunesmith {label('ours', saved['ours'])}")
    print(f"settings: LLaMA-Factory {label('lf', lf_set)}; tunesmith {label('ours', ours_set)}", flush=True)

    load_start = os.getloadavg()
    for i in range(args.repeats):  # interleaved: every workload and tool once per repeat
        for name in names:
            case = cases[name]
            for tool, s in (("lf", lf_set), ("ours", ours_set)):
                spec = dict(case["base"], setting=s, steps=args.steps, name=f"run{i}",
                            out=str(case["dir"] / "out" / f"{tool}{i}"))
                r = run_worker(tool, spec, case["dir"])
                case["runs"][tool].append(r)
                print(f"repeat {i + 1}/{args.repeats} {name:8s} {tool:4s}: {r['tok_s']:7.1f} tok/s  "
                      f"{r['step_s']:.2f} s/step  first step {r['first_step_s']:.1f} s  peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB  last loss {r['losses'][-1]:.4f}  ({r['tokens']:,} tokens)",
                      flush=True)
    load_end = os.getloadavg()
    for case in cases.values():
        adapters = [None] + [r["adapter"] for tool in ("lf", "ours") for r in case["runs"][tool]]
        losses = dev_losses(adapters, case["dev"], case["base"]["cutoff"])
        case["base_loss"], k = losses[0], 1
        for tool in ("lf", "ours"):
            for r in case["runs"][tool]:
                r["dev_loss"] = losses[k]
                k += 1
    text = report(args, cases, lf_set, ours_set, (trial_note, trial_lines), seconds, reused,
                  (load_before, load_start, load_end), cpu_name(), threads)
    print("\n" + text)
    if args.append:
        print(f"appended to {append_section(text)}")
    return 0


def agreement_text(a: dict) -> str:
    return (f"first record: ids {'equal' if a['first_ids_equal'] else 'DIFFER'}, labels "
            f"{'equal' if a['first_labels_match'] else 'DIFFER'} (apart from the newline after <|im_end|>, which "
            f"LLaMA-Factory's template also learns); input ids equal on {a['ids_equal']}/{a['records']} records "
            f"(LLaMA-Factory cuts {a['lf_cut']} records longer than its cutoff {a['cutoff']}, up to "
            f"{a['longest_ours']} tokens; on the {a['whole']} it leaves whole ids equal on {a['ids_equal_whole']}, "
            f"labels on {a['labels_match']} apart from that newline, exactly on {a['labels_equal']})")


def report(args, cases, lf_set, ours_set, trial, install_s, reused, loads, cpu, threads):
    import peft
    import torch
    import transformers

    cmd = "python bench/bench_vs_llamafactory.py " + " ".join(sys.argv[1:])

    def row(workload, name, rs):
        each = ", ".join(f"{r['tok_s']:.1f}" for r in rs)
        dev = ", ".join(f"{r['dev_loss']:.4f}" for r in rs)
        return (f"| {workload} | {name} | {summarize([r['tok_s'] for r in rs])} | {each} | "
                f"{summarize([r['step_s'] for r in rs])} | {summarize([r['first_step_s'] for r in rs])} | "
                f"{summarize([r['peak_rss_mb'] for r in rs])} | {dev} |")

    from tunesmith.train.runtime import resolve_train_dtype

    any_case = next(iter(cases.values()))
    lf_dtype = any_case["runs"]["lf"][0].get("base_dtype")
    ours_dtype = any_case["runs"]["ours"][0].get("base_dtype")
    auto_dtype = resolve_train_dtype("auto", "cpu")
    lines = [
        "## Training speed vs LLaMA-Factory 0.9.5 on three workloads, side by side "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"- CPU: {cpu}, {threads} torch threads in both tools; shared machine, load average (1/5/15 min) "
        + "; ".join(f"{w} {a:.2f}/{b:.2f}/{c:.2f}" for w, (a, b, c) in zip(("before", "at the first run", "after"),
                                                                          loads)),
        f"- tunesmith: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}",
        f"- LLaMA-Factory: {lf_versions()} (own venv; " + (f"its install took {install_s:.0f} s" if reused
                                                             else f"installed in {install_s:.0f} s") + ")",
        f"- workloads, the first {args.train_samples} records of each in file order:",
        *[f"  - {name}: {WORKLOADS[name]}" for name in cases],
        "- both tools: SmolLM2-135M-Instruct (the converted default folder), LoRA r8/alpha 16/dropout 0 all linear "
        "layers, cutoff " + ", ".join(f"{CUTOFFS[n]} ({n})" for n in cases) + " (tunesmith: max_source_len and "
        "max_target_len both the cutoff, so that every record LLaMA-Factory keeps whole is the same tokens in both), "
        "batch 8, "
        f"lr 2e-4 cosine, no warmup, {args.steps} steps; file order in both (LLaMA-Factory disable_shuffling, "
        "tunesmith data.shuffle false)",
        f"- settings: LLaMA-Factory {label('lf', lf_set)} (base weights trained in {lf_dtype}; `bf16: true` "
        f"autocasts); tunesmith {label('ours', ours_set)} (base weights {ours_dtype}; its dtype=auto resolves to "
        f"{auto_dtype} on this CPU)",
        *[f"- {name}: token check (LLaMA-Factory's own data pipeline, `smollm2` template, vs tunesmith's `auto` "
          f"template): {agreement_text(c['agree'])}; tunesmith's shared prompt prefixes: {c['agree']['sharing']}"
          for name, c in cases.items()],
        f"- tokens/s: real (non-padding) tokens from the end of step 1 to the end of step {args.steps}, "
        "on_step_end clock in both (the first step, where torch.compile compiles, is outside it and has a column of "
        "its own); peak RSS of the training process; dev loss: mean answer-token loss of the saved adapter on "
        f"{args.dev_samples} held-out records of the workload, one shared function (base alone: "
        + ", ".join(f"{name} {c['base_loss']:.4f}" for name, c in cases.items()) + ")",
        f"- command: `{cmd}`",
        "",
        "| workload | tool (setting) | real tokens/s median (min–max) | runs | s/step median (min–max) | first step s "
        "| peak RSS MB median (min–max) | dev loss per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in cases.items():
        lines += [row(name, f"LLaMA-Factory ({label('lf', lf_set)})", c["runs"]["lf"]),
                  row(name, f"tunesmith ({label('ours', ours_set)})", c["runs"]["ours"])]
    lines.append("")
    for name, c in cases.items():
        ratios = [o["tok_s"] / f["tok_s"] for f, o in zip(c["runs"]["lf"], c["runs"]["ours"])]
        gap = statistics.median(r["dev_loss"] for r in c["runs"]["ours"]) / \
            statistics.median(r["dev_loss"] for r in c["runs"]["lf"]) - 1
        lines.append(f"- {name}: tunesmith / LLaMA-Factory per repeat {', '.join(f'{x:.2f}x' for x in ratios)}; "
                     f"median {statistics.median(ratios):.2f}x; dev loss tunesmith vs LLaMA-Factory {100 * gap:+.2f} %")
    trial_note, trial_lines = trial
    if trial_lines:
        lines += ["", f"Setting trial ({trial_note}):", ""]
        lines += [f"- {t}" for t in trial_lines]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        raise SystemExit(main_worker(sys.argv[2:]))
    raise SystemExit(main())
