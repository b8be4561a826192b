"""The command line: help everywhere, light imports, user errors without tracebacks."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli import main

COMMANDS = ["data", "train", "export", "eval", "chat", "serve", "label", "tiny-model", "demo"]


def test_help_does_not_import_heavy_libraries():
    # `tunesmith --help` must answer fast: no torch/transformers/gradio import at CLI load time.
    code = (
        "import sys; from tunesmith.cli import app; "
        "heavy = [m for m in ('torch', 'transformers', 'gradio', 'peft', 'fastapi') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_tiny_model_unknown_arch_is_a_clear_error(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "m"), "--arch", "gpt5"]) == 2
    err = capsys.readouterr().err
    assert "--arch 'gpt5' is not supported" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_tiny_model_command_writes_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["tiny-model", str(tmp_path / "m"), "--arch", "llama"]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"


def test_unknown_model_path_is_a_clear_error():
    from tunesmith.errors import ModelError
    from tunesmith.model import resolve_model_path

    with pytest.raises(ModelError, match="no such model folder"):
        resolve_model_path("./does/not/exist")


def test_quantization_without_cuda_is_a_clear_error():
    from tunesmith.errors import ModelError
    from tunesmith.model import quantization_config

    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        quantization_config("4bit", None, "cpu")


def test_help_text_joins_each_docstring_paragraph_and_keeps_examples():
    from tunesmith.cli import app, reflow

    doc = """First line
    goes on here.

    Second paragraph,
    two lines.

        tunesmith demo --steps 40
        tunesmith demo --help
    """
    assert reflow(doc) == ("First line goes on here.\n\nSecond paragraph, two lines.\n\n"
                           "    tunesmith demo --steps 40\n    tunesmith demo --help")
    helps = {info.name: info.help for info in app.registered_commands}
    assert "the base uses the first adapter's saved chat template" in helps["eval"]


# What a library prints that the user can do nothing about: failed optional kernel loads, glog-style warning
# lines (W1206 23:57:43.391 ...), Python warnings shown with their category, deprecation notices.
_NOISE = re.compile(r"Failed to load|Warning\b|^[WE]\d{4} \d\d:|is deprecated|Could not load", re.MULTILINE)


def _tunesmith(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    """The installed `tunesmith` command in a fresh process, as a user starts it (libraries import from scratch)."""
    code = "import sys; from tunesmith.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, input=stdin)


def test_a_first_command_prints_no_library_noise(tiny_qwen2, tmp_path):
    """`train --help`, a one-step training, building a tiny model, and eval and chat with the trained adapter print
    only tunesmith's own lines and progress."""
    data = tmp_path / "d.jsonl"
    line = '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "吾乃李白"}]}\n'
    data.write_text(line * 4, encoding="utf-8")
    runs = [
        _tunesmith("train", "--help", cwd=tmp_path),
        _tunesmith("train", f"model={tiny_qwen2}", f"data.train={data}", "max_steps=1", "warmup=0", "threads=1",
                   f"output_dir={tmp_path / 'run'}", cwd=tmp_path),
        _tunesmith("tiny-model", str(tmp_path / "tiny"), cwd=tmp_path),
    ]
    adapter = tmp_path / "run" / "adapter"
    runs += [  # the trained adapter answering: eval and chat load it on the base
        _tunesmith("eval", "--model", str(tiny_qwen2), "--adapter", f"a={adapter}", "--data", str(data), "--task",
                   "generic", "--no-probe", "--max-new-tokens", "4", "--threads", "1", "-o", str(tmp_path / "rep"),
                   cwd=tmp_path),
        _tunesmith("chat", "--model", str(tiny_qwen2), "-a", f"a={adapter}", "--max-new-tokens", "4", cwd=tmp_path,
                   stdin="你好\n/exit\n"),
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        printed = run.stdout + run.stderr
        assert not _NOISE.search(printed), printed[:3000]
        assert "Loading weights" not in run.stderr  # a bar that flashes past for a model on disk
    assert "saved adapter to" in runs[1].stdout and runs[1].stderr.strip() == ""
    assert runs[2].stderr.strip() == ""
    assert "wrote" in runs[3].stdout and runs[4].stdout.strip()
