"""Datasets -> Conversations: importers, writers, a name registry, validation, stats and splits.

    from tunesmith.data import load, save, resolve_dataset
    convs = load("datasets/rolebench-zh/general/train.jsonl", "rolebench")
    save(convs, "out/train.jsonl")                          # our JSONL; or save(convs, path, "sharegpt")
    convs = resolve_dataset({"name": "train", "data_dir": "data/libai"}, purpose="train")

Layers, each importing only those below it (no module imports one above it, not even inside a function):

    fields, records, encoding, format   typed fields, strict JSON reading, text decoding, the Format contract
    alpaca, sharegpt, messages, trl, card, ... one module per format, each exporting one FORMAT
    formats                             the table FORMATS built from those modules; load / save
    registry, split, stats              dataset_info.json by name, train/dev splits, what is in a dataset
    rolebench                           rolebench-prepare (reads, splits, writes and registers files)
    commands                            `tunesmith data ...`

Adding a format: write one module that exports
`FORMAT = Format(name, record, converter, export, detect, options)` (see tunesmith.data.format and
alpaca.py for a small complete one), add the module to `FORMAT_MODULES` in tunesmith.data.formats, and
write one test that loads a sample and, when the format is writable, writes it back. Everything else
(`--from`/`--to`, detection, `tunesmith data formats`, the registry's `formatting`) follows from the table.

Modules here import only the standard library at top level, except the dialogue miner (tunesmith.data.novel),
which is imported where a novel is read (the CLI must start fast). See docs/data.md for the formats and commands.
"""

from tunesmith.data.formats import FORMATS, detect_format, get_format, load, save, to_records
from tunesmith.data.registry import load_dataset_by_name, read_dataset_info, register_dataset, resolve_dataset
from tunesmith.data.rolebench import prepare as rolebench_prepare
from tunesmith.data.rolebench_format import persona_for, persona_prompt
from tunesmith.data.split import split_conversations
from tunesmith.data.stats import dataset_stats

__all__ = [
    "FORMATS", "detect_format", "get_format", "load", "save", "to_records",
    "load_dataset_by_name", "read_dataset_info", "register_dataset", "resolve_dataset",
    "persona_for", "persona_prompt", "rolebench_prepare", "split_conversations", "dataset_stats",
]
