"""Text safe to show: control characters and undecodable bytes escaped, for terminals and log lines.

Why one helper for every place a path is shown: file names come from whoever can write into a
watched folder. A newline in a name would start a fake line in the daemon's log (journald reads one
entry per line), ESC and OSC sequences would drive the terminal of whoever runs ``rkvideo list``
(retitle it, clear it, hide text), and bytes that are not UTF-8 cannot even be written to a strict
stdout. So everything rkvideo prints or logs goes through ``line`` (one line, nothing kept) or
``block`` (a description's text: line breaks and tabs kept), and the daemon's log through
``LogFormatter``.

What is escaped: C0 controls, DEL and C1 controls (``\\x1b``; newline, tab and carriage return as
``\\n``, ``\\t``, ``\\r``), the Unicode line and paragraph separators and the bidirectional
overrides and isolates (they reorder what the reader sees), and lone surrogates. A lone surrogate
is how Python keeps a byte of a file name that is not UTF-8; it is shown as that byte, ``\\xe9``,
the form the database stores such names in. Everything else, accents and CJK included, is left
alone. JSON output keeps its data (``json_text``): JSON escapes C0 itself, and C1 and the
separators are written as ``\\u`` escapes, so the output is valid UTF-8 and inert on a terminal.
"""
from __future__ import annotations

import json
import logging
import re

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# DEL and C1; line/paragraph separators; bidi embeddings, overrides and isolates; lone surrogates.
_WIDE = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_LINE = re.compile(f"[\x00-\x1f{_WIDE}]")               # every C0 control
_BLOCK = re.compile(f"[\x00-\x08\x0b-\x1f{_WIDE}]")    # C0 but tab and newline
_JSON = re.compile(f"[{_WIDE}]")                         # JSON escapes C0 itself


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:          # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def line(text) -> str:
    """``text`` as one printable line: every control character and undecodable byte escaped."""
    text = str(text)
    return _LINE.sub(_escape, text) if _LINE.search(text) else text


def block(text) -> str:
    """Like ``line`` but keeps line breaks and tabs: for a description's text, which has paragraphs."""
    text = str(text)
    return _BLOCK.sub(_escape, text) if _BLOCK.search(text) else text


def _json_escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:          # the name's byte, as the text "\xe9" (a JSON "\\xe9")
        return f"\\\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def json_text(data, **options) -> str:
    """``json.dumps(data)`` that keeps non-ASCII text readable but is valid UTF-8 and inert on a
    terminal (see the module docstring). ``options`` go to ``json.dumps`` (``indent``)."""
    text = json.dumps(data, ensure_ascii=False, **options)
    return _JSON.sub(_json_escape, text) if _JSON.search(text) else text


class LogFormatter(logging.Formatter):
    """One record, one line: the message escaped with ``line``. A traceback, which has to span
    lines, is escaped with ``block`` and indented, so none of its lines can pass for a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = line(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def formatException(self, ei) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    return "\n".join("  " + part for part in block(text).split("\n"))
