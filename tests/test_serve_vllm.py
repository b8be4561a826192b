"""The vLLM launch: a Jinja form of every template that renders what tunesmith renders, and the command
`tunesmith serve --print-vllm-command` builds (no vLLM needed)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunesmith.cli import main
from tunesmith.conversation import Message
from tunesmith.errors import ConfigError
from tunesmith.serve.vllm import CHAT_TEMPLATE_FILE, VllmLaunch, build_vllm_command, max_lora_rank
from tunesmith.template import encode_prompt, load_template, render_text, resolve_template, to_jinja

CONVERSATIONS = [
    (None, [Message("user", "你好")]),
    ("你是李白", [Message("user", "床前明月光"), Message("assistant", "疑是地上霜。"), Message("user", "再来一句")]),
    ("", [Message("user", "hello")]),  # an explicit empty system text: no system part, not the default
]


def _openai_messages(system, messages):
    return ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": m.role, "content": m.content} for m in messages]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("name", ["chatml", "plain", "instruction", "tokenizer"])
@pytest.mark.parametrize("default_system", [None, "你是李白，爱酒。"])
def test_the_jinja_template_renders_the_prompt_tunesmith_sends(tiny_model_factory, arch, name, default_system):
    tok = AutoTokenizer.from_pretrained(tiny_model_factory(arch))
    tpl = resolve_template(name, tok, default_system=default_system)
    jinja = to_jinja(tpl, tok)
    for system, messages in CONVERSATIONS:
        text = tok.apply_chat_template(_openai_messages(system, messages), chat_template=jinja, tokenize=False,
                                       add_generation_prompt=True)
        assert text == render_text(tok, tpl, system, messages, add_generation_prompt=True)
        # a server tokenizes the rendered text whole; tunesmith tokenizes it piece by piece: same ids here
        assert tok(text, add_special_tokens=False)["input_ids"] == encode_prompt(tok, tpl, system, messages)


@pytest.fixture
def two_adapters(tiny_qwen2, make_adapter, tmp_path):
    """Two adapters with the same template and persona, copied (the command writes a file next to the first)."""
    out = {}
    for seed, name in ((11, "libai"), (12, "dufu")):
        out[name] = tmp_path / name
        shutil.copytree(make_adapter(tiny_qwen2, seed=seed, default_system="你是李白"), out[name])
    return out


def _flag(cmd: list[str], name: str, n: int = 1) -> list[str] | str:
    i = cmd.index(name)
    return cmd[i + 1] if n == 1 else cmd[i + 1:i + 1 + n]


def test_the_command_serves_the_same_names_adapters_and_prompts(tiny_qwen2, two_adapters):
    launch = VllmLaunch(model=str(tiny_qwen2), adapters={k: str(v) for k, v in two_adapters.items()},
                        port=8123, dtype="bf16", max_new_tokens=200, extra_args=["--tensor-parallel-size", "2"])
    cmd = build_vllm_command(launch)
    assert cmd[:3] == ["vllm", "serve", str(tiny_qwen2)]
    assert _flag(cmd, "--served-model-name") == "base" and _flag(cmd, "--port") == "8123"
    assert _flag(cmd, "--dtype") == "bfloat16" and "--enable-lora" in cmd
    assert _flag(cmd, "--lora-modules", 2) == [f"libai={two_adapters['libai'].resolve()}",
                                                f"dufu={two_adapters['dufu'].resolve()}"]
    assert _flag(cmd, "--max-lora-rank") == "8"  # rank 4, rounded up to a rank vLLM accepts
    assert _flag(cmd, "--max-loras") == "2"
    assert json.loads(_flag(cmd, "--override-generation-config")) == {"max_new_tokens": 200}
    assert cmd[-2:] == ["--tensor-parallel-size", "2"]
    # the chat template file is the adapters' saved template, persona included
    written = Path(_flag(cmd, "--chat-template"))
    assert written == two_adapters["libai"].resolve() / CHAT_TEMPLATE_FILE
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = load_template(two_adapters["libai"])
    assert written.read_text(encoding="utf-8") == to_jinja(tpl, tok)
    assert "你是李白" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                              chat_template=written.read_text(encoding="utf-8"))


def test_max_lora_rank_rounds_up_to_what_vllm_accepts():
    assert [max_lora_rank([r]) for r in (1, 8, 12, 16, 33, 300)] == [8, 8, 16, 16, 64, 320]
    assert max_lora_rank([4, 40]) == 64
    with pytest.raises(ConfigError, match="up to 512"):
        max_lora_rank([1024])


def test_a_template_stop_token_the_model_does_not_list_is_added(tiny_qwen2, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen2, model)
    tok = AutoTokenizer.from_pretrained(model)
    eos, im_end = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    # a model whose EOS (tokenizer and generation config) is not the chatml end of turn
    tok.eos_token = "<|endoftext|>"
    gen = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": eos}))
    jinja = tmp_path / "chatml.jinja"
    launch = VllmLaunch(model=str(model), template="chatml", chat_template_file=str(jinja))
    cmd = build_vllm_command(launch, tokenizer=tok)
    assert json.loads(_flag(cmd, "--override-generation-config"))["eos_token_id"] == sorted({eos, im_end})
    assert _flag(cmd, "--chat-template") == str(jinja.resolve()) and jinja.is_file()
    # where the model already stops there, nothing is overridden
    cmd = build_vllm_command(VllmLaunch(model=str(tiny_qwen2), template="chatml", chat_template_file=str(jinja)))
    assert "eos_token_id" not in json.loads(_flag(cmd, "--override-generation-config"))


def test_the_base_alone_with_its_own_template_needs_no_file(tiny_qwen2, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = build_vllm_command(VllmLaunch(model=str(tiny_qwen2)))
    assert "--chat-template" not in cmd and "--enable-lora" not in cmd and not list(tmp_path.iterdir())


def test_print_vllm_command_from_the_cli(tiny_qwen2, two_adapters, capsys):
    args = ["serve", "--model", str(tiny_qwen2), "-a", f"libai={two_adapters['libai']}", "--port", "9000",
            "--api-key", "secret", "--print-vllm-command", "--vllm-args", "--max-model-len 2048"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "secret" not in line  # a key never goes on a command line: vLLM reads VLLM_API_KEY
    words = shlex.split(line)
    assert words[0] == 'VLLM_API_KEY=$TUNESMITH_API_KEY' and words[1:3] == ["vllm", "serve"]
    assert _flag(words, "--port") == "9000" and words[-2:] == ["--max-model-len", "2048"]


def test_adapters_with_different_templates_are_refused(tiny_qwen2, make_adapter, tmp_path, capsys):
    a = make_adapter(tiny_qwen2, seed=13, default_system="你是李白")
    b = make_adapter(tiny_qwen2, seed=14, template="plain")
    assert main(["serve", "--model", str(tiny_qwen2), "-a", f"a={a}", "-a", f"b={b}", "--print-vllm-command"]) == 2
    err = capsys.readouterr().err
    assert "different chat templates" in err and "one server per template" in err
    assert not (Path(a) / CHAT_TEMPLATE_FILE).exists()


@pytest.mark.parametrize("args, message", [
    (["--quantization", "8bit"], "4 bits only"),
    (["--dtype", "int4"], "--dtype"),
    (["--vllm-args", "'unclosed"], "--vllm-args"),
    (["--backend", "tgi"], "--backend"),
])
def test_bad_vllm_options_exit_2(tiny_qwen2, args, message, capsys):
    assert main(["serve", "--model", str(tiny_qwen2), "--print-vllm-command", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("vllm") is not None, reason="vLLM is installed here")
def test_backend_vllm_without_vllm_says_how_to_get_the_command(tiny_qwen2, capsys):
    assert main(["serve", "--model", str(tiny_qwen2), "--backend", "vllm"]) == 2
    assert "--print-vllm-command" in capsys.readouterr().err
