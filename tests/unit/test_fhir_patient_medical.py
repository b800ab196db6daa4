"""mappings.fhir_orders: priority and supportingInfo -> the worklist's Patient Medical attributes."""

from __future__ import annotations

import pytest

from mappings.fhir_orders import FhirOrderError, service_request_actions
from tests.unit.test_fhir_orders import PATIENT, sr

LOINC = "http://loinc.org"


def obs(rid: str, code: str, **value) -> dict:
    return {"resourceType": "Observation", "id": rid, "status": "final", "code": {"coding": [{"system": LOINC, "code": code}]}, **value}


HEIGHT = obs("h", "8302-2", valueQuantity={"value": 165, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"})
WEIGHT = obs("w", "29463-7", valueQuantity={"value": 61.2, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"})
PREGNANCY = obs("preg", "82810-3", valueCodeableConcept={"coding": [{"system": LOINC, "code": "LA15173-0", "display": "Pregnant"}]})
ALLERGY = {"resourceType": "AllergyIntolerance", "id": "al", "patient": {"reference": "#p1"}, "code": {"text": "Penicillin"}}
REFUTED = {
    "resourceType": "AllergyIntolerance",
    "id": "al2",
    "patient": {"reference": "#p1"},
    "code": {"text": "Latex"},
    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "refuted"}]},
}


def _item(body):
    (action,) = service_request_actions(body)
    return action.items[0]


def test_supporting_info_observations_and_allergies_become_patient_medical_attributes():
    """PS3.3 C.2.4: Patient's Size in m, Weight in kg, Pregnancy Status 3 = definitely pregnant, Allergies."""
    body = sr(
        contained=[PATIENT, HEIGHT, WEIGHT, PREGNANCY, ALLERGY, REFUTED],
        supportingInfo=[{"reference": f"#{r}"} for r in ("h", "w", "preg", "al", "al2")],
        priority="urgent",
    )
    item = _item(body)
    assert (item.patient_size, item.patient_weight, item.pregnancy_status) == ("1.65", "61.2", 3)
    assert item.allergies == ("Penicillin",)
    assert item.requested_procedure_priority == "HIGH"


@pytest.mark.parametrize("priority, expected", [("stat", "STAT"), ("asap", "HIGH"), ("urgent", "HIGH"), ("routine", "ROUTINE"), (None, "")])
def test_priority(priority, expected):
    body = sr() if priority is None else sr(priority=priority)
    assert _item(body).requested_procedure_priority == expected


def test_supporting_info_in_a_bundle():
    patient = {k: v for k, v in PATIENT.items() if k != "id"}
    order = sr(subject={"reference": "urn:uuid:1"}, supportingInfo=[{"reference": "urn:uuid:2"}])
    order.pop("contained")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": patient, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:2", "resource": WEIGHT, "request": {"method": "POST", "url": "Observation"}},
            {"resource": order, "request": {"method": "POST", "url": "ServiceRequest"}},
        ],
    }
    assert _item(bundle).patient_weight == "61.2"


def test_a_weight_in_an_unknown_unit_is_refused_naming_the_element():
    bad = obs("w", "29463-7", valueQuantity={"value": 9, "unit": "stone", "code": "[stone_av]"})
    with pytest.raises(FhirOrderError) as err:
        service_request_actions(sr(contained=[PATIENT, bad], supportingInfo=[{"reference": "#w"}]))
    assert err.value.issues[0].expression == "ServiceRequest.supportingInfo[0].valueQuantity"
