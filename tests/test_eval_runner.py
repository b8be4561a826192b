"""The eval runner's phases that need no model: settings checks, set order, metric notes."""

from __future__ import annotations

import pytest

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError
from tunesmith.eval.runner import EvalConfig, EvalInputs, check_config, metric_notes, set_order_of
from tunesmith.eval.testset import CUS, PROBE, RAW, SPE, EvalItem


@pytest.mark.parametrize("change,message", [
    ({"batching": "sometimes"}, "--batching: expected one of"),
    ({"batch_size": 0}, "--batch-size: expected an integer >= 1"),
    ({"threads": 0}, "--threads: expected an integer >= 1"),
    ({"limit": 0}, "--limit: expected an integer >= 1"),
    ({"adapters": {"base": "x"}}, "--adapter name 'base' is reserved"),
])
def test_settings_no_phase_can_run_with_are_config_errors(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        check_config(EvalConfig(out=tmp_path, data=["x.jsonl"], **change))


def _item(set_: str, kind: str = "rouge") -> EvalItem:
    return EvalItem(f"{set_}-1", set_, None, [Message("user", "q")], ["a"], kind, {})


def _inputs(items, *, raw_table=None, use_probe=False, task="rolebench") -> EvalInputs:
    return EvalInputs(task=task, items=items, options=None, probe_options=None, raw_table=raw_table,
                      score_tables={}, run_models=["base"], use_probe=use_probe, persona="你是李白")


def test_sets_are_ordered_cus_spe_raw_others_probe_last():
    items = [_item("other"), _item(SPE), _item(CUS), _item(PROBE, "probe")]
    assert set_order_of(_inputs(items, raw_table={}, use_probe=True)) == [CUS, SPE, RAW, "other", PROBE]
    assert set_order_of(_inputs(items[:3])) == [CUS, SPE, "other"]


def test_metric_notes_name_what_is_missing():
    notes = metric_notes(_inputs([_item(CUS)]))
    assert any(n.startswith("ROUGE-L F") for n in notes)
    assert any("RAW not computed (no --raw-refs given)" in n for n in notes)
    assert any(n.startswith("probe: 1 plain questions") for n in
               metric_notes(_inputs([_item(CUS), _item(PROBE, "probe")], use_probe=True)))
