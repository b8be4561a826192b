"""A merged model as one GGUF file (llama.cpp, Ollama), and the Ollama Modelfile beside it.

    tunesmith export runs/libai/adapter -o models/libai-gguf --gguf            # f16
    tunesmith export runs/libai/adapter -o models/libai-gguf --gguf q8_0
    ollama create libai -f models/libai-gguf/Modelfile

Written with the `gguf` package (its writer, tensor-name maps and Q8_0 quantizer): the architecture's
hyperparameters, the byte-level BPE tokenizer (tokens, types, merges, special ids), the chat template as
Jinja (`tokenizer.chat_template`, the persona as default system text) and the tensors. Llama-family q/k
projections are stored in llama.cpp's rotary layout (the permutation its converter applies), which is
also what transformers undoes when it loads a GGUF file.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import ConfigError

GGUF_TYPES = ("f16", "q8_0", "f32")
GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"


def _arch(config):
    import gguf

    arches = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}
    if config.model_type not in arches:
        raise ConfigError(f"--gguf: model type {config.model_type!r} is not supported yet (llama, qwen2); "
                          "export without --gguf and convert the folder with llama.cpp's convert_hf_to_gguf.py")
    return arches[config.model_type]


def _permute_for_rope(w, n_head: int):
    """HF's q/k rows (rotary halves) in llama.cpp's interleaved order, as its converter writes them."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_hparams(writer, config, arch) -> None:
    import gguf

    n_head = config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or n_head)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    if rope:
        writer.add_rope_freq_base(float(rope))
    if arch == gguf.MODEL_ARCH.LLAMA:
        writer.add_rope_dimension_count(getattr(config, "head_dim", None) or config.hidden_size // n_head)
    writer.add_vocab_size(config.vocab_size)


def pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for the pre-tokenizer in a tokenizer.json, so llama.cpp splits text
    before BPE as the tokenizer training used does; "default" where none is recognized."""
    if not pre:
        return "default"
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds[:1] == ["Split"] and "ByteLevel" in kinds:
        regex = (steps[0].get("pattern") or {}).get("Regex", "")
        if "\\p{N}{1,3}" in regex:
            return "llama-bpe"
        if "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" in regex:
            return "qwen2"
    return "default"


def _add_tokenizer(writer, tokenizer, vocab_size: int, chat_template: str) -> None:
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ConfigError(f"--gguf: the tokenizer is {model.get('type')}, only byte-level BPE tokenizers are written")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_tokens) | {str(t) for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        tok = by_id.get(i)
        if tok is None:  # embedding rows past the tokenizer's vocabulary
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(tok)
            types.append(gguf.TokenType.CONTROL if tok in special else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(spec.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, tid in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                      ("pad", tokenizer.pad_token_id)):
        if tid is not None:
            getattr(writer, f"add_{name}_token_id")(tid)
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)


def _tensors(model, arch, gguf_type: str):
    """(gguf name, data, raw type or None) for every weight, in the file's order."""
    import gguf
    import numpy as np

    config = model.config
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd for the output when the file has no output.weight
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ConfigError(f"--gguf: no GGUF name for the weight {name!r}")
        data = tensor.detach().float().cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and name.endswith(("q_proj.weight", "k_proj.weight")):
            data = _permute_for_rope(data, n_head if "q_proj" in name else n_kv)
        if data.ndim == 1 or gguf_type == "f32":
            yield gname, data.astype(np.float32), None  # norms and biases stay f32, as llama.cpp writes them
        elif gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            yield gname, q, gguf.GGMLQuantizationType.Q8_0
        else:
            yield gname, data.astype(np.float16), None


def write_gguf(model, tokenizer, chat_template: str, path: str | Path, gguf_type: str = "f16",
               name: str | None = None) -> Path:
    """Write `model` (merged, no adapters) with its tokenizer and chat template as one GGUF file."""
    import gguf

    if gguf_type not in GGUF_TYPES:
        raise ConfigError(f"--gguf: expected one of {', '.join(GGUF_TYPES)} (got {gguf_type!r})")
    arch = _arch(model.config)
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type]
    if name:
        writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hparams(writer, model.config, arch)
    _add_tokenizer(writer, tokenizer, model.config.vocab_size, chat_template)
    for gname, data, raw in _tensors(model, arch, gguf_type):
        writer.add_tensor(gname, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ConfigError('--gguf: the system text contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile_text(tpl, tokenizer, stop_texts: list[str], gguf_name: str = GGUF_FILE) -> str:
    """An Ollama Modelfile for the GGUF file: TEMPLATE, SYSTEM (the persona) and PARAMETER stop."""
    from tunesmith.template import to_ollama_template

    template = to_ollama_template(tpl, tokenizer)
    lines = [f"FROM ./{gguf_name}"]
    if template is None:
        lines.append("# TEMPLATE: not written, the tokenizer's own chat template has no Go equivalent here; "
                     "Ollama takes it from the GGUF file's tokenizer.chat_template")
    else:
        lines.append("TEMPLATE " + _quoted(template))
    if tpl.default_system:
        lines.append("SYSTEM " + _quoted(tpl.default_system))
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stop_texts]
    return "\n".join(lines) + "\n"
