"""eval --sampler: greedy, each adapter's recommended sampler and named samplers as columns of one report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.errors import ConfigError
from tunesmith.eval.sampler_runs import Column, column_options, columns, parse_sampler, parse_samplers
from tunesmith.infer.options import GenerationOptions, save_generation


def test_sampler_specs_parse_with_commas_inside_values():
    assert parse_sampler("greedy").label == "greedy" and parse_sampler(" recommended ").changes == {}
    s = parse_sampler('dry=dry_multiplier=0.8, dry_sequence_breakers=["\\n", ",", "："],dry_allowed_length=4')
    assert s.label == "dry"
    assert s.changes == {"dry_multiplier": "0.8", "dry_sequence_breakers": '["\\n", ",", "："]',
                         "dry_allowed_length": "4"}
    opts = column_options(GenerationOptions(), Column("a @dry", "a", "dry", s.changes))
    assert opts.dry_sequence_breakers == ["\n", ",", "："] and opts.dry_allowed_length == 4


@pytest.mark.parametrize("spec,message", [
    ("hot", "expected greedy, recommended or NAME=key=value"),
    ("hot=", "expected greedy, recommended or NAME=key=value"),
    ("a b=temperature=1", "expected greedy, recommended or NAME=key=value"),
    ("greedy=temperature=1", "'greedy' is a built-in sampler"),
    ("hot=temperature", "'temperature' is not key=value"),
])
def test_bad_sampler_specs_name_the_value(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_sampler(spec)


def test_a_label_given_twice_is_refused_and_greedy_is_the_default():
    assert [s.label for s in parse_samplers(None)] == ["greedy"]
    with pytest.raises(ConfigError, match="hot given twice"):
        parse_samplers(["hot=temperature=1", "hot=temperature=2"])


def test_columns_recommended_only_where_an_adapter_has_one(tmp_path):
    with_rec, without = tmp_path / "a", tmp_path / "b"
    with_rec.mkdir(), without.mkdir()
    save_generation({"dry_multiplier": 0.8, "dry_allowed_length": 4, "max_new_tokens": 300}, with_rec)
    cols = columns(parse_samplers(["greedy", "recommended", "hot=do_sample=true,temperature=1.5"]),
                   ["base", "a", "b"], {"a": str(with_rec), "b": str(without)})
    assert [c.name for c in cols] == ["base", "a", "b", "a @recommended", "base @hot", "a @hot", "b @hot"]
    rec = next(c for c in cols if c.name == "a @recommended")
    assert rec.changes == {"dry_multiplier": 0.8, "dry_allowed_length": 4}  # the eval's answer length stays


def test_column_options_seed_a_sampling_sampler_and_name_a_bad_field():
    base = GenerationOptions(max_new_tokens=8)
    hot = column_options(base, Column("a @hot", "a", "hot", {"do_sample": "true", "temperature": "1.5"}))
    assert hot.sampling and hot.seed == 0 and hot.max_new_tokens == 8
    seeded = column_options(base, Column("a @hot", "a", "hot", {"do_sample": "true", "seed": "7"}))
    assert seeded.seed == 7
    assert column_options(base, Column("a", "a", "greedy")) is base
    with pytest.raises(ConfigError, match="--sampler 'hot': temperature: expected a number"):
        column_options(base, Column("a @hot", "a", "hot", {"temperature": "warm"}))
    with pytest.raises(ConfigError, match="--sampler 'hot': unknown generation option 'warmth'"):
        column_options(base, Column("a @hot", "a", "hot", {"warmth": "1"}))


@pytest.fixture(scope="module")
def rec_adapter(tiny_qwen2, make_adapter, tmp_path_factory) -> Path:
    """A random adapter that recommends a sampler no greedy decoding matches: no token twice in a reply."""
    folder = tmp_path_factory.mktemp("rec") / "adapter"
    shutil.copytree(make_adapter(tiny_qwen2, seed=3, template="chatml"), folder)
    save_generation({"no_repeat_ngram_size": 1}, folder)
    return folder


def _eval(model, adapter, data, out, *samplers):
    return main(["eval", "--model", str(model), "--adapter", f"rnd={adapter}", "--data", str(data), "--task",
                 "generic", "--max-new-tokens", "12", "--batch-size", "4", "-o", str(out),
                 *[a for s in samplers for a in ("--sampler", s)]])


def test_eval_answers_each_sampler_as_its_own_columns_and_reruns_reproduce(tiny_qwen2, rec_adapter, tmp_path):
    data = tmp_path / "t.jsonl"
    records = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "好的"}]}
               for q in ("你好", "你是谁", "今天天气如何", "写首诗")]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "report"
    assert _eval(tiny_qwen2, rec_adapter, data, out, "greedy", "recommended", "hot=do_sample=true,temperature=1.5") == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model_order"] == ["base", "rnd", "rnd @recommended", "base @hot", "rnd @hot"]
    assert metrics["models"]["rnd @recommended"]["sampler_fields"] == {"no_repeat_ngram_size": 1}
    assert metrics["models"]["rnd @hot"]["sampler"] == "hot" and metrics["models"]["rnd"]["sampler"] == "greedy"
    assert any("samplers: columns named 'MODEL @NAME'" in n for n in metrics["metric_notes"])
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = {(r["model"], r["id"]): r["prediction"] for r in rows}
    ids = sorted({r["id"] for r in rows})
    greedy = [answers["rnd", i] for i in ids]
    recommended = [answers["rnd @recommended", i] for i in ids]
    assert greedy != recommended  # the adapter's own sampler changed its answers
    # greedy tiny-model replies repeat tokens; under the recommended sampler none does
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    assert any(len(set(ids_)) < len(ids_) for ids_ in (tok(a, add_special_tokens=False)["input_ids"] for a in greedy))
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| rnd @recommended |" in md and "| base @hot |" in md

    # the same command again answers nothing new; from scratch, the seeded sampler gives the same answers
    before = len(rows)
    assert _eval(tiny_qwen2, rec_adapter, data, out, "greedy", "recommended", "hot=do_sample=true,temperature=1.5") == 0
    assert len((out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == before
    again = tmp_path / "again"
    assert _eval(tiny_qwen2, rec_adapter, data, again, "hot=do_sample=true,temperature=1.5") == 0
    rows2 = [json.loads(line) for line in (again / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {(r["model"], r["id"]): r["prediction"] for r in rows2} == \
        {k: v for k, v in answers.items() if k[0].endswith("@hot")}


def test_a_bad_sampler_fails_before_any_model_loads(tiny_qwen2, rec_adapter, tmp_path, capsys):
    data = tmp_path / "t.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
                    encoding="utf-8")
    assert _eval("does-not/exist-model", rec_adapter, data, tmp_path / "r", "hot=temperature=warm") == 2
    err = capsys.readouterr().err
    assert "--sampler 'hot': temperature: expected a number" in err and "Traceback" not in err
