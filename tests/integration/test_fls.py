"""Issue 16 item 4 in the real daemon: an osteoporosis report reaches the
fracture liaison service, a normal one sends it nothing."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import orjson
from hl7apy.parser import parse_message
from pydicom.uid import generate_uid

from mappings.bmd.samples import hologic_sr
from tests.fhir_peer import FhirPeer
from tests.integration.test_exams import exam_of, store
from tests.integration.test_report_release import SETTLE, call
from tests.mllp_peer import MllpPeer
from tests.orthanc import wait_for
from tests.support import start_daemon
from tests.unit.bmd.helpers import HOLOGIC, known_exam


def test_osteoporosis_report_reaches_the_fls_and_a_normal_one_does_not(tmp_path):
    """Seed 000 section 12 (DXA services integrate with the FLS); WHO/ISCD:
    T <= -2.5 is osteoporosis.  The REF^I12 and the FHIR Task are rendered
    at the signature, stored with the version (docs/architecture.md rule 9) and go
    through the outbox: the FLS's first AE is retried with the same bytes
    (rule 2).  The normal exam's version has no FLS payload and no FLS
    peer hears of it."""
    emr = MllpPeer()
    fls = MllpPeer(script=["AE"])
    fls_fhir = FhirPeer()
    quick = {"retry_base": 0.3, "retry_cap": 0.3}
    destinations = {
        "emr": {"type": "hl7", "host": "127.0.0.1", "port": emr.port, **quick},
        "fls": {"type": "hl7", "host": "127.0.0.1", "port": fls.port, **quick},
        "fls_fhir": {"type": "fhir", "url": fls_fhir.url, **quick},
    }
    routes = [{"match": {"kind": "report"}, "to": ["emr"]}, {"match": {"kind": "fls"}, "to": ["fls", "fls_fhir"]}]
    d = start_daemon(tmp_path, {"storage": {"min_free_bytes": 0}, "reports": SETTLE, "destinations": destinations, "routes": routes})
    try:
        osteo = known_exam("hologic", HOLOGIC, patient_id="PFLS1", accession_number="ACC-FLS1", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        normal = dataclasses.replace(
            osteo, patient_id="PFLS2", accession_number="ACC-FLS2", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid(),
            regions=tuple(dataclasses.replace(r, t_score=Decimal("0.5"), z_score=Decimal("0.6")) for r in osteo.regions),
        )
        rows = {}
        for name, exam in (("normal", normal), ("osteo", osteo)):
            ds = hologic_sr(exam)
            store(d, ds, tmp_path / f"{name}.dcm")
            rows[name] = wait_for(lambda ds=ds: exam_of(ds)(d), 15)
            assert rows[name], d.log_text()[-2000:]
        assert rows["normal"]["classification"]["category"] == "normal"
        for name in ("normal", "osteo"):
            status, body = call(d, "POST", f"/api/exams/{rows[name]['id']}/sign", {"comment": "Agree."})
            assert status == 201, body
        assert wait_for(lambda: len(emr.received) >= 2 and len(fls.received) >= 2 and len(fls_fhir.received) >= 1, 20), d.log_text()[-3000:]

        assert fls.received[1] == fls.received[0]  # the retry after AE: the stored bytes
        msg = parse_message(fls.received[0], find_groups=False)
        assert msg.msh.msh_9.value == "REF^I12^REF_I12"
        assert "PID|1||PFLS1|" in fls.received[0] and "osteoporosis^" in fls.received[0]
        task = [e["resource"] for e in orjson.loads(fls_fhir.received[0])["entry"] if e["resource"]["resourceType"] == "Task"][0]
        assert task["status"] == "requested" and [c["code"] for c in task["reasonCode"]["coding"]] == ["osteoporosis"]

        status, versions = call(d, "GET", f"/api/exams/{rows['osteo']['id']}/reports")
        assert status == 200
        assert {p["destination"] for p in versions[0]["payloads"]} == {"emr", "fls:fls", "fls:fls_fhir", "document:pdf"}
        status, versions = call(d, "GET", f"/api/exams/{rows['normal']['id']}/reports")
        assert {p["destination"] for p in versions[0]["payloads"]} == {"emr", "document:pdf"}  # every version has its PDF (issue 15)
        assert all("PFLS2" not in m for m in fls.received) and all(b"PFLS2" not in m for m in fls_fhir.received)
        metrics = call(d, "GET", "/metrics")[1]
        assert 'dxagw_fls_notifications_total{reason="osteoporosis"} 1.0' in metrics
        assert 'dxagw_fls_notifications_total{reason="vfa_finding"} 0.0' in metrics
    finally:
        d.stop()
        emr.close()
        fls.close()
        fls_fhir.close()


def test_auto_released_report_notifies_and_a_refusal_is_a_replayable_dead_letter(tmp_path):
    """Issue 16 item 4 with ``reports.auto_release``: the preliminary version
    notifies the FLS too (OBR-25 ``P``).  The FLS refuses it (AR): a dead
    letter of kind ``fls`` in the admin API (docs/architecture.md rule 2); replayed, the
    stored bytes are sent again and accepted."""
    fls = MllpPeer(script=["AR"])
    destinations = {"fls": {"type": "hl7", "host": "127.0.0.1", "port": fls.port, "retry_base": 0.3, "retry_cap": 0.3}}
    routes = [{"match": {"kind": "fls"}, "to": ["fls"]}]
    d = start_daemon(tmp_path, {"storage": {"min_free_bytes": 0}, "reports": {**SETTLE, "auto_release": True}, "destinations": destinations, "routes": routes})
    try:
        exam = known_exam("hologic", HOLOGIC, patient_id="PFLS3", accession_number="ACC-FLS3", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        store(d, hologic_sr(exam), tmp_path / "a.dcm")
        dead = wait_for(lambda: (lambda s, rows: rows if s == 200 and rows else None)(*call(d, "GET", "/api/outbox?state=dead")), 20)
        assert dead, d.log_text()[-2000:]
        assert [(r["destination"], r["kind"]) for r in dead] == [("fls", "fls")]
        assert len(fls.received) == 1
        first = parse_message(fls.received[0], find_groups=False)
        assert first.obr.obr_25.value == "P" and first.msh.msh_9.value == "REF^I12^REF_I12"
        status, body = call(d, "POST", f"/api/outbox/{dead[0]['id']}/retry", {})
        assert status == 200 and body["requeued"] == 1
        assert wait_for(lambda: len(fls.received) >= 2, 15)
        assert fls.received[1] == fls.received[0]
        assert wait_for(lambda: (lambda s, rows: rows if rows else None)(*call(d, "GET", "/api/outbox?state=done")), 15)
    finally:
        d.stop()
        fls.close()
