"""IMAP's command syntax as the sandbox's server reads and writes it: tokens, literals, sets, quoting.

Pure functions of RFC 3501's grammar (as much of it as :mod:`.imap_server` takes); anything that
does not parse raises :class:`BadCommand`, which the server answers with ``BAD``.
"""

from __future__ import annotations

import re
import time
from typing import Any

__all__ = [
    "LITERAL_AT_END",
    "BadCommand",
    "Literal",
    "argument",
    "as_text",
    "internaldate",
    "parse_set",
    "quoted",
    "tokenize",
]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class BadCommand(Exception):
    """The command does not parse: answered ``BAD``."""


def internaldate(stamp: float) -> str:
    """A moment as IMAP's ``INTERNALDATE`` writes it (``"07-Mar-2025 09:15:00 +0000"``)."""
    moment = time.gmtime(stamp)
    return f'"{moment.tm_mday:02d}-{_MONTHS[moment.tm_mon - 1]}-{moment.tm_year} {time.strftime("%H:%M:%S", moment)} +0000"'


def quoted(text: str) -> str:
    """``text`` as an IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


LITERAL_AT_END = re.compile(rb"\{(\d{1,9})(\+?)\}$")
_ATOM_END = set(' ()"\x00')


class Literal(bytes):
    """A literal argument (told apart from atoms and quoted strings)."""


def tokenize(text: str, literals: list[bytes]) -> list[Any]:
    """Arguments as atoms/strings (``str``), literals (:class:`Literal`) and nested lists.

    Literals were cut out of ``text`` beforehand and stand there as ``\\x00<n>\\x00``.
    """
    stack: list[list[Any]] = [[]]
    i = 0
    while i < len(text):
        char = text[i]
        if char == " ":
            i += 1
        elif char == "(":
            stack.append([])
            i += 1
        elif char == ")":
            if len(stack) == 1:
                raise BadCommand("unbalanced parentheses")
            done = stack.pop()
            stack[-1].append(done)
            i += 1
        elif char == '"':
            out = []
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                out.append(text[i])
                i += 1
            if i >= len(text):
                raise BadCommand("unterminated string")
            stack[-1].append("".join(out))
            i += 1
        elif char == "\x00":
            end = text.index("\x00", i + 1)
            stack[-1].append(Literal(literals[int(text[i + 1 : end])]))
            i = end + 1
        else:
            start = i
            depth = 0
            while i < len(text) and (depth or text[i] not in _ATOM_END):
                if text[i] == "[":
                    depth += 1
                elif text[i] == "]":
                    depth -= 1
                i += 1
            stack[-1].append(text[start:i])
    if len(stack) != 1:
        raise BadCommand("unbalanced parentheses")
    return stack[0]


def parse_set(text: str, largest: int) -> set[int]:
    """A sequence set (``1:3,7,9:*``) against numbers up to ``largest`` (``*``)."""
    found: set[int] = set()
    for part in str(text).split(","):
        low, _sep, high = part.partition(":")
        try:
            first = largest if low == "*" else int(low)
            last = first if not _sep else (largest if high == "*" else int(high))
        except ValueError:
            raise BadCommand(f"bad sequence set {text!r}") from None
        if first > last:
            first, last = last, first
        if last - first > 10_000_000:
            raise BadCommand("sequence range too large")
        found.update(range(max(first, 1), last + 1))
    return found


def argument(args: list[Any], index: int) -> Any:
    """The command's argument at ``index``; a missing one is a ``BAD`` command."""
    if index >= len(args):
        raise BadCommand("missing argument")
    return args[index]


def as_text(value: Any) -> str:
    """An argument as text (a literal decoded); a list where text belongs is a ``BAD`` command."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        raise BadCommand("a list where a string was expected")
    return str(value)
