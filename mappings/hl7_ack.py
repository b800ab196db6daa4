"""Original-mode acknowledgements (HL7 v2.5 2.9.2, 2.14.1 ACK, 2.15.5 ERR).

Pure: the caller passes the timestamp and the ACK's own control ID.
"""

from __future__ import annotations

from mappings.hl7_orders import Header
from mappings.hl7_text import Encoding, Hl7Error, escape

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
    e = Encoding()
    version = h.version or "2.5.1"
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            escape(h.receiving_application, e),
            escape(h.receiving_facility, e),
            escape(h.sending_application, e),
            escape(h.sending_facility, e),
            timestamp,
            "",
            f"ACK^{escape(h.trigger[:3], e)}^ACK" if h.trigger else "ACK",  # MSH-9.2 is ID(3)
            escape(control_id, e),
            h.processing_id or "P",
            escape(version, e),
            "",
            "",
            "",
            "",
            "",
            h.charset if header else "",
        ]
    ).rstrip("|")
    msa_text = text or (error.text if error else "")
    segments = [msh, "|".join(["MSA", ack_code, escape(h.control_id, e), escape(msa_text[:80], e)]).rstrip("|")]
    if error is not None:
        code = error.code
        code_ce = f"{code}^{escape(ERROR_TEXT.get(code, 'Error'), e)}^HL70357"
        seq = str(error.sequence) if error.segment else ""
        fld = str(error.field) if error.field else ""
        comp = str(error.component) if error.component else ""
        eld = "^".join([error.segment, seq, fld, code_ce.replace("^", "&")])
        erl = "^".join([error.segment, seq, fld, "" if not comp else "1", comp]).rstrip("^")
        severity = "E"
        segments.append("|".join(["ERR", eld, erl, code_ce, severity, "", "", "", escape(error.text[:250], e)]))
    return "\r".join(segments) + "\r"
