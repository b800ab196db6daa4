"""Fracture liaison: which released reports the FLS must hear of, and the notification (pure).

A DXA service integrates with the fracture liaison service (FLS) so that
patients at risk are found and treated (docs/domain.md section 5; ROS FLS
Clinical Standards).  A released report version triggers a notification when
it finds any of (docs/fls.md):

* ``osteoporosis``: WHO category osteoporosis or established osteoporosis
  (T-score <= -2.5; ISCD, WHO 1994);
* ``fragility_fracture``: the clinical context states a prevalent fragility
  fracture or a vertebral fracture (NOGG: low-trauma fracture after 50);
* ``vfa_finding``: the vertebral fracture assessment result, as read,
  reports a fracture (any recorded result that is not plainly negative).

Two renderings, chosen by the destination's type:

* HL7 v2.5.1 ``REF^I12`` (chapter 11.3.1, patient referral): RF1 (pending,
  routine, assume management), PRD referring (the reporter) and referred-to
  (the FLS), PID, then OBR/OBX giving the reasons, the category, the lowest
  score and the report version it refers to;
* FHIR R4 transaction Bundle: the Patient (conditional create) and a
  ``Task`` (intent ``order``, status ``requested``; conditional update by
  identifier, so a resend is idempotent) whose ``focus`` is the
  DiagnosticReport of the exam.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from mappings.bmd.classify import ESTABLISHED, OSTEOPOROSIS, Classification
from mappings.bmd.fhir_bundle import DICOM_UID, LOCAL_URL, FhirContext, _entry, _patient
from hl7v2.er7 import components, message, segment
from hl7v2.escaping import escape
from mappings.bmd.hl7_oru import LOCAL, VERSION, _ce, _xcn
from mappings.bmd.models import BmdExam
from mappings.clinical_context import ClinicalContext

OSTEOPOROSIS_REASON = "osteoporosis"
FRACTURE_REASON = "fragility_fracture"
VFA_REASON = "vfa_finding"

REASON_TEXT = {
    OSTEOPOROSIS_REASON: "Osteoporosis on DXA (WHO category)",
    FRACTURE_REASON: "Prevalent fragility fracture (clinical context)",
    VFA_REASON: "Vertebral fracture on vertebral fracture assessment",
}

FLS_CODE = ("DXA-FLS", LOCAL, "Fracture liaison service referral")
REASON_CODE = ("DXA-FLS-REASON", LOCAL, "Reason for fracture liaison referral")
CATEGORY_CODE = ("DXA-CATEGORY", LOCAL, "DXA diagnostic category")
LOWEST_CODE = ("DXA-LOWEST-SCORE", LOCAL, "Lowest score used for the diagnosis")
REPORT_REF_CODE = ("DXA-REPORT-REF", LOCAL, "Report version referred to")
TASK_SYSTEM = "urn:dxa-gateway:fls-task"

# A VFA result that says there is no fracture (as radiographers write it).
_NEGATIVE_VFA = re.compile(
    r"^\s*(normal|negative|nad|nil|none|not performed|not done|no\b.*\bfractures?\b|without\b.*\bfractures?\b)",
    re.IGNORECASE,
)


def fls_reasons(classification: Classification, ctx: ClinicalContext) -> tuple[str, ...]:
    """Why the FLS must hear of this report (empty: it need not)."""
    out = []
    if classification.category in (OSTEOPOROSIS, ESTABLISHED):
        out.append(OSTEOPOROSIS_REASON)
    if ctx.fragility_fracture or ctx.vertebral_fracture:
        out.append(FRACTURE_REASON)
    if vfa_reports_fracture(ctx.vfa_result):
        out.append(VFA_REASON)
    return tuple(out)


def vfa_reports_fracture(result: str) -> bool:
    """A recorded VFA result that is not plainly negative counts as a finding."""
    return bool(result.strip()) and not _NEGATIVE_VFA.match(result)


@dataclass(frozen=True, slots=True)
class FlsContext:
    """Envelope and references; the clock is the caller's."""

    control_id: str  # MSH-10 / Task identifier: one per report version per destination
    timestamp: str  # HL7 DTM of the release
    issued: str  # FHIR instant of the release
    report_ref: str  # the released version ("R12") the referral refers to
    result_status: str = "F"
    sending_application: str = "DXAGW"
    sending_facility: str = ""
    referrer: str = ""  # the reporter who signed (or "auto-release")
    referrer_id: str = ""
    placer_order_number: str = ""
    filler_order_number: str = ""


