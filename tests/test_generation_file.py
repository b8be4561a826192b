"""The recommended sampler travels with its adapter: a recipe's `generation:` key is checked at config load and
saved as generation.json by training; chat, serve and the web chat start from it, and a request's (or flag's)
own value always wins.  The samplers' request fields of the API: 400 naming the field, values reaching the engine,
and the X-Tunesmith-Batching header."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support import write_conversations
from tunesmith.cli import main
from tunesmith.conversation import Conversation
from tunesmith.errors import ConfigError
from tunesmith.infer.engine import Engine
from tunesmith.infer.options import GenerationOptions, save_generation
from tunesmith.infer.terminal import ChatState, run_chat
from tunesmith.serve.api import BATCHING_HEADER, create_app
from tunesmith.train import train_from_config
from tunesmith.train.config import load_config

RECOMMENDED = {"dry_multiplier": 0.8, "dry_allowed_length": 3, "min_p": 0.05}


@pytest.fixture(scope="module")
def trained_adapter(tiny_qwen2, tmp_path_factory) -> Path:
    """Two training steps on a tiny model with a `generation:` key."""
    d = tmp_path_factory.mktemp("generation-run")
    convs = [Conversation.single_turn(f"问题{i}", f"回答{i}。") for i in range(8)]
    data = write_conversations(d / "train.jsonl", convs)
    result = train_from_config({
        "model": str(tiny_qwen2), "output_dir": str(d / "run"), "dtype": "fp32", "batch_size": 4, "max_steps": 2,
        "warmup": 0, "device": "cpu", "plot": False, "logging_steps": 1, "data": {"train": str(data)},
        "generation": RECOMMENDED})
    return result.adapter_dir


def test_training_saves_the_recipes_sampler_next_to_the_adapter(trained_adapter):
    assert json.loads((trained_adapter / "generation.json").read_text()) == RECOMMENDED


def test_a_bad_generation_key_fails_at_config_load_with_its_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  train: x.jsonl\ngeneration:\n  dry_multiplier: 0.8\n  dry_base: 0.9\n")
    with pytest.raises(ConfigError, match=r"r.yaml:5: generation.dry_base: expected a number in \(1, 16\]"):
        load_config(recipe)
    recipe.write_text("data:\n  train: x.jsonl\ngeneration:\n  dry_multipler: 0.8\n")
    with pytest.raises(ConfigError, match="generation: unknown generation option 'dry_multipler'"):
        load_config(recipe)


@pytest.fixture(scope="module")
def engine(tiny_qwen2, libai_adapter, tmp_path_factory):
    """base, "libai" with a generation.json, "plain" without one."""
    folder = tmp_path_factory.mktemp("libai-generation") / "adapter"
    shutil.copytree(libai_adapter, folder)
    save_generation(RECOMMENDED, folder)
    eng = Engine.load(str(tiny_qwen2), {"libai": str(folder), "plain": str(libai_adapter)}, device="cpu")
    yield eng
    eng.close()


def test_the_engine_reads_each_adapters_sampler(engine):
    assert engine.generation_for("libai") == RECOMMENDED
    assert engine.generation_for("plain") == {} and engine.generation_for("base") == {}
    opts = engine.options_for("libai", GenerationOptions(max_new_tokens=8))
    assert (opts.dry_multiplier, opts.dry_allowed_length, opts.min_p, opts.max_new_tokens) == (0.8, 3, 0.05, 8)
    assert engine.options_for("base", GenerationOptions(max_new_tokens=8)) == GenerationOptions(max_new_tokens=8)


# -- serve --------------------------------------------------------------------------------------------
@pytest.fixture()
def api(engine, monkeypatch):
    """A TestClient and the options of every request that reached the engine."""
    seen: list[GenerationOptions] = []
    enqueue = engine.enqueue

    def spy(prompt, adapter, options, *args, **kwargs):
        seen.append(options)
        return enqueue(prompt, adapter, options, *args, **kwargs)

    monkeypatch.setattr(engine, "enqueue", spy)
    with TestClient(create_app(engine, ui=False, default_options=GenerationOptions(max_new_tokens=6))) as tc:
        yield tc, seen


def _ask(tc, **fields):
    return tc.post("/v1/chat/completions", json={"model": "libai", "messages": [{"role": "user", "content": "你好"}],
                                                 **fields})


def test_a_request_gets_the_adapters_sampler_unless_it_sets_the_field(api):
    tc, seen = api
    r = _ask(tc)
    assert r.status_code == 200
    assert (seen[-1].dry_multiplier, seen[-1].dry_allowed_length, seen[-1].min_p) == (0.8, 3, 0.05)
    assert r.headers[BATCHING_HEADER].startswith("padded (") and "DRY" in r.headers[BATCHING_HEADER]
    r = _ask(tc, dry_multiplier=0, min_p=0.2, dry_allowed_length=5)
    assert r.status_code == 200
    assert (seen[-1].dry_multiplier, seen[-1].dry_allowed_length, seen[-1].min_p) == (0.0, 5, 0.2)
    assert r.headers[BATCHING_HEADER] == "continuous"  # greedy without samplers: continuous batching
    assert tc.get("/v1/models/libai").json()["generation"] == RECOMMENDED
    assert "generation" not in tc.get("/v1/models/base").json()


def test_every_sampler_field_reaches_the_engine(api):
    tc, seen = api
    body = {"min_p": 0.1, "top_k": 7, "repetition_penalty": 1.05, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "no_repeat_ngram_size": 3, "dry_multiplier": 1.5, "dry_base": 2.0, "dry_allowed_length": 4,
            "dry_sequence_breakers": '["\\n", "「"]', "dry_range": 64, "dry_scope": "reply"}
    assert _ask(tc, model="base", **body).status_code == 200
    got = seen[-1]
    for name, value in body.items():
        want = ["\n", "「"] if name == "dry_sequence_breakers" else value
        assert getattr(got, name) == want, name
    assert _ask(tc, dry_sequence_breakers=["\n", "*"]).status_code == 200
    assert seen[-1].dry_sequence_breakers == ["\n", "*"]


@pytest.mark.parametrize("field, value", [
    ("min_p", 2), ("presence_penalty", 2.5), ("frequency_penalty", -3), ("no_repeat_ngram_size", -1),
    ("dry_multiplier", -1), ("dry_base", 1), ("dry_allowed_length", 0), ("dry_sequence_breakers", "[1, 2]"),
    ("dry_sequence_breakers", "[oops"), ("dry_range", -5), ("dry_scope", "prompt"),
])
def test_bad_sampler_fields_are_a_400_naming_the_field(api, field, value):
    r = _ask(api[0], **{field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["message"].startswith(f"{field}:")


# -- chat ---------------------------------------------------------------------------------------------
def test_chat_answers_with_the_adapters_sampler_and_set_wins(engine):
    state = ChatState(adapter="libai", options=GenerationOptions(max_new_tokens=4))
    out = io.StringIO()
    run_chat(engine, state, io.StringIO("/set\n/set min_p=0.3\n/adapter plain\n/set\n"), out)
    lines = [line for line in out.getvalue().splitlines() if "dry_multiplier=" in line]
    assert "dry_multiplier=0.8" in lines[0] and "min_p=0.05" in lines[0] and "dry_allowed_length=3" in lines[0]
    assert "min_p=0.3" in lines[1] and "dry_multiplier=0.8" in lines[1]  # /set wins, the rest stays recommended
    assert "dry_multiplier=0.0" in lines[2] and "min_p=0.3" in lines[2]  # "plain" has no generation.json


def test_chat_flags_given_win_and_defaults_give_way(tiny_qwen2, trained_adapter, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("/set\n/exit\n"))
    assert main(["chat", "--model", str(tiny_qwen2), "-a", f"r={trained_adapter}", "--device", "cpu",
                 "--max-new-tokens", "4", "--dry-allowed-length", "2", "--dry-sequence-breakers", "\\n|「"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "dry_multiplier=" in x)
    # dry_multiplier and min_p from generation.json (the flags were not given), dry_allowed_length from the flag
    assert "dry_multiplier=0.8" in line and "min_p=0.05" in line and "dry_allowed_length=2" in line
    assert "dry_sequence_breakers=['\\n', '「']" in line


# -- the web chat --------------------------------------------------------------------------------------
def test_web_chat_controls_start_at_the_adapters_sampler(engine):
    from tunesmith.serve.webui import ANTI_REPETITION, SAMPLING_FIELDS, build_chat_ui, options_from, sampler_values

    names = [*SAMPLING_FIELDS, *ANTI_REPETITION]
    d = GenerationOptions(max_new_tokens=6)
    values = dict(zip(names, sampler_values(engine, "libai", d)))
    assert (values["dry_multiplier"], values["dry_allowed_length"], values["min_p"]) == (0.8, 3, 0.05)
    assert dict(zip(names, sampler_values(engine, "plain", d)))["dry_multiplier"] == 0.0
    # the controls' values, changed by hand, are what the reply is generated with (sliders hand back floats)
    changed = {**values, "dry_multiplier": 1.2, "no_repeat_ngram_size": 3.0}
    opts = options_from(engine, "libai", d, 6.0, [changed[n] for n in names])
    assert (opts.dry_multiplier, opts.no_repeat_ngram_size, opts.dry_allowed_length) == (1.2, 3, 3)
    # the page opens on the first adapter, "libai": its DRY slider starts at the recommended value
    config = build_chat_ui(engine, d).config
    slider = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "dry-multiplier")
    assert slider["props"]["value"] == 0.8


def _tab_handler(engine, d, qualname: str):
    from tunesmith.serve.webui import build_chat_ui

    demo = build_chat_ui(engine, d)
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, "__qualname__", "") == qualname)


def test_side_by_side_and_scene_answer_with_each_adapters_sampler(api, engine):
    _, seen = api  # the spy on engine.enqueue
    d = GenerationOptions(max_new_tokens=6)
    send = _tab_handler(engine, d, "build_compare_tab.<locals>.send")
    for _ in send("你好", ["base", "libai", "plain"], "", 5, False, 0.7, [], [], []):
        pass
    assert len(seen) == 3
    by_dry = sorted((o.dry_multiplier, o.dry_allowed_length, o.min_p, o.max_new_tokens) for o in seen)
    # libai's generation.json, the others plain greedy; the tab's max-new-tokens control for all three
    assert by_dry == [(0.0, 2, 0.0, 5), (0.0, 2, 0.0, 5), (0.8, 3, 0.05, 5)]
    scene = _tab_handler(engine, d, "build_scene_tab.<locals>.send")
    seen.clear()
    for _ in scene("你好", [], ["libai", "plain"], "User", "libai", "", False, 0.7, 4):
        pass
    assert [(o.dry_multiplier, o.min_p, o.max_new_tokens) for o in seen] == [(0.8, 0.05, 4)]
    seen.clear()
    for _ in scene("你好", [], ["libai", "plain"], "User", "plain", "", False, 0.7, 4):
        pass
    assert [(o.dry_multiplier, o.max_new_tokens) for o in seen] == [(0.0, 4)]


# -- the shipped recipes and the demo ------------------------------------------------------------------
def test_role_play_recipes_and_the_demo_recommend_a_sampler_and_ie_stays_greedy(monkeypatch, tmp_path):
    from tunesmith.demo import demo_train_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    monkeypatch.chdir(configs.parent)
    for name in ("rolebench_libai.yaml", "sanguo_cosplay.yaml"):
        generation = load_config(configs / name).generation
        assert generation and generation["dry_multiplier"] > 0, name
        assert generation.get("repetition_penalty", 1.0) == 1.0, name  # per-token penalties wreck Chinese
    assert load_config(configs / "ie_cls.yaml").generation is None  # strict formats: greedy, nothing else
    data = {"train": "train.jsonl", "dev": "dev.jsonl"}
    demo = demo_train_config(data, tmp_path, "default", 60, "cpu", "fp32")
    assert demo["generation"] == load_config(configs / "rolebench_libai.yaml").generation
