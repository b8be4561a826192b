"""`tunesmith data make-pairs` on the tiny Qwen2: chosen = the reference, rejected = the engine's greedy answer,
equal answers skipped, resumable after an interruption or a torn last line, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import write_conversations
from tunesmith.adapter_spec import parse_adapter_specs
from tunesmith.cli import main
from tunesmith.conversation import Conversation, Message
from tunesmith.data import load
from tunesmith.data.make_pairs import MakePairsConfig, make_pairs
from tunesmith.infer.options import GenerationOptions
from tunesmith.preference import PAIR, kind_of_dataset, rejected

TOKENS = 8
GREEDY = GenerationOptions(max_new_tokens=TOKENS, do_sample=False)
QUESTIONS = ["你是谁？", "饮酒否？", "作诗一首", "家在何处？", "月亮呢？", "何为侠？", "剑在何方？", "山高几许？",
             "水深几何？", "风从何来？"]


def _convs() -> list[Conversation]:
    out = [Conversation([Message("user", q), Message("assistant", f"吾乃李白，答{i}。")],
                        system="你是李白" if i % 2 else None, meta={"role": "李白", "n": i})
           for i, q in enumerate(QUESTIONS)]
    # a multi-turn conversation: the prompt is everything before the final answer
    out.append(Conversation([Message("user", "你好"), Message("assistant", "幸会。"), Message("user", "再饮一杯？"),
                             Message("assistant", "与尔同销万古愁。")], meta={"role": "李白"}))
    return out



@pytest.fixture(scope="module")
def setup(tiny_qwen2, libai_adapter, tmp_path_factory):
    """The data (one reference set to the model's own greedy answer, so it must be skipped) and an engine named
    as make-pairs names the adapter (after its folder)."""
    from tunesmith.infer.engine import Engine

    name = next(iter(parse_adapter_specs([str(libai_adapter)])))
    engine = Engine.load(str(tiny_qwen2), {name: str(libai_adapter)}, device="cpu")
    convs = _convs()
    same = convs[2]
    own = engine.generate([(same.system, same.messages[:-1])], adapter=name, options=GREEDY, batch_size=1)[0]
    assert own.strip()
    same.messages[-1] = Message("assistant", own)
    data = write_conversations(tmp_path_factory.mktemp("mp-data") / "libai.jsonl", convs)
    yield {"engine": engine, "name": name, "data": data, "convs": convs, "model": tiny_qwen2,
           "adapter": libai_adapter}
    engine.close()


def _cli(setup, out: Path, *extra: str) -> list[str]:
    return ["data", "make-pairs", str(setup["data"]), "-o", str(out), "--model", str(setup["model"]),
            "--adapter", str(setup["adapter"]), "--device", "cpu", "--dtype", "fp32", "--batch-size", "4",
            "--max-new-tokens", str(TOKENS), *extra]


@pytest.fixture(scope="module")
def one_run(setup, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("mp-one") / "pairs.jsonl"
    assert main(_cli(setup, out)) == 0
    return out.read_bytes()


def test_chosen_is_the_reference_and_rejected_the_engines_greedy_answer(setup, one_run, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    out.write_bytes(one_run)
    pairs = load(out)
    assert kind_of_dataset(pairs) == PAIR
    convs = setup["convs"]
    expected = setup["engine"].generate([(c.system, c.messages[:-1]) for c in convs], adapter=setup["name"],
                                        options=GREEDY, batch_size=4)
    kept = [(c, e) for i, (c, e) in enumerate(zip(convs, expected)) if i != 2]  # #2 answers its own reference
    assert len(pairs) == len(kept) == 10
    for pair, (conv, answer) in zip(pairs, kept):  # in the data's order
        assert pair.messages[:-1] == conv.messages[:-1] and pair.system == conv.system
        assert pair.answer == conv.answer and rejected(pair) == answer
        assert pair.meta["role"] == "李白" and len(pair.meta["prompt_id"]) == 16
    assert pairs[-1].messages[1] == Message("assistant", "幸会。")  # the multi-turn prompt kept its history
    # the summary counts what was written and skipped; a rerun asks again only the prompt whose answer was
    # skipped (it left nothing in the file), and changes nothing
    assert main(_cli(setup, out)) == 0
    printed = capsys.readouterr()
    assert "wrote 10 pair(s)" in printed.out and "1 skipped: the model's answer equals the reference" in printed.out
    assert "10 resumed" in printed.out and "1/1 prompts answered" in printed.err
    assert out.read_bytes() == one_run


def test_the_base_model_answers_without_adapter(setup, one_run, tmp_path):
    data = write_conversations(tmp_path / "few.jsonl", setup["convs"][:3])
    out = tmp_path / "base.jsonl"
    assert main(["data", "make-pairs", str(data), "-o", str(out), "--model", str(setup["model"]), "--device", "cpu",
                 "--dtype", "fp32", "--max-new-tokens", str(TOKENS)]) == 0
    convs = setup["convs"][:3]
    base = setup["engine"].generate([(c.system, c.messages[:-1]) for c in convs], options=GREEDY)
    by_prompt = {c.messages[0].content: b for c, b in zip(convs, base)}
    pairs = load(out)
    assert pairs and all(rejected(p) == by_prompt[p.messages[0].content] for p in pairs)
    # what made the rejected answers is recorded: the base's pairs are not the adapter's
    adapter_made_by = json.loads(one_run.split(b"\n")[0])["meta"]["made_by"]
    assert {p.meta["made_by"] for p in pairs} == {pairs[0].meta["made_by"]} != {adapter_made_by}


def test_limit_then_full_run_gives_the_file_of_one_run(setup, one_run, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(_cli(setup, out, "--limit", "5")) == 0
    assert len(load(out)) == 4  # 5 conversations, one answers its own reference
    capsys.readouterr()
    assert main(_cli(setup, out)) == 0
    assert "4 resumed" in capsys.readouterr().out
    assert out.read_bytes() == one_run


def test_a_torn_last_line_is_dropped_with_a_note_and_the_run_continues(setup, one_run, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    lines = one_run.split(b"\n")
    out.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][: len(lines[3]) // 2])  # killed mid-write
    assert main(_cli(setup, out)) == 0
    printed = capsys.readouterr()
    assert f"{out}:4: dropped a torn last line" in printed.err and "3 resumed" in printed.out
    assert out.read_bytes() == one_run


def test_an_interrupted_run_keeps_every_finished_batch(setup, one_run, tmp_path):
    """Killed during the third batch: the first two batches are on disk as valid JSONL; a rerun finishes."""

    class Dying:
        def __init__(self, engine):
            self.engine, self.calls = engine, 0

        def template_for(self, adapter):
            return self.engine.template_for(adapter)

        def merge(self, adapter):
            return self.engine.merge(adapter)

        def unmerge(self):
            self.engine.unmerge()

        def generate(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.engine.generate(*args, **kwargs)

    out = tmp_path / "pairs.jsonl"
    cfg = MakePairsConfig(data=setup["data"], out=out, model=str(setup["model"]), adapter=str(setup["adapter"]),
                          batch_size=4, max_new_tokens=TOKENS, dtype="fp32", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        make_pairs(cfg, engine=Dying(setup["engine"]))
    saved = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert 6 <= len(saved) <= 8  # two batches of 4 prompts, less any answer equal to its reference
    rep = make_pairs(cfg, engine=setup["engine"])
    assert rep.resumed == len(saved) and rep.generated == len(QUESTIONS) + 1 - 8
    assert out.read_bytes() == one_run


def test_other_settings_are_refused_not_mixed(setup, one_run, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    out.write_bytes(one_run)
    assert main(_cli(setup, out, "--max-new-tokens", "4")) == 2
    assert "made with other settings" in capsys.readouterr().err and out.read_bytes() == one_run
    lines = one_run.split(b"\n")
    out.write_bytes(lines[0] + b"\n{broken\n" + b"\n".join(lines[1:]))
    assert main(_cli(setup, out)) == 2
    err = capsys.readouterr().err
    assert f"{out}:2: not valid JSON" in err and "Traceback" not in err


def test_errors_exit_2_with_a_clear_message_and_write_nothing(setup, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
                   '{"messages": 3}\n', encoding="utf-8")
    open_end = write_conversations(tmp_path / "open.jsonl", [Conversation([Message("user", "只有问题")])])
    cases = [
        (["--model", str(tmp_path / "no-model")], "no-model"),
        (["--adapter", str(tmp_path / "no-adapter")], "not a LoRA adapter folder"),
        (["--data", str(bad)], "bad.jsonl:2"),
        (["--data", str(open_end)], "open.jsonl conversation 1: must end with the assistant's reference answer"),
        (["--data", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["--batch-size", "0"], "--batch-size: expected an integer >= 1"),
    ]
    for change, message in cases:
        args = _cli(setup, out)
        flag, value = change
        if flag == "--data":
            args[2] = value
        else:
            args[args.index(flag) + 1] = value
        assert main(args) == 2, change
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (change, err)
        assert not out.exists()


def test_nothing_but_equal_answers_is_an_error_and_writes_nothing(setup, tmp_path, capsys):
    data = write_conversations(tmp_path / "same.jsonl", [setup["convs"][2]])  # its reference is the model's own answer
    out = tmp_path / "out.jsonl"
    assert main(_cli(setup, out)[:2] + [str(data)] + _cli(setup, out)[3:]) == 2
    err = capsys.readouterr().err
    assert "no pairs to write" in err and "1 equal" in err and not out.exists()
