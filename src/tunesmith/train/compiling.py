"""torch.compile for a training run, one decoder layer at a time, and when it pays.

    tunesmith train configs/rolebench_libai.yaml compile=true     # compile before the first step
    tunesmith train configs/rolebench_libai.yaml                  # compile: auto, decided after step 2

Regional compilation: a decoder's layers are one class run N times, so each layer is compiled in place
(`nn.Module.compile`) and all of them share one compiled graph: the compile costs one layer, not the model,
and the module tree (hence the saved adapter's names) stays as it was. The embedding, the final norm and the
answer-only loss head stay eager. Shapes are dynamic (a packed row is as long as its batch), the packed
attention runs eager between the compiled halves of each layer (tunesmith.train.attention), and the
embedding's output asks for a gradient so that the first layer's input looks like every other layer's
(one graph instead of two).

What it buys is fusion: the norms, rotary embedding, SiLU gate, LoRA's scale-and-add, dtype casts and the
backward's gradient sums become a few fused kernels instead of hundreds of small ones; the matmuls and the
attention are what they were. Measured in BENCHMARKS.md ("on three workloads").

`compile: auto` compiles when the run is long enough to win back the compile: after the second step it
takes the step time it has just measured, `t`, and compiles when

    steps_left * t * (1 - COMPILED_STEP_FRACTION) > COMPILE_SECONDS

with both constants measured on CPUs by bench/bench_vs_llamafactory.py (docs/training.md). It stays off on
GPUs (not measured there: set `compile: true` to try), under DeepSpeed/FSDP, when inductor has no compiler
to call (a CPU build needs a C++ compiler), and for the preference methods (TRL's trainers); gradient
checkpointing and quantized (bitsandbytes) layers keep a run eager even with `compile: true` (not tried
together).
Evaluation and sample generation during training run eager; after training the layers are eager again.
"""

from __future__ import annotations

import shutil
import time

from transformers import TrainerCallback

from tunesmith.train.runtime import log

# A compiled step's time as a fraction of the eager one, and a cold compile's seconds (empty inductor
# cache), both for SmolLM2-135M on 2-core CPUs, on the cautious side of what was measured, so that `auto`
# errs towards not compiling: compiled steps took 0.75-0.8 of the eager ones on an Intel Xeon (bf16, AMX;
# BENCHMARKS.md, "on three workloads"), where a cold compile took 30-45 s; on an AMD EPYC (fp32, an earlier
# whole-model compile) it took 145 s.
COMPILED_STEP_FRACTION = 0.8
COMPILE_SECONDS = 150.0


def decoder_layers(model) -> list:
    """The repeated blocks of a (PEFT-wrapped) causal LM: the longest ModuleList whose modules share a class."""
    import torch

    best: list = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best) and len(module) > 1 \
                and len({type(m) for m in module}) == 1:
            best = list(module)
    return best


def compiler_missing(device: str) -> str | None:
    """Why inductor cannot compile on `device` here, or None."""
    if device == "cpu":
        return None if any(shutil.which(c) for c in ("g++", "c++", "clang++")) else "no C++ compiler (g++) found"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def compile_layers(model) -> int:
    """Compile `model`'s decoder layers in place (dynamic shapes); returns how many."""
    import torch

    layers = decoder_layers(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if layers and hasattr(base, "enable_input_require_grads") and not getattr(base, "_require_grads_hooks", None):
        base.enable_input_require_grads()
        base._input_grads_for_compile = True  # uncompile_layers takes the hook away again
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def uncompile_layers(model) -> None:
    """The decoder layers eager again (what nn.Module.compile set, unset), and the embedding output without the
    gradient compile_layers asked for (a hook that gradient checkpointing had set stays)."""
    for layer in decoder_layers(model):
        layer._compiled_call_impl = None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "_input_grads_for_compile", False):
        base.disable_input_require_grads()
        base._input_grads_for_compile = False


def worth_compiling(step_seconds: float, steps_left: int) -> tuple[bool, str]:
    """`compile: auto`'s rule (module docstring), with the reason in words."""
    saved = steps_left * step_seconds * (1 - COMPILED_STEP_FRACTION)
    why = (f"{step_seconds:.1f} s/step eager, {steps_left} steps left: compiling would save about {saved:.0f} s "
           f"for about {COMPILE_SECONDS:.0f} s of compiling")
    return saved > COMPILE_SECONDS, why


class CompileCallback(TrainerCallback):
    """Compiles the model's layers before the first step (`compile: true`) or after the second when it pays
    (`compile: auto`); makes them eager again when training ends."""

    def __init__(self, mode: str, device: str, stream=None, blocked: str | None = None):
        self.mode = mode
        self.device = device
        self.stream = stream
        self.blocked = blocked  # why this run stays eager whatever the mode says
        self.compiled = False
        self.step_ends: list[float] = []  # when steps 1 and 2 ended (`auto`)

    def _compile(self, model, why: str) -> None:
        missing = self.blocked or compiler_missing(self.device)
        if missing:
            log(f"compile: off ({missing}); {why}", self.stream)
            return
        n = compile_layers(model)
        self.compiled = n > 0
        log(f"compile: on, {n} decoder layers (the next step compiles them); {why}" if n else
            "compile: off (no repeated decoder layers found in this model)", self.stream)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.mode == "true" and model is not None:
            self._compile(model, "compile: true")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.mode != "auto" or model is None or len(self.step_ends) >= 2:
            return
        self.step_ends.append(time.perf_counter())
        if len(self.step_ends) < 2:  # the first step carries one-off work; time the second
            return
        if self.device != "cpu":
            log(f"compile: auto -> off (measured on CPUs only; set compile: true to try it on {self.device})",
                self.stream)
            return
        on, why = worth_compiling(self.step_ends[1] - self.step_ends[0], state.max_steps - state.global_step)
        if on:
            self._compile(model, "auto: " + why)
        else:
            log(f"compile: auto -> off ({why})", self.stream)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.compiled and model is not None:
            uncompile_layers(model)
            self.compiled = False