def _lowest(classification: Classification) -> str:
    if classification.lowest is None or classification.lowest_score is None:
        return ""
    return f"{classification.score_type} {classification.lowest_score} ({classification.lowest.name})"


def build_fls_ref_i12(exam: BmdExam, classification: Classification, reasons: tuple[str, ...], ctx: FlsContext) -> str:
    """The REF^I12 message text (segments joined by ``\\r``)."""
    when = escape(ctx.timestamp)
    msh = segment(
        "MSH",
        {3: components(ctx.sending_application), 4: components(ctx.sending_facility), 7: when, 9: "REF^I12^REF_I12",
         10: escape(ctx.control_id), 11: "P", 12: VERSION, 18: "UNICODE UTF-8"},
    )  # fmt: skip
    rf1 = segment(
        "RF1",
        {
            1: "P^Pending^HL70283",
            2: "R^Routine^HL70280",
            3: "Med^Medical^HL70281",
            4: "AM^Assume management^HL70282",
            5: "O^Outpatient^HL70284",
            6: components(ctx.control_id, ctx.sending_application),
            7: when,
            10: "O^Provider ordered^HL70336",
        },
    )
    referring = segment("PRD", {1: "RP^Referring provider^HL70286", 2: components(*ctx.referrer.split("^")[:3]) if ctx.referrer else "", 7: components(ctx.referrer_id)})
    referred = segment("PRD", {1: "RT^Referred to provider^HL70286", 2: "Fracture liaison service"})
    name = exam.patient_name.split("^")
    pid = segment("PID", {1: "1", 3: components(exam.patient_id), 5: components(*name[:5]), 7: escape(exam.patient_birth_date), 8: escape(exam.patient_sex)})
    obr = segment(
        "OBR",
        {1: "1", 2: components(ctx.placer_order_number), 3: components(ctx.filler_order_number), 4: _ce(FLS_CODE), 7: when,
         16: _xcn(ctx.referrer) if ctx.referrer else "", 18: escape(exam.accession_number), 25: escape(ctx.result_status)},
    )  # fmt: skip
    obx = [("CWE", REASON_CODE, str(k), _ce((r, LOCAL, REASON_TEXT[r]))) for k, r in enumerate(reasons, start=1)]
    obx.append(("CWE", CATEGORY_CODE, "1", _ce((classification.category, LOCAL, classification.category_text))))
    if _lowest(classification):
        obx.append(("ST", LOWEST_CODE, "1", escape(_lowest(classification))))
    obx.append(("ST", REPORT_REF_CODE, "1", escape(f"{ctx.report_ref} {exam.study_instance_uid}".strip())))
    segments = [msh, rf1, referring, referred, pid, obr]
    for n, (vt, code, sub, value) in enumerate(obx, start=1):
        segments.append(segment("OBX", {1: str(n), 2: vt, 3: _ce(code), 4: sub, 5: value, 11: escape(ctx.result_status), 14: when}))
    return message(segments, terminated=False)


def build_fls_task_bundle(exam: BmdExam, classification: Classification, reasons: tuple[str, ...], ctx: FlsContext) -> dict[str, Any]:
    """A FHIR R4 transaction Bundle: the Patient and the FLS Task."""
    fctx = FhirContext(issued=ctx.issued)
    patient_url = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_OID, f"{exam.sop_instance_uid}/patient"))
    pid = f"{fctx.patient_identifier_system}|{exam.patient_id}"
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": TASK_SYSTEM, "value": ctx.control_id}],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": LOCAL_URL, "code": FLS_CODE[0], "display": FLS_CODE[2]}], "text": FLS_CODE[2]},
        "description": "; ".join(REASON_TEXT[r] for r in reasons),
        "for": {"reference": patient_url},
        "focus": {"type": "DiagnosticReport", "identifier": {"system": DICOM_UID, "value": f"urn:oid:{exam.sop_instance_uid}"}},
        "authoredOn": ctx.issued,
        "owner": {"display": "Fracture liaison service"},
        "reasonCode": {
            "coding": [{"system": LOCAL_URL, "code": r, "display": REASON_TEXT[r]} for r in reasons],
            "text": _lowest(classification) or classification.category_text,
        },
    }
    if ctx.referrer:
        task["requester"] = {"display": ctx.referrer.replace("^", " ").strip()}
    entries = [
        _entry(patient_url, _patient(exam, fctx), "POST", "Patient", f"identifier={pid}"),
        _entry(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, ctx.control_id)}", task, "PUT", f"Task?identifier={TASK_SYSTEM}|{ctx.control_id}"),
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
