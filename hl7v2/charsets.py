"""MSH-18 character sets (HL7 v2.5 Table 0211): the bytes of a message.

An HL7 message names its character set in MSH-18; the MSH itself is
ASCII-compatible in all of them, so MSH-18 is read from the raw bytes
before decoding.  HL7 has no escape for a character outside the message's
character set (the ``\\X..\\`` hex escape carries bytes *in* it), so
encoding refuses such a character rather than replacing it.
"""

from __future__ import annotations

import re

from hl7v2.errors import Hl7Error

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


def codec_of(charset: str, empty: str = "ascii") -> str | None:
    """The Python codec for an MSH-18 value; ``empty`` for an empty MSH-18
    (HL7 v2.5 2.15.9.18: absent means ASCII unless the sites agree
    otherwise); None when the character set is not supported."""
    if not charset:
        return empty
    entry = CHARSETS.get(charset)
    return entry[0] if entry else None


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


def encode_message(message: str, charset: str = "UNICODE UTF-8") -> bytes:
    """The bytes of ``message`` in the MSH-18 character set (empty: ASCII).

    Raises ValueError naming the character when the charset cannot hold it.
    """
    codec = codec_of(charset)
    if codec is None:
        raise ValueError(f"unsupported MSH-18 character set {charset!r}")
    try:
        return message.encode(codec)
    except UnicodeEncodeError as exc:
        bad = message[exc.start : exc.end]
        raise ValueError(f"{bad!r} cannot be sent in character set {charset or 'ASCII'}") from None
