"""Decode text files whose encoding is not known: UTF-8 (with or without BOM), UTF-16 with BOM, GB18030/GBK.

    from tunesmith.data.encoding import read_text_file
    text, encoding = read_text_file("三国演义.txt")            # -> (str, "gb18030")
    text, encoding = read_text_file("novel.txt", encoding="utf-8")

Why this order: a long GBK/GB18030 text is practically never valid UTF-8, while almost any byte string
decodes as *something* in a legacy code page.  So "auto" tries the strict decoders from the most to the
least selective (BOMs, then UTF-8, then GB18030) and only reports a failure when every one of them
rejects a byte; the error names the line and byte offset of the first bad byte.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from tunesmith.errors import DataError

# Names the user may pass; "auto" detects.  GBK and GB2312 are subsets of GB18030, so they decode as GB18030.
ENCODINGS = ("auto", "utf-8", "gb18030", "gbk", "gb2312", "utf-16")
_ALIASES = {"utf8": "utf-8", "utf-8-sig": "utf-8", "gbk": "gb18030", "gb2312": "gb18030", "cp936": "gb18030",
            "utf16": "utf-16"}


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _strict(data: bytes, encoding: str, where: str | None, shown: str | None = None) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 4].hex(" ")
        raise DataError(
            f"cannot decode as {shown or encoding}: bad byte(s) {bad} at byte {e.start} "
            f"(line {_line_of(data, e.start)}); "
            f"pass --encoding with the file's real encoding (one of {', '.join(ENCODINGS)})",
            f"{where}:{_line_of(data, e.start)}" if where else None,
        ) from None


def decode_text(data: bytes, encoding: str = "auto", where: str | None = None) -> tuple[str, str]:
    """Decode `data`; return (text without BOM, the encoding used).  Raises DataError naming the first bad byte."""
    enc = (encoding or "auto").strip().lower()
    enc = _ALIASES.get(enc, enc)
    if enc not in ("auto", "utf-8", "gb18030", "utf-16"):
        try:
            codecs.lookup(enc)
        except LookupError:
            raise DataError(f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})", where) from None
        return _strict(data, enc, where), enc
    if enc == "utf-8":
        return _strict(data, "utf-8-sig", where, "UTF-8"), "utf-8"
    if enc == "gb18030":
        return _strict(data, "gb18030", where, "GB18030"), "gb18030"
    if enc == "utf-16" or data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _strict(data, "utf-16", where, "UTF-16"), "utf-16"
    if data.startswith(codecs.BOM_UTF8):
        return _strict(data, "utf-8-sig", where, "UTF-8"), "utf-8"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as utf8_error:
        try:
            return data.decode("gb18030"), "gb18030"
        except UnicodeDecodeError as gb_error:
            u_line, g_line = _line_of(data, utf8_error.start), _line_of(data, gb_error.start)
            raise DataError(
                f"cannot decode the text: not UTF-8 (bad byte {data[utf8_error.start]:#04x} at line {u_line}) "
                f"and not GB18030/GBK (bad byte {data[gb_error.start]:#04x} at line {g_line}); "
                f"is this a text file? pass --encoding with its real encoding",
                f"{where}:{max(u_line, g_line)}" if where else None,
            ) from None


def read_text_file(path: str | Path, encoding: str = "auto") -> tuple[str, str]:
    """Read and decode a text file; missing files and directories raise DataError, not OSError."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found (expected a plain-text novel, UTF-8 or GB18030/GBK)", str(p))
    if p.is_dir():
        raise DataError("is a directory (expected a plain-text file)", str(p))
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror}", str(p)) from None
    return decode_text(data, encoding, str(p))
