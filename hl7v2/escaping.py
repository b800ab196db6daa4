"""Separators and escape sequences (HL7 v2.5 section 2.7)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Encoding:
    """The separators of a message (MSH-1, MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def characters(self) -> str:
        """MSH-2 as written: component, repetition, escape, subcomponent."""
        return f"{self.component}{self.repetition}{self.escape}{self.subcomponent}"


DEFAULT = Encoding()

_ESCAPE = re.compile(r"\\([^\\]*)\\")


def unescape(value: str, enc: Encoding, codec: str) -> str:
    """Decode HL7 escape sequences (HL7 v2.5 2.7.1-2.7.6) in one leaf value.

    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` give the separators; ``\\Xhh..\\`` is hex data
    in the message's character set; ``\\.br\\`` a line break; highlighting
    (``\\H\\ \\N\\``) and other formatting or charset switches are dropped.
    """
    if enc.escape not in value:
        return value
    esc = re.escape(enc.escape)
    pattern = _ESCAPE if enc.escape == "\\" else re.compile(f"{esc}([^{esc}]*){esc}")
    table = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
        ".br": "\n",
    }

    def repl(m: re.Match) -> str:
        token = m.group(1)
        if token in table:
            return table[token]
        if token[:1] == "X" and len(token) > 1:
            try:
                return bytes.fromhex(token[1:]).decode(codec)
            except (ValueError, UnicodeDecodeError):
                return m.group(0)
        return ""

    return pattern.sub(repl, value)


def escape(value: str, enc: Encoding = DEFAULT) -> str:
    """Escape the separators in ``value`` for ER7 (HL7 v2.5 2.7.1); a line
    break becomes ``\\.br\\`` (2.7.6)."""
    out = value.replace(enc.escape, f"{enc.escape}E{enc.escape}")
    for char, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
    ):
        out = out.replace(char, f"{enc.escape}{code}{enc.escape}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{enc.escape}.br{enc.escape}")
