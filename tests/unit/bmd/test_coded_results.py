"""Issue 14 defects 1 and 10: coded results carry what the diagnosis used, and
the ORU / FHIR Bundle say who ordered, who reported and which order it answers."""

import dataclasses
from decimal import Decimal as D

from fhir.resources.R4B.bundle import Bundle
from hl7apy.parser import parse_message

from mappings.bmd import classify as cl
from mappings.bmd.fhir_bundle import FhirContext, build_bundle
from mappings.bmd.hl7_oru import OruContext, build_oru_r01
from mappings.bmd.models import DoseRecord
from tests.unit.bmd.helpers import region
from tests.unit.bmd.pipeline import exam_and_report

CTX = dict(message_control_id="M1", timestamp="20240502090000", result_status="F")


def _spine_exam():
    """L3 excluded: the diagnosis uses L1,L2,L4; L1-L4 is also reported."""
    exam, _, comp, text = exam_and_report()
    regions = list(exam.regions)
    regions.insert(4, region("L1-L4", None, "0.910", "-1.2", "-0.6"))
    exam = dataclasses.replace(exam, regions=tuple(regions))
    return exam, cl.classify(exam, age=66, sex="F", menopausal=True), comp, text


def _obx(msg):
    m = parse_message(msg, find_groups=False)
    return m, {s.obx_3.value: s for s in m.obx if s.obx_2.value == "NM"}


def test_coded_lumbar_spine_is_the_total_the_diagnosis_used():
    """ISCD Official Positions (exclude vertebrae, use the remaining ones): the
    lumbar-spine LOINC codes (24966-4, 38267-1) carry the L1,L2,L4 values the
    diagnosis used, vertebrae named; the L1-L4 total goes under the local code only."""
    exam, c, comp, text = _spine_exam()
    assert c.spine.site == "L1,L2,L4"
    _, obx = _obx(build_oru_r01(exam, c, comp, text, OruContext(**CTX)))
    coded = {k.split("^")[0]: v for k, v in obx.items()}
    assert coded["24966-4"].obx_5.value == "0.864" and "L1,L2,L4" in coded["24966-4"].obx_3.value
    assert coded["38267-1"].obx_5.value == "-1.6"
    assert "L1-L4.bmd^Lumbar spine L1-L4 BMD^99DXAGW" in obx  # local only
    bundle = build_bundle(exam, c, text, FhirContext(issued="2024-05-02T09:00:00+00:00"))
    spine_obs = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation" and e["resource"]["code"]["coding"][0]["code"] == "24966-4"
    ]
    assert len(spine_obs) == 1 and str(spine_obs[0]["valueQuantity"]["value"]) == "0.864"
    assert "L1,L2,L4" in spine_obs[0]["code"]["text"]


def test_oru_order_numbers_referrer_and_interpreter():
    """HL7 v2.5.1 chapter 4/7: ORC-2/OBR-2 placer order number (from the order),
    ORC-3/OBR-3 filler order number, OBR-16 ordering provider, OBR-32 principal
    result interpreter; OBR-25 ``C`` for a corrected result (issue 14 defect 10)."""
    exam, c, comp, text = _spine_exam()
    ctx = OruContext(
        **{**CTX, "result_status": "C"},
        placer_order_number="PL-77",
        filler_order_number="FL-88",
        ordering_provider="Jones^Pat^^Dr",
        interpreter="Reporter^Ann",
        interpreter_id="R123",
        interpreted_at="20240502085500",
    )
    msg = build_oru_r01(exam, c, comp, text, ctx)
    m, _ = _obx(msg)
    assert m.orc.orc_2.value == "PL-77" and m.orc.orc_3.value == "FL-88"
    assert m.obr.obr_2.value == "PL-77" and m.obr.obr_3.value == "FL-88"
    assert m.obr.obr_16.value == "^Jones^Pat^^^Dr"
    assert m.obr.obr_32.value == "R123&Reporter&Ann^20240502085500"
    assert m.obr.obr_25.value == "C"


