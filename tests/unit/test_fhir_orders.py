"""mappings.fhir_orders: ServiceRequest (+ Patient) to worklist actions."""

from __future__ import annotations

import pytest

from mappings.fhir_orders import FhirOrderError, service_request_actions

ACSN = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}, "value": "ACC7"}
PATIENT = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:h", "value": "P7"}], "name": [{"family": "Doe", "given": ["Ann", "B"]}], "gender": "female", "birthDate": "1949-02-03"}


def sr(**over):
    base = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "active",
        "intent": "order",
        "identifier": [ACSN],
        "subject": {"reference": "#p1"},
        "contained": [PATIENT],
        "occurrenceDateTime": "2026-11-24T08:15:00+00:00",
        "code": {"coding": [{"system": "http://loinc.org", "code": "38269-7", "display": "DXA"}]},
    }
    base.update(over)
    return base


def test_contained_patient():
    (action,) = service_request_actions(sr(), default_station_ae="DXA1")
    item = action.items[0]
    assert (item.patient_id, item.patient_name, item.birth_date, item.sex) == ("P7", "Doe^Ann^B", "19490203", "F")
    assert (item.accession_number, item.start_date, item.start_time, item.station_ae) == ("ACC7", "20261124", "081500", "DXA1")
    assert item.modality == "BMD"


def test_transaction_bundle():
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {k: v for k, v in PATIENT.items() if k != "id"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": sr(contained=None, subject={"reference": "urn:uuid:1"}), "request": {"method": "POST", "url": "ServiceRequest"}},
        ],
    }
    bundle["entry"][1]["resource"].pop("contained")
    (action,) = service_request_actions(bundle)
    assert action.items[0].patient_id == "P7"


@pytest.mark.parametrize(
    "body, status",
    [
        (sr(identifier=[]), 422),
        (sr(status="bogus"), 422),
        (sr(subject={"reference": "#nobody"}), 422),
        ({"resourceType": "Observation"}, 400),
        ([], 400),
        (sr(occurrenceDateTime="yesterday"), 422),
    ],
)
def test_invalid_input_names_the_problem(body, status):
    with pytest.raises(FhirOrderError) as err:
        service_request_actions(body)
    assert err.value.status == status
    assert err.value.issues and err.value.issues[0].diagnostics


def test_revoked_cancels():
    (action,) = service_request_actions(sr(status="revoked"))
    assert action.status == "CANCELLED" and action.key.accession == "ACC7"
