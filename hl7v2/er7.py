"""ER7, the pipe-and-hat text encoding of HL7 v2 (HL7 v2.5 section 2.5-2.6).

Reader: :func:`split_message` splits a decoded message into segments and
fields only; components, repetitions and sub-components are cut on demand
(:meth:`Segment.get`), unescaped, so a message is never built into a full
tree only to be joined back into field strings (that tree was most of the
cost of an order: 0.8 of 1.2 ms on a 2-core VM).  :func:`read_header` gives
the MSH as a :class:`Header`.

Writer: :func:`segment` writes one segment from numbered fields (MSH
counting MSH-1 as the field separator, as the standard numbers it);
:func:`components` escapes and joins components.  Values given to
:func:`segment` are already escaped: a field often holds components the
caller joined with :func:`components`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from hl7v2.charsets import CHARSETS
from hl7v2.errors import Hl7Error
from hl7v2.escaping import DEFAULT, Encoding, escape, unescape

SEGMENT_END = "\r"
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_HEADERS = ("MSH", "BHS", "FHS")  # segments whose field 1 is the field separator


# -- reader ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """What the MSH says, and what the ACK needs."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    timestamp: str
    message_type: str
    trigger: str
    control_id: str
    processing_id: str
    version: str
    charset: str  # HL7 Table 0211 name

    @property
    def sender(self) -> str:
        return f"{self.sending_application}|{self.sending_facility}"

    @property
    def dicom_charset(self) -> str:
        return CHARSETS.get(self.charset, ("", ""))[1]


class Segment:
    """Field access on one segment: ``get(5, 1)`` is PID-5.1, unescaped."""

    def __init__(self, seg_id: str, fields: list[str], seq: int, enc: Encoding, codec: str) -> None:
        self.id = seg_id
        self.fields = fields
        self.seq = seq
        self.enc = enc
        self.codec = codec

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        raw = self.raw(n)
        return raw.split(self.enc.repetition) if raw else []

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        reps = self.reps(n)
        if len(reps) < rep:
            return ""
        comps = reps[rep - 1].split(self.enc.component)
        if len(comps) < comp:
            return ""
        subs = comps[comp - 1].split(self.enc.subcomponent)
        if len(subs) < sub:
            return ""
        value = unescape(subs[sub - 1], self.enc, self.codec)
        return "" if value == '""' else value.strip()

    def components(self, n: int, rep: int = 1) -> list[str]:
        reps = self.reps(n)
        if len(reps) < rep:
            return []
        return [
            unescape(c.split(self.enc.subcomponent)[0], self.enc, self.codec).strip()
            for c in reps[rep - 1].split(self.enc.component)
        ]

    def error(self, n: int, text: str, code: int = 102, comp: int = 0) -> Hl7Error:
        return Hl7Error(text, code=code, segment=self.id, sequence=self.seq, field=n, component=comp)

    def require(self, n: int, comp: int = 1, what: str = "") -> str:
        value = self.get(n, comp)
        if not value:
            name = f"{self.id}-{n}" + (f".{comp}" if comp > 1 else "")
            raise self.error(n, f"{name} {what or 'value'} is required", code=101, comp=comp if comp > 1 else 0)
        return value


class Message:
    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments

    def first(self, seg_id: str) -> Segment | None:
        for seg in self.segments:
            if seg.id == seg_id:
                return seg
        return None

    def all(self, seg_id: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.id == seg_id]


def split_fields(segment: str, sep: str) -> list[str]:
    """A segment's fields as raw text; field n at index n.

    HL7 v2.5 2.5.4: in MSH (and the batch headers) index 1 is the field
    separator itself and index 2 the encoding characters, so MSH-n is at
    index n like every other segment's fields.
    """
    if segment[:3] in _HEADERS and len(segment) > 3:
        end = segment.find(segment[3], 4)
        if end < 0:
            return [segment[:3], segment[3], segment[4:]]
        return [segment[:3], segment[3], segment[4:end], *segment[end + 1 :].split(sep)]
    return segment.split(sep)


