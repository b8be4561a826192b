"""Small models of real architectures (Qwen2, Llama, GLM-4) with their own byte-level BPE tokenizer.

Built offline in about a second; used by the tests and for quick trials of the whole pipeline:

    tunesmith tiny-model /tmp/tiny-qwen2 --arch qwen2
    tunesmith train configs/rolebench_libai.yaml model=/tmp/tiny-qwen2 max_steps=5

The tokenizer is trained on text shipped with the package (the tiny corpus: Chinese and English
lines) plus any extra texts given, so it round-trips Chinese exactly (byte-level BPE never emits
unknown tokens).  The chat template is ChatML, as Qwen2 uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

ARCHS = ("qwen2", "llama", "glm")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus_lines(extra_texts: Iterable[str] = ()) -> list[str]:
    corpus = Path(__file__).with_name("resources") / "tiny_corpus.txt"
    lines = corpus.read_text(encoding="utf-8").splitlines()
    for t in extra_texts:
        lines.extend(t.splitlines())
    return [ln for ln in lines if ln.strip()]


def build_tokenizer(vocab_size: int = 2048, extra_texts: Iterable[str] = ()):
    """Train a byte-level BPE tokenizer on the bundled corpus and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(extra_texts), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
    )
    hf.chat_template = CHATML_TEMPLATE
    return hf


def build_config(arch: str, vocab_size: int, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, intermediate_size: int = 128, max_positions: int = 2048,
                 pad_token_id: int | None = None, eos_token_id: int | None = None):
    """A config of the real architecture, only small."""
    from transformers import GlmConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
    )
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "glm":
        return GlmConfig(head_dim=hidden_size // heads, **common)
    from tunesmith.errors import ConfigError

    raise ConfigError(f"unknown tiny architecture {arch!r} (expected one of {', '.join(ARCHS)})")


def build_tiny_model(out_dir: str | os.PathLike, arch: str = "qwen2", *, seed: int = 0, vocab_size: int = 2048,
                     **config_overrides) -> Path:
    """Write a randomly initialised model + tokenizer + chat template to `out_dir` and return the path.

    The folder is built in a temporary sibling and renamed into place, so a crash never leaves half a model.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from tunesmith.fsio import atomic_dir

    out = Path(out_dir)
    tokenizer = build_tokenizer(vocab_size=vocab_size)
    config = build_config(arch, len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def tiny_model_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the model, tokenizer and chat template to.")],
    arch: Annotated[str, typer.Option(help="Architecture: qwen2, llama or glm (GLM-4).")] = "qwen2",
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
    hidden_size: Annotated[int, typer.Option(help="Hidden size (64 builds in a second).")] = 64,
    layers: Annotated[int, typer.Option(help="Number of transformer layers.")] = 2,
) -> None:
    """Build a tiny randomly initialised model of a real architecture, with its own tokenizer, for tests and trials."""
    if arch not in ARCHS:
        from tunesmith.errors import ConfigError

        raise ConfigError(f"--arch {arch!r} is not supported (expected one of {', '.join(ARCHS)})")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one small shard: a bar that flashes 0% to 100% says nothing
    path = build_tiny_model(out, arch, seed=seed, hidden_size=hidden_size, layers=layers,
                            intermediate_size=hidden_size * 2)
    typer.echo(f"wrote tiny {arch} model to {path}")
