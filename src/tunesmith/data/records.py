"""Read JSON records from JSONL or JSON-array files, with errors that name the file and line.

    from tunesmith.data.records import read_records
    for where, record in read_records("data/train.jsonl"):
        ...   # where == "data/train.jsonl:17"

What is accepted (and why):
  * JSONL, one object per line; blank lines are skipped.
  * A JSON array file (`[{...}, {...}]`), common for alpaca/sharegpt data; each element is still
    reported by line, plus its index: `data.json:12 (record 3)`.
  * A UTF-8 BOM (Windows editors add one). UTF-16 with a BOM is decoded too.
  * Non-UTF-8 bytes: with `encoding="auto"` (the default) a file that decodes cleanly as GB18030/GBK
    (common for Chinese text) is read with a warning; otherwise the error names the line and byte and
    says UTF-8 was expected.
  * A truncated last line (a copy or download that stopped mid-record) is reported as such.

What is refused although it is valid JSON (every user JSON file is parsed with `strict_loads` or
`STRICT_JSON`, so the rules hold for records, dataset_info.json and the labeling store alike):
  * A key given twice in one object (`{"target": 5, "target": "t"}`): Python's json keeps the last one
    silently, so the record would mean something else than it seems to.
  * Arrays/objects nested deeper than MAX_JSON_DEPTH: no dataset nests that deep, and from about 1,000
    levels Python's parser fails with a RecursionError instead of a message.

Nothing here imports more than the standard library, so `tunesmith --help` stays fast.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


# Levels of nested arrays/objects a JSON value may have. A chat record nests about 5 deep (record ->
# messages -> message, tool calls a few more); 100 leaves room for any real metadata and stays far below
# the ~1,000 where the parser itself gives up with a RecursionError.
MAX_JSON_DEPTH = 100


class JsonShapeError(ValueError):
    """Valid JSON that a data file must not hold: a key twice in one object, or nesting beyond MAX_JSON_DEPTH.

    `msg` says what is wrong and what was expected; `pos` is the offset of the problem in the parsed text
    and `end` the offset right after the value that holds it (None where the value does not close).
    """

    def __init__(self, msg: str, pos: int, end: int | None):
        super().__init__(msg)
        self.msg, self.pos, self.end = msg, pos, end


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _DuplicateKey  # where and which: _locate_shape_problem finds it with the text's offsets
    return d


# Strings (with their escapes) and the structural characters; numbers, literals, ':' and spaces are skipped.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],]')


def _locate_shape_problem(text: str, start: int) -> JsonShapeError | None:
    """The first duplicate key or over-deep nesting in the JSON value at `start`, with its offset.

    Only runs once a problem is known to be there, so a plain scan is fast enough; it never recurses, so
    it also works on the 100,000-level nesting that the parser cannot take.
    """
    stack: list[set[str] | None] = []  # per open container: the keys seen so far (objects) or None (arrays)
    want_key = False
    found: JsonShapeError | None = None
    for m in _JSON_TOKEN.finditer(text, start):
        t = m.group()
        if t == "{" or t == "[":
            if found is None and len(stack) >= MAX_JSON_DEPTH:
                found = JsonShapeError(f"arrays/objects nested deeper than {MAX_JSON_DEPTH} levels (expected at "
                                       f"most {MAX_JSON_DEPTH}; no real record nests that deep)", m.start(), None)
            stack.append(set() if t == "{" else None)
            want_key = t == "{"
        elif t == "}" or t == "]":
            if stack:
                stack.pop()
            want_key = False
            if not stack:
                if found is not None:
                    found.end = m.end()
                return found
        elif t == ",":
            want_key = bool(stack) and stack[-1] is not None
        else:
            keys = stack[-1] if want_key and found is None else None
            if keys is not None:
                key = json.loads(t)
                if key in keys:
                    shown = json.dumps(key, ensure_ascii=False)
                    shown = shown if len(shown) <= 60 else shown[:57] + '..."'
                    found = JsonShapeError(f"key {shown} appears twice in one object (expected each key once; "
                                           "a JSON reader would silently keep only the last value)", m.start(), None)
                keys.add(key)
            want_key = False
    return found


def _too_deep(value: Any) -> bool:
    """Does `value` nest more than MAX_JSON_DEPTH arrays/objects? (a loop, not recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


class StrictJSONDecoder(json.JSONDecoder):
    """json.JSONDecoder that raises JsonShapeError for duplicate keys and nesting beyond MAX_JSON_DEPTH.

    Syntax errors stay json.JSONDecodeError. `decode` (hence `strict_loads`) checks the same, as it calls
    `raw_decode`.
    """

    def __init__(self) -> None:
        super().__init__(object_pairs_hook=_no_duplicate_keys)

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        try:
            value, end = super().raw_decode(s, idx)
        except (_DuplicateKey, RecursionError):
            raise self._problem(s, idx) from None
        # Counting brackets is cheap and bounds the depth: only values with many of them are walked.
        if s.count("[", idx, end) + s.count("{", idx, end) > MAX_JSON_DEPTH and isinstance(value, (dict, list)) \
                and _too_deep(value):
            raise self._problem(s, idx)
        return value, end

    @staticmethod
    def _problem(s: str, idx: int) -> JsonShapeError:
        found = _locate_shape_problem(s, idx)
        if found is None:  # pragma: no cover - the scan finds what the parser found
            found = JsonShapeError(f"arrays/objects nested too deep or a key given twice (expected at most "
                                   f"{MAX_JSON_DEPTH} levels and each key once)", idx, None)
        return found


STRICT_JSON = StrictJSONDecoder()


def strict_loads(text: str) -> Any:
    """json.loads for user files: also refuses duplicate keys and over-deep nesting (JsonShapeError)."""
    return STRICT_JSON.decode(text)


def _line_of(data: bytes | str, offset: int) -> int:
    """1-based line number of a byte/char offset."""
    nl = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(nl, 0, offset) + 1


def _looks_chinese_legacy(raw: bytes) -> str | None:
    """Return "gb18030" when the bytes decode cleanly as GB18030 and look like Chinese text, else None.

    GB18030 maps almost any byte pair to some character, so a clean decode alone proves little; we
    also ask charset-normalizer (a dependency of `requests`/`datasets`) which Chinese legacy codec fits.
    """
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return None
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - charset-normalizer is a pinned dependency
        best = None
    else:
        match = from_bytes(raw[:200_000]).best()
        best = match.encoding if match is not None else None
    if best in ("gb18030", "gbk", "gb2312", "hz", "big5", "cp936"):
        return "gb18030"
    # Fallback: a majority of non-ASCII characters are CJK ideographs or CJK punctuation.
    non_ascii = [c for c in text[:20_000] if ord(c) > 127]
    if non_ascii and sum(
        1 for c in non_ascii if "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" or "\uff00" <= c <= "\uffef"
    ) > 0.9 * len(non_ascii):
        return "gb18030"
    return None


def read_text(path: str | os.PathLike, encoding: str = "auto") -> str:
    """Read a whole text file, handling BOMs and non-UTF-8 bytes as described in the module docstring."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", str(p)) from None
    except IsADirectoryError:
        raise DataError("is a directory (expected a JSONL or JSON file)", str(p)) from None
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror}", str(p)) from None
    if encoding != "auto":
        try:
            text = raw.decode(encoding)
        except LookupError:
            raise DataError(f"unknown encoding {encoding!r} (expected e.g. utf-8, gb18030)", str(p)) from None
        except UnicodeDecodeError as e:
            raise DataError(f"byte {e.start} is not valid {encoding} (expected a file encoded as {encoding})",
                            f"{p}:{_line_of(raw, e.start)}") from None
        return text[1:] if text.startswith("\ufeff") else text
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return raw[len(bom):].decode(codec)
            except UnicodeDecodeError as e:
                raise DataError(f"byte {e.start + len(bom)} is not valid {codec} although the file starts with a "
                                f"{codec} BOM",
                                f"{p}:{_line_of(raw, e.start + len(bom))}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        legacy = _looks_chinese_legacy(raw)
        if legacy:
            print(f"warning: {p}: not UTF-8; decoded as {legacy.upper()} (pass encoding='utf-8' to refuse, "
                  f"or convert with: iconv -f GB18030 -t UTF-8)", file=sys.stderr)
            return raw.decode(legacy)
        bad = raw[e.start:e.start + 4].hex(" ")
        raise DataError(
            f"byte {e.start} (0x{bad}) is not valid UTF-8 (expected a UTF-8 file; for GB18030/GBK text pass "
            f"--encoding gb18030 or convert with: iconv -f GB18030 -t UTF-8)",
            f"{p}:{_line_of(raw, e.start)}",
        ) from None


def _json_error(e: json.JSONDecodeError, text_len: int, is_last: bool) -> str:
    # A last line without its newline that breaks off inside a string or before the closing brace is a
    # truncated copy, not a syntax mistake: say so, because the fix differs (re-copy the file).
    if is_last and (e.msg.startswith("Unterminated string") or e.pos >= text_len):
        return (f"truncated JSON: the file ends in the middle of a record ({e.msg}) "
                "(expected one complete JSON object per line)")
    return f"invalid JSON: {e.msg} at column {e.colno} (expected one JSON object per line)"


def read_records(path: str | os.PathLike, encoding: str = "auto",
                 errors: list[DataError] | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (where, record) for each record of a JSONL or JSON-array file.

    Unparseable lines raise DataError, or, when `errors` is a list, are appended to it and skipped
    (the caller decides whether skipping is allowed). An empty file is always an error.
    """
    p = str(path)
    text = read_text(path, encoding)
    stripped = text.lstrip()
    if not stripped:
        raise DataError("file is empty (expected JSON records, one per line)", p)
    if stripped[0] == "[":
        yield from _read_json_array(p, text, errors)
        return
    lines = text.split("\n")
    # A trailing "\n" leaves one empty string at the end; the real last line is the one before it.
    last = len(lines) - 1
    while last > 0 and not lines[last].strip():
        last -= 1
    loads = STRICT_JSON.decode
    for i, line in enumerate(lines):
        if not line or line.isspace():
            continue
        try:
            rec = loads(line)
        except JsonShapeError as e:
            err = DataError(e.msg, f"{p}:{i + 1}")
        except json.JSONDecodeError as e:
            err = DataError(_json_error(e, len(line.rstrip()), i == last and not text.endswith("\n")), f"{p}:{i + 1}")
        else:
            yield f"{p}:{i + 1}", rec
            continue
        if errors is None:
            raise err from None
        errors.append(err)


def _read_json_array(p: str, text: str, errors: list[DataError] | None) -> Iterator[tuple[str, Any]]:
    # Decode element by element (raw_decode) so that each record keeps its line number.
    dec = STRICT_JSON
    pos = text.index("[") + 1
    n = len(text)
    ws = " \t\r\n"
    line, line_pos = 1, 0  # line number at offset line_pos (advanced lazily)
    index = 0

    def where_at(offset: int) -> str:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, offset)
        line_pos = offset
        return f"{p}:{line} (record {index})"

    def skip_ws(i: int) -> int:
        while i < n and text[i] in ws:
            i += 1
        return i

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        raise DataError("the JSON array is empty (expected at least one record)", p)
    while True:
        pos = skip_ws(pos)
        if pos >= n:
            raise DataError("truncated JSON array: the file ends before the closing ']'", f"{p}:{_line_of(text, n)}")
        try:
            rec, end = dec.raw_decode(text, pos)
        except JsonShapeError as e:
            # Valid JSON whose end is known can be skipped like a bad line of a JSONL file.
            err = DataError(e.msg, where_at(e.pos))
            if errors is None or e.end is None:
                raise err from None
            errors.append(err)
            end = e.end
        except json.JSONDecodeError as e:
            # A syntax error inside an array leaves no safe place to resume: always fatal.
            cut = e.msg.startswith("Unterminated string") or e.pos >= len(text.rstrip())
            msg = "truncated JSON array: the file ends in the middle of a record" if cut else f"invalid JSON: {e.msg}"
            raise DataError(f"{msg} (expected a JSON array of objects)", f"{p}:{e.lineno} (record {index})") from None
        else:
            yield where_at(pos), rec
        index += 1
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos += 1
            continue
        if pos < n and text[pos] == "]":
            if text[pos + 1:].strip():
                raise DataError("unexpected text after the closing ']' (expected one JSON array)",
                                f"{p}:{_line_of(text, pos + 1)}")
            return
        if pos >= n:
            raise DataError("truncated JSON array: the file ends before the closing ']'", f"{p}:{_line_of(text, n)}")
        raise DataError(f"expected ',' or ']' after record {index - 1}", f"{p}:{_line_of(text, pos)}")


# JSON files that sit next to data but are not records: the registry and rolebench-prepare's manifest.
NOT_DATA = frozenset({"dataset_info.json", "manifest.json"})


def expand_paths(spec: str | os.PathLike | list, exts: tuple[str, ...] = (".jsonl", ".json")) -> list[Path]:
    """A file, a folder (its *.jsonl/*.json files, sorted), a glob, or a list of those -> files.

    Errors name what was given and what was expected.
    """
    if isinstance(spec, (list, tuple)):
        out: list[Path] = []
        for s in spec:
            out.extend(expand_paths(s, exts))
        if not out:
            raise DataError("no input files given (expected a file, a folder or a glob)")
        return out
    s = os.fspath(spec)
    p = Path(s).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in exts and f.name not in NOT_DATA)
        if not files:
            raise DataError(f"folder has no {'/'.join('*' + e for e in exts)} files", str(p))
        return files
    if p.is_file():
        return [p]
    if any(c in s for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(os.path.expanduser(s), recursive=True) if os.path.isfile(f))
        if not files:
            raise DataError("glob matches no files", s)
        return files
    raise DataError("file not found (expected a file, a folder or a glob)", s)
