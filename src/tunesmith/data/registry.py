"""Datasets by name: LLaMA-Factory's `dataset_info.json`, plus one resolver for recipes.

    from tunesmith.data import load_dataset_by_name, resolve_dataset
    convs = load_dataset_by_name("alpaca_zh_demo", "LLaMA-Factory/data")     # an existing LLaMA-Factory folder
    convs = resolve_dataset({"name": "train", "data_dir": "data/libai"})
    convs = resolve_dataset({"path": "datasets/chatglm-mixed-ie-cls/mixed_train_dataset.jsonl",
                             "format": "context-target"}, purpose="train")

    tunesmith data register my_ie ie/train.jsonl --formatting context-target --data-dir data

A `dataset_info.json` entry, as LLaMA-Factory reads it:
    "name": {"file_name": "file.json or folder", "formatting": "alpaca" | "sharegpt" | "openai",
             "columns": {"prompt": "instruction", "query": "input", "response": "output",
                         "history": "history", "system": "system", "messages": "conversations"},
             "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                      "assistant_tag": "gpt", "system_tag": "system"},
             "num_samples": 1000}
A preference entry adds `"ranking": true`; its records carry `chosen` and `rejected` (alpaca: strings
instead of `output`; sharegpt: one answer turn each after turns that end with the question), renamed under
`columns` as LLaMA-Factory does, and load as pairs (tunesmith.preference).
Defaults follow LLaMA-Factory exactly (so the same folder gives the same conversations): for alpaca the
system and history columns are read only when `columns` maps them. Our own formats are accepted as
`"formatting": "rolebench" | "context-target" | "novel-dialogue" | "conversation" | "messages"` with
importer options under `"options"` (LLaMA-Factory itself will not read those entries).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data.formats import FORMATS, detect_format, get_format, load
from tunesmith.data.records import JsonShapeError, expand_paths, read_records, read_text, strict_loads
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write

DATA_CONFIG = "dataset_info.json"
LF_FORMATTINGS = ("alpaca", "sharegpt", "openai")
# LLaMA-Factory defaults (parser.DatasetAttr): system/history only when mapped.
LF_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": None, "history": None}
LF_SHAREGPT_COLUMNS = {"messages": "conversations", "system": None, "tools": None}
LF_OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                  "system_tag": "system", "observation_tag": "tool", "function_tag": "function"}
LF_RANKING_COLUMNS = ("chosen", "rejected")
# Our formats whose records can be pairs: an entry marked "ranking" may name them.
PAIR_FORMATS = ("trl", "conversation")
LOAD_KEYS = ("on_error", "encoding", "roles", "limit")
# Our formats' names as Python spells them (context_target), which an entry may use besides the real ones.
_UNDERSCORE_NAMES = frozenset(n.replace("-", "_") for n in FORMATS if "-" in n)


def read_dataset_info(data_dir: str | os.PathLike) -> dict[str, dict]:
    """The parsed dataset_info.json of a folder (DataError naming the file when missing or malformed)."""
    d = Path(data_dir)
    p = d / DATA_CONFIG
    if not d.is_dir():
        raise DataError(f"data folder not found (expected a folder holding {DATA_CONFIG})", str(d))
    if not p.is_file():
        raise DataError(f"no {DATA_CONFIG} in this folder (expected a LLaMA-Factory style registry; "
                        "create one with: tunesmith data register NAME FILE --data-dir " + str(d) + ")", str(d))
    text = read_text(p)
    try:
        info = strict_loads(text)
    except JsonShapeError as e:  # a name registered twice: the last entry would win silently
        line = text.count("\n", 0, e.pos) + 1
        raise DataError(e.msg, f"{p}:{line}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} (expected an object of dataset entries)", f"{p}:{e.lineno}") from None
    if not isinstance(info, dict):
        raise DataError("expected a JSON object {name: {file_name, formatting, ...}}", str(p))
    return info


def _entry(name: str, data_dir: Path) -> dict:
    info = read_dataset_info(data_dir)
    if name not in info:
        known = ", ".join(sorted(info)) or "none"
        raise DataError(f"dataset {name!r} is not registered (known: {known})", str(data_dir / DATA_CONFIG))
    entry = info[name]
    where = f"{data_dir / DATA_CONFIG}: {name}"
    if not isinstance(entry, dict):
        raise DataError("entry must be an object with file_name and formatting", where)
    for remote in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"):
        if remote in entry and "file_name" not in entry:
            raise DataError(f"entry uses {remote}; only local files are read "
                            "(download the data and set \"file_name\")", where)
    if "file_name" not in entry:
        raise DataError('entry has no "file_name" (expected a file or folder relative to the data folder)', where)
    if not isinstance(entry.get("ranking", False), bool):
        raise DataError(f'"ranking" must be true or false (got {entry["ranking"]!r})', where)
    return entry


def entry_load_args(name: str, data_dir: str | os.PathLike) -> tuple[list[Path], str, dict[str, Any], int | None]:
    """(files, format, importer options, num_samples) for a registered name."""
    d = Path(data_dir)
    entry = _entry(name, d)
    where = f"{d / DATA_CONFIG}: {name}"
    target = d / entry["file_name"]
    if not target.exists():
        raise DataError(f'file_name {entry["file_name"]!r} not found in {d}', where)
    files = expand_paths(target)
    formatting = entry.get("formatting", "alpaca")
    columns = entry.get("columns") or {}
    tags = entry.get("tags") or {}
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise DataError('"columns" and "tags" must be objects', where)
    opts: dict[str, Any] = dict(entry.get("options") or {})
    ranking = entry.get("ranking", False)
    # A ranking entry's answers: LLaMA-Factory's chosen/rejected columns (named so by default here).
    answers = {k: columns.get(k) or k for k in LF_RANKING_COLUMNS} if ranking else {}
    if formatting == "alpaca":
        fmt = "alpaca"
        opts["columns"] = {**LF_ALPACA_COLUMNS, **{k: v for k, v in columns.items() if k in LF_ALPACA_COLUMNS},
                           **answers}
    elif formatting in ("sharegpt", "openai"):
        fmt = "sharegpt"
        base_tags = dict(LF_OPENAI_TAGS) if formatting == "openai" else {}
        cols = dict(LF_SHAREGPT_COLUMNS)
        if formatting == "openai":
            cols["messages"] = "messages"
        cols.update({k: v for k, v in columns.items() if k in LF_SHAREGPT_COLUMNS})
        opts["columns"] = {**cols, **answers}
        opts["tags"] = {**base_tags, **tags}
    elif formatting in FORMATS or formatting in _UNDERSCORE_NAMES:
        fmt = get_format(formatting).name
        if ranking and fmt not in PAIR_FORMATS:
            raise DataError(f'"ranking": true is read for alpaca, sharegpt and openai entries (and {fmt!r} holds no '
                            f'pairs; expected formatting {" or ".join(PAIR_FORMATS)} for files of pairs)', where)
        ranking = False  # our own formats know their kind from the records
    else:
        raise DataError(f'formatting {formatting!r} unknown (expected {", ".join(LF_FORMATTINGS)} or one of '
                        f'{", ".join(FORMATS)})', where)
    if ranking:
        opts["ranking"] = True
    num = entry.get("num_samples")
    if num is not None and (not isinstance(num, int) or num < 1):
        raise DataError(f"num_samples must be a positive integer (got {num!r})", where)
    return files, fmt, opts, num


def load_dataset_by_name(name: str, data_dir: str | os.PathLike = "data", *, on_error: str = "fail",
                         **load_kwargs: Any) -> list[Conversation]:
    """Load a dataset registered in DATA_DIR/dataset_info.json (LLaMA-Factory layout).

    num_samples keeps the first N conversations (LLaMA-Factory samples N at random; first-N is reproducible).
    """
    files, fmt, opts, num = entry_load_args(name, data_dir)
    opts.update(load_kwargs)
    if num is not None and "limit" not in opts:
        opts["limit"] = num
    return load(files, fmt, on_error=on_error, **opts)


def register_dataset(name: str, file_name: str | os.PathLike, data_dir: str | os.PathLike = "data", *,
                     formatting: str | None = None, columns: dict | None = None, tags: dict | None = None,
                     options: dict | None = None, ranking: bool = False, force: bool = False) -> dict:
    """Add (or with force=True replace) an entry in DATA_DIR/dataset_info.json and return it.

    file_name is stored relative to data_dir when the file lies inside it. formatting=None detects it
    from the file's first record (OpenAI messages are registered as sharegpt with role/content tags,
    which LLaMA-Factory reads too; an alpaca or sharegpt record with "chosen" and "rejected" as a
    ranking entry). ranking=True marks LLaMA-Factory preference data ("ranking": true).
    """
    if not name or not isinstance(name, str):
        raise ConfigError("dataset name must be a non-empty string")
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    f = Path(file_name)
    target = f if f.is_absolute() or f.exists() else d / f
    if not target.exists():
        raise DataError("file not found (expected a data file or folder, absolute or relative to the data folder)",
                        str(file_name))
    try:
        rel = os.path.relpath(target.resolve(), d.resolve())
        stored = rel if not rel.startswith("..") else str(target.resolve())
    except ValueError:  # different drives on Windows
        stored = str(target.resolve())
    entry: dict[str, Any] = {"file_name": stored}
    if formatting is None:
        first_file = expand_paths(target)[0]
        where, rec = next(read_records(first_file))
        formatting = detect_format(rec, where)
        if isinstance(rec, dict) and "chosen" in rec and "rejected" in rec:
            # LLaMA-Factory's ranking records look like TRL's pairs plus their prompt columns.
            lf = "alpaca" if "instruction" in rec else "sharegpt" if "conversations" in rec else None
            if lf:
                formatting, ranking = lf, True
    if formatting == "messages" and not tags:
        formatting = "sharegpt"
        columns = {"messages": "messages", **(columns or {})}
        tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "system_tag": "system"}
    if formatting not in LF_FORMATTINGS:
        formatting = get_format(formatting).name
        if formatting not in FORMATS:  # pragma: no cover
            raise ConfigError(f"unknown formatting {formatting!r}")
    entry["formatting"] = formatting
    if ranking:
        entry["ranking"] = True
    if columns:
        entry["columns"] = dict(columns)
    if tags:
        entry["tags"] = dict(tags)
    if options:
        entry["options"] = dict(options)
    p = d / DATA_CONFIG
    info = read_dataset_info(d) if p.is_file() else {}
    if name in info and not force and info[name] != entry:
        raise ConfigError(f"dataset {name!r} is already registered in {p} (pass --force to replace it)")
    info[name] = entry
    atomic_write(p, json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    # Check that what we registered actually loads, so a bad entry is caught now, not at training time.
    entry_load_args(name, d)
    return entry


def resolve_dataset(spec: Any, data_dir: str | os.PathLike | None = None, *,
                    purpose: str | None = None) -> list[Conversation]:
    """Conversations for a recipe's dataset reference.

    spec is one of
      {"path": FILE|FOLDER|GLOB|[...], "format": NAME (optional: detected), ...importer options}
      {"name": NAME, "data_dir": DIR (default: the data_dir argument, else "data")}
      a string: an existing path (format detected) or a registered name
      a list of these (concatenated in order)
    Common keys for both: on_error (fail|skip), roles ([names] or one name), limit, encoding,
    allow_test (see purpose).
    purpose="train" refuses conversations whose meta.split is "test" (RoleBench test data is for
    evaluation only) unless the spec says allow_test: true.
    """
    if isinstance(spec, list):
        out: list[Conversation] = []
        for s in spec:
            out.extend(resolve_dataset(s, data_dir, purpose=purpose))
        return out
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        # A registry name has no folder separators and no data-file suffix; anything else is a path
        # (so a mistyped path says "file not found" instead of "not registered").
        looks_like_path = "/" in s or os.sep in s or s.endswith((".json", ".jsonl"))
        if Path(s).exists() or looks_like_path or any(c in s for c in "*?["):
            spec = {"path": s}
        else:
            spec = {"name": s}
    if not isinstance(spec, dict):
        raise ConfigError(f"dataset spec must be a mapping with 'path' or 'name' (got {type(spec).__name__})")
    spec = dict(spec)
    allow_test = bool(spec.pop("allow_test", False))
    if "name" in spec and "path" in spec:
        raise ConfigError("dataset spec has both 'name' and 'path' (expected one of them)")
    if "name" in spec:
        name = spec.pop("name")
        ddir = spec.pop("data_dir", None) or data_dir or "data"
        extra = set(spec) - set(LOAD_KEYS)
        if extra:
            raise ConfigError(f"dataset spec {{name: {name}}} has unknown keys {sorted(extra)} "
                              f"(accepted: data_dir, allow_test, {', '.join(LOAD_KEYS)})")
        convs = load_dataset_by_name(name, ddir, **spec)
        label = f"dataset {name!r} in {ddir}"
    elif "path" in spec:
        path = spec.pop("path")
        fmt = spec.pop("format", None)
        if data_dir is not None and isinstance(path, str) and not Path(path).is_absolute() and not Path(path).exists():
            candidate = Path(data_dir) / path
            if candidate.exists():
                path = str(candidate)
        convs = load(path, fmt, **spec)
        label = str(path)
    else:
        raise ConfigError(f"dataset spec needs 'path' or 'name' (got keys: {', '.join(spec) or 'none'})")
    if purpose == "train":
        n_test = sum(1 for c in convs if c.meta.get("split") == "test")
        if n_test and not allow_test:
            raise DataError(f"{n_test} conversations come from a test split (meta.split=test); test data is for "
                            "evaluation only. Use the train files (tunesmith data rolebench-prepare builds them), or "
                            "set allow_test: true", label)
    return convs
