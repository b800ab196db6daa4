"""Issue 14 in the real daemon: what was signed is what is sent (defect 11), the
order's clinical context and the radiographer's reach the report (defect 8),
and the ORU names the order, referrer and reporter (defect 10)."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.request
from decimal import Decimal

import orjson
import pytest
from hl7apy.parser import parse_message
from pydicom.uid import generate_uid

from mappings.bmd.samples import hologic_sr
from tests.fhir_peer import FhirPeer
from tests.hl7_messages import orm, segment
from tests.integration.test_exams import exam_of, store
from tests.mllp_peer import MllpPeer
from tests.orthanc import wait_for
from tests.support import MllpClient, ack_fields, start_daemon
from tests.unit.bmd.helpers import HOLOGIC, known_exam


def call(daemon, method: str, path: str, body: dict | None = None):
    data = orjson.dumps(body) if body is not None else None
    headers = dict(daemon.headers, **({"Content-Type": "application/json"} if data is not None else {}))
    req = urllib.request.Request(daemon.http + path, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            raw = rsp.read()
            return rsp.status, (orjson.loads(raw) if rsp.headers.get_content_type() == "application/json" else raw.decode())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def _pair(patient_id: str, accession: str):
    """A previous exam (2022) and the current one (2024), 0.050 g/cm2 lower everywhere."""
    current = known_exam("hologic", HOLOGIC, patient_id=patient_id, accession_number=accession, sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    previous = dataclasses.replace(
        current,
        exam_date="20220501",
        accession_number=accession + "-OLD",
        sop_instance_uid=generate_uid(),
        study_instance_uid=generate_uid(),
        regions=tuple(dataclasses.replace(r, bmd=r.bmd + Decimal("0.050")) for r in current.regions),
    )
    return previous, current


# The study's results are drafted this long after its last object (reports.settle_seconds).
SETTLE = {"settle_seconds": 0.3}


def _destinations(emr, fhir, retry_base: float):
    return {
        "emr": {"type": "hl7", "host": "127.0.0.1", "port": emr.port, "retry_base": retry_base, "retry_cap": retry_base},
        "fhir": {"type": "fhir", "url": fhir.url, "retry_base": retry_base, "retry_cap": retry_base},
    }


def test_retry_after_restart_with_another_lsc_is_byte_identical(tmp_path):
    """docs/architecture.md rule 9 / issue 14 defect 11 (IR(ME)R: the signed evaluation is the
    record): the ORU and the Bundle are rendered when the report is released and
    stored with their sha256; the EMR refuses the first attempt, the gateway is
    restarted with another LSC and another sending application, and the retry
    sends exactly the bytes of the first attempt.  An amendment is a new version
    with its own payload (OBR-25 ``C``, FHIR ``amended``)."""
    emr = MllpPeer(script=["AE"], default="AA")
    fhir = FhirPeer(status=503)
    routes = [{"match": {"kind": "report"}, "to": ["emr", "fhir"]}]
    d = start_daemon(tmp_path, {"storage": {"min_free_bytes": 0}, "reports": SETTLE, "destinations": _destinations(emr, fhir, 3.0), "routes": routes})
    try:
        previous, current = _pair("PRELEASE", "ACC-REL")
        store(d, hologic_sr(previous), tmp_path / "a.dcm")
        assert wait_for(lambda: exam_of(hologic_sr(previous))(d), 15)
        ds = hologic_sr(current)
        store(d, ds, tmp_path / "b.dcm")
        row = wait_for(lambda: exam_of(ds)(d), 15)
        assert row["comparison"]["comparable"]
        status, body = call(d, "POST", f"/api/exams/{row['id']}/sign", {"role": "Consultant radiologist", "comment": "Agree."})
        assert status == 201 and body["status"] == "F"
        assert wait_for(lambda: len(emr.received) >= 1 and len(fhir.received) >= 1, 15)
    finally:
        d.stop()
    fhir.status = 200
    # restart: another LSC (no change is now significant) and another MSH-3
    overrides = {
        "storage": {"min_free_bytes": 0},
        "destinations": _destinations(emr, fhir, 0.3),
        "routes": routes,
        "hl7": {"application": "OTHERAPP"},
        "reports": {**SETTLE, "lsc_absolute": {"spine": 0.5, "neck": 0.5, "total_hip": 0.5}},
    }
    d = start_daemon(tmp_path, overrides)
    try:
        assert wait_for(lambda: len(emr.received) >= 2 and len(fhir.received) >= 2, 20), d.log_text()[-2000:]
        first_oru, retried_oru = emr.received[0], emr.received[1]
        assert retried_oru == first_oru  # byte for byte (the peer keeps the exact UTF-8 text)
        assert fhir.received[1] == fhir.received[0]
        assert "significant decrease" in first_oru and "|DXAGW|" in first_oru  # rendered under the first config
        status, versions = call(d, "GET", f"/api/exams/{row['id']}/reports")
        assert status == 200 and len(versions) == 1
        hashes = {p["destination"]: p["sha256"] for p in versions[0]["payloads"]}
        assert hashes["emr"] == hashlib.sha256(first_oru.encode("utf-8")).hexdigest()
        assert hashes["fhir"] == hashlib.sha256(fhir.received[0]).hexdigest()
        msg = parse_message(first_oru, find_groups=False)
        assert msg.obr.obr_25.value == "F"
        assert msg.obr.obr_32.value.startswith("test&Dr Test Reporter")  # CNN: identity id & name

        # an amendment: a new version, rendered now (new config), its own payload
        status, body = call(d, "POST", f"/api/exams/{row['id']}/sign", {"amendment": "LSC corrected."})
        assert status == 201 and body["status"] == "C"
        assert wait_for(lambda: len(emr.received) >= 3 and len(fhir.received) >= 3, 15)
        amended = emr.received[2]
        m = parse_message(amended, find_groups=False)
        assert m.obr.obr_25.value == "C" and "|OTHERAPP|" in amended and "Amendment: LSC corrected." in amended
        assert "no significant change" in amended
        bundle = orjson.loads(fhir.received[2])
        report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
        assert report["status"] == "amended"
        status, versions = call(d, "GET", f"/api/exams/{row['id']}/reports")
        assert [v["status"] for v in versions] == ["F", "C"]
        assert versions[0]["payloads"][0]["sha256"] != versions[1]["payloads"][0]["sha256"]
    finally:
        d.stop()
        emr.close()
        fhir.close()


@pytest.fixture(scope="module")
def peers():
    emr, fhir = MllpPeer(default="AA"), FhirPeer()
    yield emr, fhir
    emr.close()
    fhir.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, peers):
    emr, fhir = peers
    d = start_daemon(
        tmp_path_factory.mktemp("context"),
        {"storage": {"min_free_bytes": 0}, "reports": SETTLE, "destinations": _destinations(emr, fhir, 0.3), "routes": [{"match": {"kind": "report"}, "to": ["emr", "fhir"]}]},
    )
    yield d
    d.stop()


def test_order_context_reaches_classification_report_and_oru(daemon, peers, tmp_path):
    """Issue 14 defects 8 and 10; WHO/ISCD (DOMAIN.md section 4): a fragility
    fracture stated in the order (HL7 OBX) makes a T-score of -2.5 established
    osteoporosis; height and weight (LOINC 8302-2, 29463-7) give the BMI in the
    report (seed 001 "Reporting"); the ORU carries the order's placer (ORC-2,
    OBR-2) and filler (ORC-3, OBR-3) numbers and the ordering provider (OBR-16)."""
    emr, _ = peers
    order = orm("CTXORD1", placer="PL-CTX", filler="FL-CTX", accession="ACC-CTX", patient_id="PCTX").rstrip("\r")
    order += "\r" + "\r".join(
        [
            segment("OBX", {1: "1", 2: "NM", 3: "8302-2^Body height^LN", 5: "160", 6: "cm^cm^UCUM", 11: "F"}),
            segment("OBX", {1: "2", 2: "NM", 3: "29463-7^Body weight^LN", 5: "55", 6: "kg^kg^UCUM", 11: "F"}),
            segment("OBX", {1: "3", 2: "CWE", 3: "FRAC^Previous fragility fracture^L", 5: "Y^Yes^HL70136", 11: "F"}),
            segment("NTE", {1: "1", 3: "Wrist fracture after a fall from standing, 2019"}),
        ]
    ) + "\r"
    client = MllpClient(daemon.hl7_port)
    try:
        assert ack_fields(client.send(order))["MSA"][1] == "AA"
    finally:
        client.close()
    known = known_exam("hologic", HOLOGIC, patient_id="PCTX", accession_number="ACC-CTX", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(known)
    store(daemon, ds, tmp_path / "sr.dcm")
    row = wait_for(lambda: exam_of(ds)(daemon), 15)
    assert row["classification"]["category"] == "established_osteoporosis"
    assert row["context"]["fragility_fracture"] is True and row["context"]["height_cm"] == "160.0"
    text = call(daemon, "GET", f"/api/exams/{row['id']}/report")[1]
    assert "BMI 21.5 kg/m2" in text and "Referrer: Olga Orderer" in text and "Wrist fracture after a fall" in text
    before = len(emr.received)
    assert call(daemon, "POST", f"/api/exams/{row['id']}/sign", {})[0] == 201
    assert wait_for(lambda: len(emr.received) > before, 15)
    msg = parse_message(emr.received[-1], find_groups=False)
    assert msg.orc.orc_2.value == "PL-CTX" and msg.obr.obr_2.value == "PL-CTX"
    assert msg.orc.orc_3.value == "FL-CTX" and msg.obr.obr_3.value == "FL-CTX"
    assert msg.obr.obr_16.value == "^Orderer^Olga"
    category = next(s for s in msg.obx if s.obx_2.value == "CWE")
    assert category.obx_5.value.startswith("established_osteoporosis^")


def test_radiographer_context_put_is_used_and_bad_values_refused(daemon, tmp_path):
    """Issue 14 defect 8; ISCD Official Positions (33% radius in
    hyperparathyroidism): the radiographer's context (PUT /api/exams/{id}/context)
    reaches the classifier; a bad value is refused by name (422) and changes nothing."""
    known = known_exam("hologic", HOLOGIC, patient_id="PRAD", accession_number="ACC-RAD", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(known)
    store(daemon, ds, tmp_path / "sr.dcm")
    row = wait_for(lambda: exam_of(ds)(daemon), 15)
    assert row["classification"]["category"] == "osteoporosis"
    status, body = call(daemon, "PUT", f"/api/exams/{row['id']}/context", {"height_cm": "tall"})
    assert status == 422 and body["key"] == "height_cm"
    status, body = call(daemon, "PUT", f"/api/exams/{row['id']}/context", {"fragility_fracture": True, "technical_notes": ["Movement artefact at L3"]})
    assert status == 200, body
    assert body["classification"]["category"] == "established_osteoporosis"
    text = call(daemon, "GET", f"/api/exams/{row['id']}/report")[1]
    assert "Operator: Movement artefact at L3" in text and "Established (severe) osteoporosis." in text
    assert call(daemon, "PUT", "/api/exams/999999/context", {"fragility_fracture": True})[0] == 404


def test_auto_release_stores_the_payload_it_sends(tmp_path):
    """docs/architecture.md rule 9 with ``reports.auto_release``: the preliminary report
    released without a signature (never FINAL: README "Security") also has its
    ORU rendered once, stored with its sha256, and sent as stored; the report
    says it was released without a reporter's review."""
    emr, fhir = MllpPeer(default="AA"), FhirPeer()
    d = start_daemon(
        tmp_path,
        {
            "storage": {"min_free_bytes": 0},
            "reports": {**SETTLE, "auto_release": True},
            "destinations": _destinations(emr, fhir, 0.3),
            "routes": [{"match": {"kind": "report"}, "to": ["emr"]}],
        },
    )
    try:
        known = known_exam("hologic", HOLOGIC, patient_id="PAUTO", accession_number="ACC-AUTO", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        ds = hologic_sr(known)
        store(d, ds, tmp_path / "sr.dcm")
        row = wait_for(lambda: exam_of(ds)(d), 15)
        assert row["report"]["status"] == "P"
        assert wait_for(lambda: emr.received, 15)
        versions = call(d, "GET", f"/api/exams/{row['id']}/reports")[1]
        payloads = {p["destination"]: p for p in versions[0]["payloads"]}
        assert set(payloads) == {"emr", "document:pdf"}  # the ORU, and the version's PDF (issue 15)
        payload = payloads["emr"]
        assert payload["format"] == "hl7-oru" and payloads["document:pdf"]["format"] == "pdf"
        assert payload["sha256"] == hashlib.sha256(emr.received[0].encode("utf-8")).hexdigest()
        assert "Reported by: auto-release" in emr.received[0]
        assert "without a reporter's review" in emr.received[0]
        assert "NOT CLINICALLY EVALUATED" in emr.received[0]
    finally:
        d.stop()
        emr.close()
        fhir.close()


def test_fhir_order_context_reaches_the_classifier(daemon, tmp_path):
    """Issue 14 defect 8; ISCD Official Positions (33% radius in hyperparathyroidism):
    a FHIR ServiceRequest's reasonCode (ICD-10 E21.0) and supportingInfo
    Observation (LOINC 8302-2 body height) are kept with the order and used
    for the exam that answers it."""
    sr = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "contained": [
            {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:hosp", "value": "PFCTX"}], "name": [{"family": "Fhir", "given": ["Frida"]}], "gender": "female", "birthDate": "1958-03-12"},
            {"resourceType": "Observation", "id": "h", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body height"}]}, "valueQuantity": {"value": 158, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}},
        ],
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}, "value": "ACC-FCTX"}],
        "subject": {"reference": "#p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "38269-7", "display": "DXA Bone density"}]},
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E21.0", "display": "Primary hyperparathyroidism"}]}],
        "supportingInfo": [{"reference": "#h"}],
        "occurrenceDateTime": "2024-05-01T10:30:00+01:00",
        "extension": [{"url": "http://dxa-gateway.org/fhir/StructureDefinition/scheduled-station-ae", "valueString": "DXA1"}],
    }
    req = urllib.request.Request(daemon.http + "/fhir/ServiceRequest", method="POST", data=orjson.dumps(sr), headers={"Content-Type": "application/fhir+json", **daemon.headers})
    with urllib.request.urlopen(req, timeout=10) as rsp:
        assert rsp.status == 201
    known = known_exam("hologic", HOLOGIC, patient_id="PFCTX", accession_number="ACC-FCTX", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(known)
    store(daemon, ds, tmp_path / "sr.dcm")
    row = wait_for(lambda: exam_of(ds)(daemon), 15)
    assert row["context"]["hyperparathyroidism"] is True and row["context"]["height_cm"] == "158.0"
    assert any("33% radius included because of hyperparathyroidism" in n for n in row["classification"]["notes"])
    text = call(daemon, "GET", f"/api/exams/{row['id']}/report")[1]
    assert "Indication: Primary hyperparathyroidism" in text and "Height 158.0 cm" in text