def test_who_category_carries_snomed_beside_the_local_code():
    """DOMAIN.md section 3/4: the WHO category is sent with SNOMED CT
    (64859006 Osteoporosis, 312894000 Osteopenia) beside the gateway's code."""
    exam, c, comp, text = _spine_exam()
    m, _ = _obx(build_oru_r01(exam, c, comp, text, OruContext(**CTX)))
    (category,) = [s for s in m.obx if s.obx_2.value == "CWE"]
    assert category.obx_5.value.split("^")[3:] == ["64859006", "Osteoporosis (disorder)", "SCT"]
    bundle = build_bundle(exam, c, text, FhirContext(issued="2024-05-02T09:00:00+00:00"))
    (report,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert {"system": "http://snomed.info/sct", "code": "64859006", "display": "Osteoporosis (disorder)"} in report["conclusionCode"][0]["coding"]


def test_radius_codes_carry_laterality():
    """LOINC (OHDSI LOINC listing, DOMAIN.md section 3): DXA Radius and Ulna - left
    80952-5 / 80944-2 / 80936-8 and - right 80951-7 / 80943-4 / 80935-0; a side
    known from the scan goes out under the side's code, 24890-6 only without a side."""
    exam, c, comp, text = _spine_exam()
    exam = dataclasses.replace(exam, regions=exam.regions + (region("radius_33", "R", "0.660", "-0.7", "0.1"), region("radius_33", None, "0.655", "-0.75", "0.0")))
    _, obx = _obx(build_oru_r01(exam, c, comp, text, OruContext(**CTX)))
    assert "80952-5^Left radius 33% BMD^LN^L.radius_33.bmd^Left radius 33% BMD^99DXAGW" in obx
    assert "80944-2^Left radius 33% T-score^LN^L.radius_33.t_score^Left radius 33% T-score^99DXAGW" in obx
    assert "80951-7^Right radius 33% BMD^LN^R.radius_33.bmd^Right radius 33% BMD^99DXAGW" in obx
    assert "80935-0^Right radius 33% Z-score^LN^R.radius_33.z_score^Right radius 33% Z-score^99DXAGW" in obx
    assert "24890-6^Radius 33% BMD^LN^radius_33.bmd^Radius 33% BMD^99DXAGW" in obx


def test_fhir_performer_interpreter_and_dose_observation():
    """US Core DiagnosticReport (performer, resultsInterpreter) and IR(ME)R dose
    record: the dose goes out as an Observation (DICOM 113722 Dose Area Product Total)."""
    exam, c, comp, text = _spine_exam()
    exam = dataclasses.replace(exam, dose=DoseRecord(dap=D("0.42"), dap_units="dGy.cm2", entrance_dose=D("0.146"), entrance_dose_units="mGy", source="attributes"))
    ctx = FhirContext(issued="2024-05-02T09:00:00+00:00", status="C", performer="DXA service, City Hospital", interpreter="Ann Reporter", interpreter_id="R123")
    bundle = build_bundle(exam, c, text, ctx)
    Bundle.model_validate(bundle)
    (report,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["status"] == "amended"
    assert report["performer"] == [{"display": "DXA service, City Hospital"}]
    assert report["resultsInterpreter"][0]["display"] == "Ann Reporter"
    assert report["resultsInterpreter"][0]["identifier"]["value"] == "R123"
    dose = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation" and e["resource"]["code"]["coding"][0]["code"] == "113722"]
    assert len(dose) == 1 and str(dose[0]["valueQuantity"]["value"]) == "0.42" and dose[0]["valueQuantity"]["code"] == "dGy.cm2"
    assert dose[0]["code"]["coding"][0]["system"] == "http://dicom.nema.org/resources/ontology/DCM"


def test_frax_with_and_without_bmd_both_coded():
    """Seed 001 "Reporting" / NOGG (FRAX with BMD): FRAX with BMD goes under LOINC
    90265-0 / 90266-8; the scanner's without-BMD figures go too, under local codes."""
    exam, c, comp, text = _spine_exam()
    _, obx = _obx(build_oru_r01(exam, c, comp, text, OruContext(**CTX)))
    values = {k.split("^")[0]: v.obx_5.value for k, v in obx.items()}
    assert values["90265-0"] == "18.0" and values["90266-8"] == "4.5"
    assert values["frax_major_without_bmd"] == "20.1" and values["frax_hip_without_bmd"] == "6.30"
    bundle = build_bundle(exam, c, text, FhirContext(issued="2024-05-02T09:00:00+00:00"))
    codes = {e["resource"]["code"]["coding"][0]["code"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"}
    assert {"90265-0", "90266-8", "frax_major_without_bmd", "frax_hip_without_bmd"} <= codes
