"""Procedure status back to the RIS: ORM^O01 with ORC-1 SC (HL7 v2.5.1 4.5.1).

ORC-5 carries the new order status (HL7 Table 0038): IP in process, CM
completed, DC discontinued, so the RIS sees the step begin and end.
Pure: the caller passes the control ID and the time.
"""

from __future__ import annotations

from hl7v2.er7 import components, message, segment
from hl7v2.escaping import escape
from mappings.worklist import WorklistItem

ORDER_STATUS = {"IN PROGRESS": "IP", "COMPLETED": "CM", "DISCONTINUED": "DC"}


def _pn_to_xpn(pn: str) -> str:
    """DICOM PN (Family^Given^Middle^Prefix^Suffix) -> XPN (family^given^middle^suffix^prefix)."""
    family, given, middle, prefix, suffix = (pn.split("^") + [""] * 5)[:5]
    return components(family, given, middle, suffix, prefix)


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
    code = item.requested_procedure_code if item else None
    segments = [
        segment("MSH", {3: escape(sending_application), 4: escape(sending_facility), 7: timestamp, 9: "ORM^O01^ORM_O01",
                        10: escape(control_id), 11: "P", 12: "2.5.1", 15: "AL", 16: "NE", 18: "UNICODE UTF-8"}),
        segment("PID", {1: "1", 3: f"{patient_id}^^^{issuer}^MR" if item else "", 5: _pn_to_xpn(item.patient_name) if item else ""}),
        segment("ORC", {1: "SC", 2: escape(item.placer_order_number) if item else "", 3: escape(item.filler_order_number) if item else "", 5: status}),
        segment(
            "OBR",
            {1: "1", 2: escape(item.placer_order_number) if item else "", 3: escape(item.filler_order_number) if item else "",
             4: components(code.value, code.meaning, code.scheme, trim=False) if code else "", 18: escape(accession)},
            trim=True,
        ),
        segment("ZDS", {1: f"{escape(study_uid)}^DXAGW^Application^DICOM"}),
    ]  # fmt: skip
    return message(segments)
