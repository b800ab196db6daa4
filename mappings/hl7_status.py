"""Procedure status back to the RIS: ORM^O01 with ORC-1 SC (HL7 v2.5.1 4.5.1).

ORC-5 carries the new order status (HL7 Table 0038): IP in process, CM
completed, DC discontinued, so the RIS sees the step begin and end.
Pure: the caller passes the control ID and the time.
"""

from __future__ import annotations

from mappings.hl7_text import escape
from mappings.worklist import WorklistItem

ORDER_STATUS = {"IN PROGRESS": "IP", "COMPLETED": "CM", "DISCONTINUED": "DC"}


def _pn_to_xpn(pn: str) -> str:
    parts = (pn.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (escape(p) for p in parts)
    return "^".join([family, given, middle, suffix, prefix]).rstrip("^")


def build_status_message(
    item: WorklistItem | None,
    *,
    mpps_status: str,
    study_uid: str,
    accession: str,
    control_id: str,
    timestamp: str,
    sending_application: str = "DXAGW",
    sending_facility: str = "DXA",
) -> str:
    """The status message for one performed step (unscheduled: no order numbers)."""
    status = ORDER_STATUS.get(mpps_status, "IP")
    patient_id = escape(item.patient_id) if item else ""
    issuer = escape(item.issuer_of_patient_id) if item else ""
    segments = [
        "|".join(["MSH", "^~\\&", escape(sending_application), escape(sending_facility), "", "", timestamp, "", "ORM^O01^ORM_O01", escape(control_id), "P", "2.5.1", "", "", "AL", "NE", "", "UNICODE UTF-8"]),
        "|".join(["PID", "1", "", f"{patient_id}^^^{issuer}^MR" if item else "", "", _pn_to_xpn(item.patient_name) if item else ""]),
        "|".join(["ORC", "SC", escape(item.placer_order_number) if item else "", escape(item.filler_order_number) if item else "", "", status]),
        "|".join(
            ["OBR", "1", escape(item.placer_order_number) if item else "", escape(item.filler_order_number) if item else "",
             f"{escape(item.requested_procedure_code.value)}^{escape(item.requested_procedure_code.meaning)}^{escape(item.requested_procedure_code.scheme)}" if item and item.requested_procedure_code else "",
             "", "", "", "", "", "", "", "", "", "", "", "", "", escape(accession), "", "", "", "", "", "", "", "", ""]
        ).rstrip("|"),
        "|".join(["ZDS", f"{escape(study_uid)}^DXAGW^Application^DICOM"]),
    ]
    return "\r".join(segments) + "\r"
