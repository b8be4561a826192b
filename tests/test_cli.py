"""The command line: help everywhere, light imports, user errors without tracebacks."""

import subprocess
import sys

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
