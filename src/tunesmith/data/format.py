"""What a dataset format is: the one `Format` object that each format module exports as `FORMAT`.

    from tunesmith.data.format import Format

    FORMAT = Format(
        name="alpaca",
        record='{"instruction": str, "input"?: str, "output": str, ...}',
        detect=detect,            # does a record (the first of a file) have this shape?
        converter=converter,      # converter(path, **options) -> convert(record) -> [Conversation, ...]
        export=export,            # export(conversation) -> record; None for a read-only format
        options=OPTIONS,          # {option: what it does}, shown by `tunesmith data formats`
    )

A format that is not JSON records (a novel's plain text, a character card) gives `read_file` instead of
`converter` and no `detect`; its `claims(path)` says which files it reads when no format is named.
`tunesmith.data.formats` builds its table from these objects; see that module for how a new format is added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation

# converter(path, **options) checks the options once per file and returns the function that turns one record
# into Conversations (one record may give several, e.g. one per RoleBench answer).
Converter = Callable[..., Callable[[Any], list[Conversation]]]


@dataclass(frozen=True)
class Format:
    name: str = field(metadata={"help": "the name --from/--to and recipes use, e.g. context-target"})
    record: str = field(metadata={"help": "what one record looks like, for error messages and `data formats`"})
    converter: Converter | None = field(
        default=None, metadata={"help": "converter(path, **options) -> convert(record) -> [Conversation]"})
    export: Callable[[Conversation], dict] | None = field(
        default=None, metadata={"help": "Conversation -> one record; None when the format is read only"})
    detect: Callable[[dict], bool] | None = field(
        default=None, metadata={"help": "does this record have the format's shape? None: never detected"})
    options: dict[str, str] = field(
        default_factory=dict, metadata={"help": "importer option -> what it does (checked by the converter)"})
    read_file: Callable[..., list[Conversation]] | None = field(
        default=None, metadata={"help": "read_file(path, encoding=, **options) for a format that is not JSON "
                                        "records (a novel's text): it reads the whole file itself"})
    claims: Callable[[Path], bool] | None = field(
        default=None, metadata={"help": "for a whole-file format: is this file (given without --from) one of "
                                        "ours? e.g. a .txt name for a novel, a .png or one-card .json for a card"})
    aliases: tuple[str, ...] = field(
        default=(), metadata={"help": "other names accepted for this format (e.g. openai for messages)"})

