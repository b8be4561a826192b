"""Datasets -> Conversations: importers, writers, a name registry, validation, stats and splits.

    from tunesmith.data import load, save, resolve_dataset
    convs = load("datasets/rolebench-zh/general/train.jsonl", "rolebench")
    save(convs, "out/train.jsonl")                          # our JSONL; or save(convs, path, "sharegpt")
    convs = resolve_dataset({"name": "train", "data_dir": "data/libai"}, purpose="train")

Every module here imports only the standard library at top level (the CLI must start fast).
See docs/data.md for the formats and commands.
"""

from tunesmith.data.formats import FORMATS, detect_format, get_format, load, save, to_records
from tunesmith.data.registry import load_dataset_by_name, read_dataset_info, register_dataset, resolve_dataset
from tunesmith.data.rolebench import persona_for, persona_prompt
from tunesmith.data.rolebench import prepare as rolebench_prepare
from tunesmith.data.split import split_conversations
from tunesmith.data.stats import dataset_stats

__all__ = [
    "FORMATS", "detect_format", "get_format", "load", "save", "to_records",
    "load_dataset_by_name", "read_dataset_info", "register_dataset", "resolve_dataset",
    "persona_for", "persona_prompt", "rolebench_prepare", "split_conversations", "dataset_stats",
]
