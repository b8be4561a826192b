"""`--adapter NAME=PATH`: one parser and one rule for bare paths in chat, serve, eval and label."""

from __future__ import annotations

import pytest

from tunesmith.adapter_spec import parse_adapter_specs, parse_name_path
from tunesmith.cli import main
from tunesmith.errors import ConfigError


def test_names_and_bare_paths():
    assert (parse_adapter_specs(["libai=runs/a", " cls = runs/cls ", "runs/sanguo/adapter", "runs/ie-v2/"])
            == {"libai": "runs/a", "cls": "runs/cls", "sanguo": "runs/sanguo/adapter", "ie-v2": "runs/ie-v2/"})
    assert parse_adapter_specs(None) == {}
    assert parse_adapter_specs(["李白=runs/libai/adapter"]) == {"李白": "runs/libai/adapter"}


@pytest.mark.parametrize("spec, message", [
    (["=runs/x"], "expected NAME=PATH with a non-empty name"),
    (["a="], "expected NAME=PATH with a non-empty name"),
    (["base=runs/x"], "not 'base'"),
    (["runs/base"], "not 'base'"),
    (["a b=runs/x"], "expected letters"),
    (["a=x", "a=y"], "given twice"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_adapter_specs(spec)


def test_other_flags_can_refuse_bare_paths():
    assert parse_name_path("gpt=answers.jsonl", "--score-file") == ("gpt", "answers.jsonl")
    with pytest.raises(ConfigError, match="--score-file 'answers.jsonl': expected NAME=PATH"):
        parse_name_path("answers.jsonl", "--score-file")


@pytest.mark.parametrize("command", [["chat"], ["serve"], ["eval", "--data", "x.jsonl", "-o", "out"], ["label", "."]])
def test_every_command_reads_adapters_the_same_way(command, capsys):
    """The same bad name is refused with the same message by every command, before a model is loaded."""
    assert main([*command, "--adapter", "base=runs/x"]) == 2
    assert "--adapter name 'base': expected letters" in capsys.readouterr().err
