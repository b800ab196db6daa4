"""Fracture liaison triggers and notifications (mappings/bmd/fls.py)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import orjson
from hl7apy.parser import parse_message

from mappings.bmd.classify import classify
from mappings.bmd.fls import FlsContext, build_fls_ref_i12, build_fls_task_bundle, fls_reasons, vfa_reports_fracture
from mappings.clinical_context import ClinicalContext
from tests.unit.bmd.helpers import HOLOGIC, known_exam

CTX = FlsContext(control_id="DXAGWF7.1", timestamp="20240501120000+0000", issued="2024-05-01T12:00:00+00:00", report_ref="R7",
                 referrer="Reporter^Rita", referrer_id="rr1", placer_order_number="PL-1", filler_order_number="FL-1")  # fmt: skip


def _normal():
    exam = known_exam("hologic", HOLOGIC)
    return dataclasses.replace(exam, regions=tuple(dataclasses.replace(r, t_score=Decimal("0.5"), z_score=Decimal("0.6")) for r in exam.regions))


def _classified(exam, ctx=ClinicalContext()):
    return classify(exam, age=66, sex="F", menopausal=True, context=ctx)


def test_osteoporosis_triggers_and_normal_does_not():
    """Seed 000 section 12 (FLS integration); WHO/ISCD: T <= -2.5 is osteoporosis.
    A normal exam with nothing in the clinical context calls for no notification."""
    assert fls_reasons(_classified(known_exam("hologic", HOLOGIC)), ClinicalContext()) == ("osteoporosis",)
    assert fls_reasons(_classified(_normal()), ClinicalContext()) == ()


def test_fragility_fracture_and_vfa_finding_trigger_with_normal_bmd():
    """Seed 000 section 12: FLS care is for patients with a fragility fracture
    (NOGG: low-trauma fracture after 50), whatever the BMD; a vertebral fracture
    found on VFA is a prevalent fracture too."""
    c = _classified(_normal())
    assert fls_reasons(c, ClinicalContext(fragility_fracture=True)) == ("fragility_fracture",)
    assert fls_reasons(c, ClinicalContext(vertebral_fracture=True)) == ("fragility_fracture",)
    assert fls_reasons(c, ClinicalContext(vfa_result="Grade 2 wedge fracture T12")) == ("vfa_finding",)
    assert fls_reasons(c, ClinicalContext(fragility_fracture=False, vfa_result="No vertebral fracture seen.")) == ()


def test_vfa_negative_wordings():
    for negative in ("Normal", "no fracture", "No vertebral fractures identified", "NAD", "not performed", ""):
        assert not vfa_reports_fracture(negative), negative
    for finding in ("Genant grade 1 L1", "T8 and T11 fractures", "Fracture T12"):
        assert vfa_reports_fracture(finding), finding


def test_ref_i12_parses_and_names_the_reasons():
    """HL7 v2.5.1 chapter 11.3.1: REF^I12 with RF1, PRD referring / referred-to, PID."""
    exam = known_exam("hologic", HOLOGIC)
    c = _classified(exam)
    msg = build_fls_ref_i12(exam, c, ("osteoporosis", "vfa_finding"), CTX)
    m = parse_message(msg, find_groups=False)
    assert m.msh.msh_9.value == "REF^I12^REF_I12" and m.msh.msh_10.value == "DXAGWF7.1"
    assert m.rf1.rf1_1.value.startswith("P^") and m.rf1.rf1_6.value.startswith("DXAGWF7.1")
    prd = [s for s in msg.split("\r") if s.startswith("PRD|")]
    assert prd[0].startswith("PRD|RP^") and "Reporter^Rita" in prd[0] and prd[1].startswith("PRD|RT^")
    assert "PID|1||PAT-001||Smith^Anne^M|" in msg
    obx = [s.split("|") for s in msg.split("\r") if s.startswith("OBX|")]
    assert [o[1] for o in obx] == [str(n) for n in range(1, len(obx) + 1)]
    reasons = [o[5].split("^")[0] for o in obx if o[3].startswith("DXA-FLS-REASON")]
    assert reasons == ["osteoporosis", "vfa_finding"]
    assert any(o[3].startswith("DXA-CATEGORY") and o[5].startswith("osteoporosis") for o in obx)
    assert any(o[3].startswith("DXA-REPORT-REF") and o[5].startswith("R7 ") for o in obx)


def test_task_bundle_is_idempotent_and_points_at_the_report():
    """FHIR R4 Task: conditional update by identifier (a resend changes nothing)."""
    exam = known_exam("hologic", HOLOGIC)
    b = build_fls_task_bundle(exam, _classified(exam), ("osteoporosis",), CTX)
    orjson.dumps(b)
    patient, task = (e["resource"] for e in b["entry"])
    assert patient["resourceType"] == "Patient" and task["resourceType"] == "Task"
    assert b["entry"][1]["request"] == {"method": "PUT", "url": "Task?identifier=urn:dxa-gateway:fls-task|DXAGWF7.1"}
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["for"]["reference"] == b["entry"][0]["fullUrl"]
    assert task["focus"]["identifier"]["value"] == f"urn:oid:{exam.sop_instance_uid}"
    assert [c["code"] for c in task["reasonCode"]["coding"]] == ["osteoporosis"]
