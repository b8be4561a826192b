"""A novel's plain text as a data source: the dialogue miner runs on it, its result is cached.

    tunesmith data convert --from novel datasets/four-novels-raw/三国演义.txt out/sanguo.jsonl
    tunesmith data stats datasets/four-novels-raw/西游记.txt --from novel

    # in a recipe: no pre-step, the miner runs when training starts
    data:
      train: {path: datasets/four-novels-raw/三国演义.txt, format: novel}
      train: {path: datasets/four-novels-raw/西游记.txt, format: novel, speaker: 八戒}

Each quoted speech becomes one conversation, exactly as `tunesmith data extract-dialogue` followed by
`--from novel-dialogue` would give it (user = the narrative up to `某某曰：`, assistant = the speech).
Mining a whole novel takes a few seconds; the records are kept under `$TUNESMITH_CACHE/dialogue/`, keyed
by the novel's bytes, the miner options and the miner's own source (every module of it), so a changed
book, option or miner never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data.fields import check_options
from tunesmith.data.format import Format
from tunesmith.errors import ConfigError, DataError
from tunesmith.model import cache_dir

NAME = "novel"
EXPECTED = "a novel as plain text (UTF-8 or GB18030/GBK): every quoted speech becomes a conversation"
OPTIONS = {
    "speaker": "keep only this speaker's speeches (e.g. 孔明; short names such as 亮 are expanded)",
    "context_chars": "the most narrative characters kept before a speech (default: the miner's)",
    "system": "system prompt to add to every conversation (default: none)",
}


def miner_fingerprint(files: list[Path]) -> str:
    """A hash of the miner's source files (names and bytes): any changed module gives a new one, so no stale
    result is reused."""
    key = hashlib.sha256()
    for f in files:
        key.update(f.name.encode())
        key.update(f.read_bytes())
    return key.hexdigest()


def _cache_file(path: Path, data: bytes, options: dict[str, Any]) -> Path:
    # The miner is imported only where a novel is read: importing it costs the CLI start about 30 ms.
    from tunesmith.data import novel

    key = hashlib.sha256()
    key.update(data)
    key.update(json.dumps(options, sort_keys=True, ensure_ascii=False).encode())
    key.update(miner_fingerprint(novel.source_files()).encode())
    return cache_dir() / "dialogue" / f"{path.stem}-{key.hexdigest()[:16]}.jsonl"


def _mine(path: Path, encoding: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The miner's records for this novel and these options, from the cache when it has them."""
    from tunesmith.data.novel import extract_dialogue, write_jsonl_atomic  # deferred: see _cache_file

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found (expected a plain-text novel, UTF-8 or GB18030/GBK)", str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory (expected a plain-text novel)", str(path)) from None
    cached = _cache_file(path, data, {**options, "encoding": encoding})
    if cached.is_file():
        try:
            return [json.loads(line) for line in cached.read_text(encoding="utf-8").splitlines() if line]
        except (OSError, ValueError):  # a damaged cache file is rebuilt, never trusted
            pass
    records = extract_dialogue(path, encoding=encoding, **options)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(records, cached)
    except OSError:  # a read-only cache only costs the next run a few seconds
        pass
    return records


def read_novel(path: str | os.PathLike, *, encoding: str = "auto", **opts: Any) -> list[Conversation]:
    """Conversations of every speech in a novel (meta: source novel-dialogue, role/speaker, chapter, line, book)."""
    from tunesmith.data.novel import records_to_conversations  # deferred: see _cache_file

    check_options(NAME, opts, OPTIONS)
    p = Path(path)
    options: dict[str, Any] = {}
    if opts.get("speaker"):
        options["speaker"] = str(opts["speaker"])
    if opts.get("context_chars") is not None:
        try:
            options["context_chars"] = int(opts["context_chars"])
        except (TypeError, ValueError):
            raise ConfigError("novel option context_chars: expected an integer "
                              f"(got {opts['context_chars']!r})") from None
    convs = records_to_conversations(_mine(p, encoding, options), book=p.stem)
    system = opts.get("system") or None
    if system:
        for c in convs:
            c.system = str(system)
    return convs


def claims(path: Path) -> bool:
    """Without --from, a .txt file is read as a novel (it is never JSON records)."""
    return path.suffix.lower() == ".txt"


FORMAT = Format(NAME, EXPECTED, options=OPTIONS, read_file=read_novel, claims=claims, aliases=("novel-text", "txt"))