def split_message(text: str, codec: str) -> Message:
    """Segments of an ER7 message; the first must be MSH.

    Segments end with CR (HL7 v2.5 2.5.1); LF and CRLF are taken too.
    """
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Error("message does not start with an MSH segment", code=100, segment="MSH", ack_code="AR")
    text = text.strip()  # whitespace around the message is not data
    sep = text[3]
    lines = text.split("\r")
    msh_raw = split_fields(lines[0], sep)
    enc_chars = msh_raw[2] if len(msh_raw) > 2 else ""
    if len(enc_chars) < 4:
        raise Hl7Error("MSH-2 encoding characters are incomplete", code=102, segment="MSH", field=2, ack_code="AR")
    enc = Encoding(
        field=sep,
        component=enc_chars[0],
        repetition=enc_chars[1],
        escape=enc_chars[2],
        subcomponent=enc_chars[3],
    )
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for line in lines:
        raw = split_fields(line, sep)
        seg_id = raw[0] if raw else ""
        if not _SEGMENT_ID.fullmatch(seg_id):
            raise Hl7Error(f"bad segment identifier {seg_id[:8]!r}", code=100, segment=seg_id[:3], ack_code="AE")
        counts[seg_id] = counts.get(seg_id, 0) + 1
        segments.append(Segment(seg_id, raw, counts[seg_id], enc, codec))
    return Message(segments)


def read_header(msg: Message, charset: str) -> Header:
    """The MSH fields, unchecked (an ACK needs them even for a bad message)."""
    msh = msg.segments[0]
    return Header(
        sending_application=msh.get(3),
        sending_facility=msh.get(4),
        receiving_application=msh.get(5),
        receiving_facility=msh.get(6),
        timestamp=msh.get(7),
        message_type=msh.get(9, 1),
        trigger=msh.get(9, 2),
        control_id=msh.get(10),
        processing_id=msh.get(11),
        version=msh.get(12, 1),
        charset=charset,
    )


def msh_field(message: bytes | str, n: int) -> str:
    """MSH-n of a message as written (not unescaped), read from its first
    line alone; empty when there is no MSH.  For peers and tools that only
    need MSH-10 or MSH-18 of a message they did not parse."""
    text = message if isinstance(message, str) else message.decode("latin-1")
    first = text.replace("\n", "\r").split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3])
    # fields[0] is "MSH", fields[1] MSH-2: MSH-n is fields[n - 1]
    return fields[n - 1] if len(fields) > n - 1 else ""


# -- writer ------------------------------------------------------------------


def segment(seg_id: str, fields: Mapping[int, str], *, trim: bool = False, enc: Encoding = DEFAULT) -> str:
    """One segment: ``fields[n]`` (already escaped) at field n, up to the
    highest n given.  For MSH, field 1 is the separator and field 2 the
    encoding characters, written from ``enc``.  ``trim`` drops empty
    trailing fields (HL7 v2.5 2.5.3: a receiver treats them as absent)."""
    top = max(fields) if fields else 0
    if seg_id in _HEADERS:
        body = [enc.characters] + [fields.get(n, "") for n in range(3, top + 1)]
        text = seg_id + enc.field + enc.field.join(body)
    else:
        text = enc.field.join([seg_id] + [fields.get(n, "") for n in range(1, top + 1)])
    return text.rstrip(enc.field) if trim else text


def components(*parts: str, trim: bool = True, enc: Encoding = DEFAULT) -> str:
    """Escaped components joined with ``^``; ``trim`` drops trailing empties."""
    values = [escape(x, enc) for x in parts]
    while trim and values and not values[-1]:
        values.pop()
    return enc.component.join(values)


def subcomponents(*parts: str, enc: Encoding = DEFAULT) -> str:
    """Escaped sub-components joined with ``&``, trailing empties dropped."""
    values = [escape(x, enc) for x in parts]
    while values and not values[-1]:
        values.pop()
    return enc.subcomponent.join(values)


def message(segments: list[str], *, terminated: bool = True) -> str:
    """Segments joined by CR; ``terminated`` ends the last one with CR too
    (HL7 v2.5 2.5.1: every segment ends with CR)."""
    text = SEGMENT_END.join(segments)
    return text + SEGMENT_END if terminated else text
