"""A .gguf file as the base model: converted once into the cache (keyed by content) with the logits, tokenizer and
chat template of the file; trained on and chatted with through the commands; other architectures and files that
are not GGUF refused with a message that names them."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support import write_conversations
from tunesmith import gguf_base
from tunesmith.cli import main
from tunesmith.conversation import Conversation
from tunesmith.errors import ModelError
from tunesmith.model import resolve_model_path
from tunesmith.template import load_template, to_jinja

TEXT = "床前明月光，疑是地上霜。Hello world <|im_end|>"
GGUF_TYPE = {"qwen2": "f16", "llama": "q8_0"}
TOLERANCE = {"f16": 2e-3, "q8_0": 3e-2}  # against the merged fp32 source model, as in test_export_gguf.py


@pytest.fixture(scope="module")
def gguf_files(tiny_model_factory, make_adapter, tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """arch -> (source model folder, adapter, model.gguf exported from the merge by `tunesmith export --gguf`)."""
    files = {}
    for arch, gguf_type in GGUF_TYPE.items():
        model_dir = tiny_model_factory(arch)
        adapter = make_adapter(model_dir, seed=21, default_system="你是李白")  # test_export_gguf.py's
        out = tmp_path_factory.mktemp(f"gguf-{arch}") / "export"
        assert main(["export", str(adapter), "-o", str(out), "--gguf", gguf_type]) == 0
        files[arch] = (model_dir, adapter, out / "model.gguf")
    return files


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """The GGUF files converted during the test (gguf_base.convert_gguf, counted)."""
    seen: list[Path] = []
    real = gguf_base.convert_gguf

    def counted(path, out, dtype=None):
        seen.append(Path(path))
        return real(path, out, dtype=dtype)

    monkeypatch.setattr(gguf_base, "convert_gguf", counted)
    return seen


def _merged(model_dir: Path, adapter: Path):
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_a_gguf_converts_once_with_its_logits_tokenizer_and_template(gguf_files, cache, conversions, capsys, arch,
                                                                      tmp_path):
    model_dir, adapter, gguf = gguf_files[arch]
    folder = Path(resolve_model_path(str(gguf)))
    assert "first use of" in capsys.readouterr().err and conversions == [gguf]
    digest = json.loads((cache / "models" / gguf_base.INDEX_FILE).read_text())[str(gguf.resolve())]["sha256"]
    assert folder == cache / "models" / f"gguf-model-{digest[:12]}" and (folder / "config.json").is_file()
    # again, from another place, and after a touch (hashed again, same content): the same folder, no conversion
    copy = tmp_path / "elsewhere" / "model.gguf"
    copy.parent.mkdir()
    shutil.copy(gguf, copy)
    gguf.touch()
    assert {resolve_model_path(str(p)) for p in (gguf, copy, gguf)} == {str(folder)}
    assert conversions == [gguf] and "first use of" not in capsys.readouterr().err

    converted = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert converted.config.model_type == arch and "quantization_config" not in converted.config.to_dict()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        got, gguf_logits, want = converted(ids).logits, direct(ids).logits, _merged(model_dir, adapter)(ids).logits
    assert want.abs().max() > 0.1
    # stored as float16: exact for an f16 file, one more rounding for de-quantized q8_0 weights
    assert (got - gguf_logits).abs().max().item() < (1e-6 if GGUF_TYPE[arch] == "f16" else 1e-2)
    assert (got - want).abs().max().item() < TOLERANCE[GGUF_TYPE[arch]]

    folder_tok = AutoTokenizer.from_pretrained(folder)
    assert folder_tok(TEXT).input_ids == tok(TEXT).input_ids and folder_tok.eos_token == tok.eos_token
    assert folder_tok.chat_template == to_jinja(load_template(adapter), tok)  # the file's, persona included


def test_train_two_steps_then_chat_on_a_gguf_base(gguf_files, cache, conversions, tmp_path, monkeypatch, capsys):
    _, _, gguf = gguf_files["qwen2"]
    data = write_conversations(tmp_path / "train.jsonl", [
        Conversation.single_turn(q, "吾乃李白，" + q[::-1] + "也。", system="你是李白")
        for q in ("天地人", "山水风月", "酒诗剑", "你我他山水")])
    out = tmp_path / "run"
    assert main(["train", f"model={gguf}", f"data.train={data}", "max_steps=2", "warmup=0", "batch_size=2",
                 "device=cpu", "dtype=fp32", "sample_tokens=4", "-o", str(out)]) == 0
    adapter = out / "adapter"
    folder = cache / "models"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    # the adapter records the converted folder: plain peft/transformers/vLLM load it; summary.json keeps the file
    assert Path(base).parent == folder and Path(base).name.startswith("gguf-model-")
    assert resolve_model_path(base) == base  # export without --base finds it
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(gguf) and summary["model_path"] == base and summary["steps"] == 2
    assert conversions == [gguf]
    capsys.readouterr()

    monkeypatch.setattr("sys.stdin", io.StringIO("你好\n/history\n/exit\n"))
    assert main(["chat", "--model", str(gguf), "-a", f"libai={adapter}", "--max-new-tokens", "4",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "[user] 你好" in captured.out and "[assistant]" in captured.out, captured.out
    assert conversions == [gguf] and "first use of" not in captured.err  # the cached folder, not converted again


def _write_gguf(path: Path, arch: str) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_unsupported_architecture_exits_2_naming_it(cache, conversions, tmp_path, capsys):
    path = _write_gguf(tmp_path / "mamba.gguf", "mamba")
    assert main(["chat", "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'mamba'" in err and "llama, qwen2" in err
    data = write_conversations(tmp_path / "train.jsonl", [Conversation.single_turn("你好", "吾乃李白。")])
    assert main(["train", f"model={path}", f"data.train={data}", "max_steps=2", "device=cpu",
                 "-o", str(tmp_path / "run")]) == 2
    assert "'mamba'" in capsys.readouterr().err and conversions == []


def test_a_file_that_is_not_gguf_exits_2_naming_it(cache, conversions, tmp_path, capsys):
    fake = tmp_path / "x.gguf"
    fake.write_text("not a model at all", encoding="utf-8")
    assert main(["chat", "--model", str(fake)]) == 2
    err = capsys.readouterr().err
    assert str(fake) in err and "not a GGUF file" in err
    with pytest.raises(ModelError, match="no such GGUF file"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    assert conversions == []
