"""HL7 v2 text: character sets, escape sequences and the ER7 structure.

Segments and fields are split with python-hl7 (``hl7.parse``); this module
adds what it leaves out: decoding the bytes in the character set MSH-18
names (HL7 v2.5 Table 0211) and decoding escape sequences (HL7 v2.5
section 2.7) including ``\\Xhh..\\`` hex data in that character set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# HL7 Table 0211 (MSH-18) -> (Python codec, DICOM Specific Character Set
# defined term, PS3.3 C.12.1.1.2).  An empty MSH-18 means the site default.
CHARSETS: dict[str, tuple[str, str]] = {
    "ASCII": ("ascii", ""),
    "8859/1": ("latin-1", "ISO_IR 100"),
    "8859/2": ("iso8859-2", "ISO_IR 101"),
    "8859/5": ("iso8859-5", "ISO_IR 144"),
    "8859/7": ("iso8859-7", "ISO_IR 126"),
    "8859/9": ("iso8859-9", "ISO_IR 148"),
    "8859/15": ("iso8859-15", "ISO_IR 203"),
    "UNICODE UTF-8": ("utf-8", "ISO_IR 192"),
}

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


class Hl7Error(Exception):
    """A message the gateway refuses; names the place and the HL7 error code.

    ``code`` is from HL7 Table 0357 (100 segment sequence error, 101
    required field missing, 102 data type error, 103 table value not found,
    200 unsupported message type, 201 unsupported event code, 203
    unsupported version id, 204 unknown key identifier, 207 application
    internal error).  ``ack_code`` is AE (content error) or AR (reject).
    """

    def __init__(
        self,
        text: str,
        *,
        code: int,
        segment: str = "",
        sequence: int = 1,
        field: int = 0,
        component: int = 0,
        ack_code: str = "AE",
    ) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.component = component
        self.ack_code = ack_code
        self.header = None  # the parsed MSH, when it could be read

    @property
    def location(self) -> str:
        """``PID-7`` style location, empty when the message as a whole is bad."""
        if not self.segment:
            return ""
        loc = self.segment if not self.field else f"{self.segment}-{self.field}"
        return f"{loc}.{self.component}" if self.component else loc


@dataclass(frozen=True, slots=True)
class Encoding:
    """The separators of a message (MSH-1, MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


def sniff_charset(raw: bytes, default: str) -> str:
    """MSH-18 read from the raw bytes (ASCII-compatible), else ``default``."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 4:
        return default
    sep = raw[start + 3 : start + 4]
    first = re.split(rb"[\r\n]", raw[start:], maxsplit=1)[0]
    fields = first.split(sep)
    # fields[0] is "MSH", fields[1] is MSH-2, so MSH-n is fields[n - 1]
    if len(fields) >= 18:
        value = fields[17].split(b"^")[0].strip().decode("ascii", "replace")
        if value:
            return value
    return default


def decode_message(raw: bytes, default_charset: str) -> tuple[str, str]:
    """Decode ``raw`` in its MSH-18 character set; returns (text, HL7 charset)."""
    charset = sniff_charset(raw, default_charset)
    if charset not in CHARSETS:
        raise Hl7Error(
            f"unsupported character set {charset!r}", code=103, segment="MSH", field=18, ack_code="AR"
        )
    codec = CHARSETS[charset][0]
    try:
        return raw.decode(codec), charset
    except UnicodeDecodeError:
        raise Hl7Error(
            f"message bytes are not valid {charset}", code=102, segment="MSH", field=18, ack_code="AR"
        ) from None


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


def escape(value: str, enc: Encoding = Encoding()) -> str:
    """Escape the separators in ``value`` for ER7 (HL7 v2.5 2.7.1)."""
    out = value.replace(enc.escape, f"{enc.escape}E{enc.escape}")
    for char, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
    ):
        out = out.replace(char, f"{enc.escape}{code}{enc.escape}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{enc.escape}.br{enc.escape}")


def frame(message: bytes) -> bytes:
    """Wrap one message in MLLP framing (HL7 v2.5.1 Appendix C)."""
    return START_BLOCK + message + END_BLOCK
