"""Issue 14 defect 8: the clinical context of a request, read from the order."""

from decimal import Decimal as D

import pytest

from mappings.clinical_context import ClinicalContext, ContextError, context_from_fhir_body, context_from_hl7
from tests.hl7_messages import orm, segment


def _with(*extra: str) -> bytes:
    return (orm("CTX1").rstrip("\r") + "\r" + "\r".join(extra) + "\r").encode()


def test_clinical_context_from_hl7_obx_dg1_nte():
    """Seed 001 "Referrals" and "Reporting": the request carries the indication,
    fracture history and risk factors; HL7 v2.5 OBX (LOINC 8302-2 body height,
    29463-7 body weight, labelled facts), DG1 (ICD-10 E21.0 primary
    hyperparathyroidism) and NTE (``Label: value`` lines) supply them."""
    raw = _with(
        segment("OBX", {1: "1", 2: "NM", 3: "8302-2^Body height^LN", 5: "64", 6: "[in_i]^inch^UCUM", 11: "F"}),
        segment("OBX", {1: "2", 2: "NM", 3: "29463-7^Body weight^LN", 5: "132", 6: "[lb_av]^pound^UCUM", 11: "F"}),
        segment("OBX", {1: "3", 2: "CWE", 3: "FRAC^Previous fragility fracture^L", 5: "Y^Yes^HL70136", 11: "F"}),
        segment("OBX", {1: "4", 2: "ST", 3: "MENO^Menopausal status^L", 5: "Postmenopausal", 11: "F"}),
        segment("DG1", {1: "1", 3: "E21.0^Primary hyperparathyroidism^I10"}),
        segment("NTE", {1: "1", 3: "Glucocorticoids: prednisolone 10 mg daily\\.br\\Fall from standing, wrist fracture 2019"}),
    )
    ctx = context_from_hl7(raw)
    assert ctx.height_cm == D("162.6") and ctx.weight_kg == D("59.9")
    assert ctx.bmi == D("22.7")
    assert ctx.fragility_fracture is True and ctx.menopausal is True
    assert ctx.hyperparathyroidism is True and ctx.glucocorticoids is True
    assert "Primary hyperparathyroidism" in ctx.indication and "wrist fracture 2019" in ctx.indication
    assert any("prednisolone" in r for r in ctx.risk_factors)
    assert ctx.sources == ("hl7",)


def test_clinical_context_not_stated_is_not_no():
    """A fact the order does not state stays unknown (None), never "no"."""
    ctx = context_from_hl7(_with(segment("OBX", {1: "1", 2: "CWE", 3: "FRAC^Previous fracture^L", 5: "N^No^HL70136"})))
    assert ctx.fragility_fracture is False and ctx.hyperparathyroidism is None and ctx.menopausal is None
    assert context_from_hl7(orm("CTX2").encode()).is_empty()


def test_clinical_context_from_fhir_reason_code_and_supporting_info():
    """FHIR R4 ServiceRequest.reasonCode (ICD-10 M80 osteoporosis with fracture)
    and supportingInfo Observations (LOINC 8302-2, 29463-7) in the Bundle."""
    body = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:sr",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "M80.0", "display": "Postmenopausal osteoporosis with fracture"}]}],
                    "supportingInfo": [{"reference": "urn:uuid:h"}, {"reference": "#w"}],
                    "contained": [{"resourceType": "Observation", "id": "w", "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "valueQuantity": {"value": 61.5, "code": "kg"}}],
                    "note": [{"text": "Forearm: yes"}],
                },
            },
            {"fullUrl": "urn:uuid:h", "resource": {"resourceType": "Observation", "id": "h", "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}, "valueQuantity": {"value": 1.58, "code": "m"}}},
        ],
    }
    ctx = context_from_fhir_body(body)
    assert ctx.fragility_fracture is True and ctx.forearm_indicated is True
    assert ctx.height_cm == D("158.0") and ctx.weight_kg == D("61.5")
    assert ctx.indication == "Postmenopausal osteoporosis with fracture"


def test_radiographer_context_wins_and_bad_values_are_named():
    """The radiographer at the scanner may correct the order's context; a bad value is refused by name."""
    order = ClinicalContext(fragility_fracture=False, height_cm=D("160.0"), sources=("hl7",))
    later = ClinicalContext.from_dict({"fragility_fracture": True, "technical_notes": ["Movement at L4"], "sources": ["radiographer"]})
    merged = order.merged(later)
    assert merged.fragility_fracture is True and merged.height_cm == D("160.0")
    assert merged.technical_notes == ("Movement at L4",) and merged.sources == ("hl7", "radiographer")
    assert ClinicalContext.from_dict(merged.to_dict()) == merged
    with pytest.raises(ContextError, match="height_cm"):
        ClinicalContext.from_dict({"height_cm": "tall"})
    with pytest.raises(ContextError, match="colour"):
        ClinicalContext.from_dict({"colour": "blue"})


def test_implausible_height_or_weight_is_not_guessed():
    """Bad input is refused, not guessed: a height of 640 cm (inches sent as cm)
    or an unknown unit gives no height, so no wrong BMI reaches the report."""
    ctx = context_from_hl7(
        _with(
            segment("OBX", {1: "1", 2: "NM", 3: "8302-2^Body height^LN", 5: "640", 6: "cm", 11: "F"}),
            segment("OBX", {1: "2", 2: "NM", 3: "29463-7^Body weight^LN", 5: "60", 6: "stone", 11: "F"}),
        )
    )
    assert ctx.height_cm is None and ctx.weight_kg is None and ctx.bmi is None
    with pytest.raises(ContextError, match="weight_kg"):
        ClinicalContext.from_dict({"weight_kg": 0})
