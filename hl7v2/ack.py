"""Original-mode acknowledgements (HL7 v2.5 2.9.2, 2.14.1 ACK, 2.15.5 ERR).

:func:`build_ack` writes the ACK for a message's :class:`Header` -- the
gateway's listener and every simulated or test peer answer with it.
:func:`read_msa` and :func:`parse_ack` read an ACK's MSA (the senders and
the RIS simulator).  Pure: the caller passes the timestamp and the ACK's
own control ID.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hl7v2.charsets import codec_of
from hl7v2.er7 import Header, msh_field, read_header, split_message
from hl7v2.errors import Hl7Error
from hl7v2.escaping import DEFAULT as E, escape

# HL7 Table 0357 texts for the codes the gateway sends.
ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    207: "Application internal error",
}

_FALLBACK = Header("", "", "", "", "", "", "", "", "P", "2.5.1", "UNICODE UTF-8")


def build_ack(
    header: Header | None,
    ack_code: str,
    *,
    control_id: str,
    timestamp: str,
    error: Hl7Error | None = None,
    text: str = "",
) -> str:
    """The ACK for ``header`` (or a bare one when the MSH could not be read).

    MSA-2 echoes MSH-10 so the sender matches the ACK to its message.  On
    error, ERR names the place twice: ERR-1 (ELD, v2.3/2.4) and ERR-2 (ERL,
    v2.5+) with ERR-3 the Table 0357 code, so older and newer senders both
    see which segment and field were refused.
    """
    h = header or _FALLBACK
    version = h.version or "2.5.1"
    msh = "|".join(
        [
            "MSH",
            E.characters,
            escape(h.receiving_application, E),
            escape(h.receiving_facility, E),
            escape(h.sending_application, E),
            escape(h.sending_facility, E),
            timestamp,
            "",
            f"ACK^{escape(h.trigger[:3], E)}^ACK" if h.trigger else "ACK",  # MSH-9.2 is ID(3)
            escape(control_id, E),
            h.processing_id or "P",
            escape(version, E),
            "",
            "",
            "",
            "",
            "",
            h.charset if header else "",
        ]
    ).rstrip("|")
    msa_text = text or (error.text if error else "")
    segments = [msh, "|".join(["MSA", ack_code, escape(h.control_id, E), escape(msa_text[:80], E)]).rstrip("|")]
    if error is not None:
        code = error.code
        code_ce = f"{code}^{escape(ERROR_TEXT.get(code, 'Error'), E)}^HL70357"
        seq = str(error.sequence) if error.segment else ""
        fld = str(error.field) if error.field else ""
        comp = str(error.component) if error.component else ""
        eld = "^".join([error.segment, seq, fld, code_ce.replace("^", "&")])
        erl = "^".join([error.segment, seq, fld, "" if not comp else "1", comp]).rstrip("^")
        severity = "E"
        segments.append("|".join(["ERR", eld, erl, code_ce, severity, "", "", "", escape(error.text[:250], E)]))
    return "\r".join(segments) + "\r"


def ack_bytes(ack: str, charset: str) -> bytes:
    """An ACK's bytes in the message's MSH-18 character set (UTF-8 when it
    named none or one not supported); a character it cannot hold is replaced."""
    return ack.encode(codec_of(charset, "utf-8") or "utf-8", errors="replace")


def header_of(message: bytes, charset: str = "") -> Header | None:
    """The MSH of a received message, best effort (None when unreadable):
    what a peer needs to answer it."""
    charset = charset or msh_field(message, 18).split("^")[0]
    codec = codec_of(charset, "utf-8") or "utf-8"
    try:
        return read_header(split_message(message.decode(codec, "replace"), codec), charset)
    except Hl7Error:
        return None


def answer(
    message: bytes,
    ack_code: str,
    *,
    control_id: str,
    timestamp: str,
    text: str = "",
    error: Hl7Error | None = None,
    acked_id: str | None = None,
) -> bytes:
    """A peer's ACK to ``message`` (bytes, no framing), encoded like it.
    ``acked_id`` puts another MSA-2 in (a peer that answers for the wrong
    message, in tests)."""
    header = header_of(message)
    if header is not None and acked_id is not None:
        header = dataclasses.replace(header, control_id=acked_id)
    return ack_bytes(build_ack(header, ack_code, control_id=control_id, timestamp=timestamp, text=text, error=error), header.charset if header else "")


# -- reading ACKs --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    code: str  # MSA-1
    control_id: str  # MSA-2
    text: str = ""  # MSA-3
    message_type: str = ""  # MSH-9
    error: str = ""  # ERR segment as received


def _segments(text: str) -> list[str]:
    return [s for s in text.replace("\n", "\r").split("\r") if s]


def read_msa(ack: bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, MSA-3) of an ACK, blanks stripped; empty when it has no MSA."""
    for segment in _segments(ack.decode("utf-8", "replace")):
        if segment.startswith("MSA"):
            sep = segment[3:4] or "|"
            fields = segment.split(sep) + ["", "", ""]
            return fields[1].strip(), fields[2].strip(), fields[3].strip()
    return "", "", ""


def parse_ack(raw: bytes | str, charset: str = "UNICODE UTF-8") -> Ack:
    """MSA and ERR of an ACK; ValueError when it is not one (no MSH, no MSA)."""
    text = raw if isinstance(raw, str) else raw.decode(codec_of(charset, "utf-8") or "utf-8", "replace")
    segs = _segments(text)
    if not segs or not segs[0].startswith("MSH") or len(segs[0]) < 4:
        raise ValueError("the reply does not start with MSH")
    sep = segs[0][3]
    msa = next((s.split(sep) for s in segs if s.startswith("MSA")), None)
    if msa is None:
        raise ValueError("the reply has no MSA segment")
    err = next((s for s in segs if s.startswith("ERR")), "")
    get = lambda f, n: f[n] if len(f) > n else ""  # noqa: E731
    return Ack(get(msa, 1), get(msa, 2), get(msa, 3), msh_field(segs[0], 9), err)


def check_ack(raw: bytes | str, sent_control_id: str, accept=("AA", "CA")) -> tuple[bool, str]:
    """(passed, detail) for an ACK to the message with MSH-10 ``sent_control_id``."""
    try:
        ack = parse_ack(raw)
    except ValueError as exc:
        return False, str(exc)
    if ack.control_id != sent_control_id:
        return False, f"MSA-2 {ack.control_id!r} != MSH-10 {sent_control_id!r}"
    if ack.code not in accept:
        return False, f"MSA-1 {ack.code} {ack.text} {ack.error}".strip()
    return True, f"MSA-1 {ack.code}"
