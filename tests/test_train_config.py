"""Training recipes: YAML + key=value overrides, typed by the config dataclass; user errors exit 2 cleanly."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.errors import ConfigError
from tunesmith.train.config import all_keys, key_help, load_config

REPO = Path(__file__).resolve().parents[1]
MINIMAL = "data:\n  train: data/train.jsonl\n"


def _recipe(tmp_path, text: str = MINIMAL) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("text,expected", [
    ("false", False), ("False", False), ("FALSE", False), ("0", False), ("no", False), ("off", False),
    ("true", True), ("True", True), ("1", True), ("yes", True), ("on", True),
])
def test_bool_overrides_parse_text_not_truthiness(tmp_path, text, expected):
    cfg = load_config(_recipe(tmp_path),
                      [f"data.packing={text}", f"gradient_checkpointing={text}", f"keep_best={text}"])
    assert cfg.data.packing is expected and cfg.gradient_checkpointing is expected and cfg.keep_best is expected


def test_bool_in_yaml_as_string_is_parsed_too(tmp_path):
    cfg = load_config(_recipe(tmp_path, MINIMAL + "gradient_checkpointing: 'False'\nkeep_best: 'no'\n"))
    assert cfg.gradient_checkpointing is False and cfg.keep_best is False


def test_bool_override_rejects_other_words(tmp_path):
    with pytest.raises(ConfigError, match=r"override data.packing=maybe: data.packing: expected true or false "
                                          r"\(got 'maybe'\)"):
        load_config(_recipe(tmp_path), ["data.packing=maybe"])


def test_values_take_the_field_type(tmp_path):
    # PyYAML reads 2e-4 as a string; a float field still gets a float
    cfg = load_config(_recipe(tmp_path, MINIMAL + "lr: 2e-4\nmax_steps: 100\n"),
                      ["lora.rank=16", "lora.alpha=32", "max_steps=null", "epochs=2",
                       "lora.target_modules=q_proj,v_proj",
                       "data.dev={path: d.jsonl, format: context-target}", "system=你是李白"])
    assert cfg.lr == 2e-4 and isinstance(cfg.lr, float)
    assert cfg.lora.rank == 16 and cfg.lora.alpha == 32.0 and cfg.max_steps is None and cfg.epochs == 2.0
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.dev == {"path": "d.jsonl", "format": "context-target"}
    assert cfg.system == "你是李白" and cfg.data.train == "data/train.jsonl"


def test_later_overrides_win_and_sections_take_mappings(tmp_path):
    cfg = load_config(_recipe(tmp_path), ["lr=1e-3", "lr=5e-4", "lora={rank: 4, dropout: 0.0}"])
    assert cfg.lr == 5e-4 and cfg.lora.rank == 4 and cfg.lora.dropout == 0.0


def test_unknown_key_names_it_and_close_matches(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_recipe(tmp_path), ["lora.rnak=4"])
    assert "unknown key 'lora.rnak'" in str(e.value) and "lora.rank" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(_recipe(tmp_path), ["learning_rate=1e-4"])
    assert "unknown key 'learning_rate'" in str(e.value) and "did you mean lr" in str(e.value)


def test_unknown_key_in_yaml_names_file_and_line(tmp_path):
    p = _recipe(tmp_path, MINIMAL + "lr: 1e-4\nlora:\n  rank: 8\n  alhpa: 16\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}:6: unknown key 'lora.alhpa'") and "lora.alpha" in str(e.value)


def test_bad_value_in_yaml_names_file_line_and_expectation(tmp_path):
    p = _recipe(tmp_path, MINIMAL + "batch_size: many\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: batch_size: expected an integer, got 'many'"):
        load_config(p)
    p = _recipe(tmp_path, MINIMAL + "scheduler: cosnie\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: scheduler: 'cosnie' is not one of cosine, linear, constant"):
        load_config(p)
    p = _recipe(tmp_path, MINIMAL + "loss_weighting: samples\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: loss_weighting: 'samples' is not one of token, sample"):
        load_config(p)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = _recipe(tmp_path, MINIMAL + "lr: 1e-4\nlora:\n  rank: [8\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}:") and "invalid YAML" in str(e.value)
    line = int(str(e.value).split(":")[1])
    assert line in (5, 6)


def test_missing_training_data_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.train: no training data given"):
        load_config(_recipe(tmp_path, "lr: 1e-4\n"))


def _documented_keys() -> list[str]:
    """The first column of the key table under "## Keys" in docs/training.md."""
    doc = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    section = doc.split("\n## Keys\n", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([\w.]+)` \|", section, flags=re.M)]


def test_the_docs_key_table_holds_every_key_once_and_no_stale_one():
    documented = _documented_keys()
    assert len(documented) == len(set(documented)), "keys listed twice in docs/training.md"
    missing = sorted(set(all_keys()) - set(documented))
    stale = sorted(set(documented) - set(all_keys()))
    assert not missing, f"keys not described in docs/training.md: {missing}"
    assert not stale, f"docs/training.md describes keys the config does not have: {stale}"


def test_every_config_field_has_help_and_train_help_lists_every_key(capsys):
    rows = key_help()
    assert [k for k, _, _ in rows] == sorted(all_keys(), key=lambda k: ("." in k, all_keys().index(k)))
    assert all(h.strip() for _, _, h in rows)
    assert main(["train", "--help"]) == 0
    shown = capsys.readouterr().out
    for key, default, _ in rows:
        assert re.search(rf"^\W*{re.escape(key)}\s+{re.escape(default)}\s", shown, flags=re.M), key


def test_train_help_does_not_import_the_training_stack():
    code = ("import sys; from tunesmith.train.commands import train; "
            "print(','.join(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml")))
def test_shipped_recipes_load_and_open_with_their_command(recipe):
    cfg = load_config(recipe)
    first = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# tunesmith train configs/" + recipe.name)
    assert cfg.data.train is not None


@pytest.mark.parametrize("argv,expected", [
    (["train", "{recipe}", "lora.rnak=4"], "unknown key 'lora.rnak'"),
    (["train", "{recipe}", "data.packing=perhaps"], "expected true or false"),
    (["train", "{bad_yaml}"], "invalid YAML"),
    (["train", "{recipe}", "lr"], "expected key=value"),
    (["train", "{missing}"], "no such config file"),
])
def test_cli_config_errors_exit_2_without_traceback(tmp_path, capsys, argv, expected):
    recipe = _recipe(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train: [x\n", encoding="utf-8")
    args = [a.format(recipe=recipe, bad_yaml=bad, missing=tmp_path / "nope.yaml") for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.startswith("error: ")


def test_cli_show_config_prints_resolved_values(tmp_path, capsys):
    assert main(["train", str(_recipe(tmp_path)), "lr=3e-4", "--resume", "-o", str(tmp_path / "run"),
                 "--show-config"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.0003" in out and "resume: true" in out and f"output_dir: {tmp_path / 'run'}" in out
