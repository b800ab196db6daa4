"""Orders in over MLLP and FHIR, worklist out to dcmtk findscu: the real daemon."""

from __future__ import annotations

import datetime as dt
import urllib.request

import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.hl7_messages import adt, omi, orm
from tests.support import MllpClient, ack_fields, findscu

TODAY = dt.date.today().strftime("%Y%m%d")
TOMORROW = (dt.date.today() + dt.timedelta(days=1)).strftime("%Y%m%d")


def station_query(station: str = "DXA1", charset: str | None = None, date: str = TODAY) -> list[str]:
    keys = [
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=" + station,
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=" + date,
        "ScheduledProcedureStepSequence[0].Modality=BMD",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "StudyInstanceUID",
        "PatientBirthDate",
    ]
    if charset:
        keys.append(f"SpecificCharacterSet={charset}")
    return keys


def results(daemon, tmp_path, keys, aet="DXA1"):
    rc, out, files = findscu(daemon.dicom_port, keys, aet=aet, out_dir=tmp_path / f"q{len(list(tmp_path.glob('q*')))}")
    assert rc == 0, out
    return [pydicom.dcmread(f) for f in files]


def api(daemon, path, method="GET", body=None, headers=None):
    data = orjson.dumps(body) if body is not None and not isinstance(body, bytes) else body
    if data is not None and not any(k.lower() == "content-type" for k in headers or {}):
        headers = {**(headers or {}), "Content-Type": "application/json"}
    req = urllib.request.Request(daemon.http + path, data=data, method=method, headers={**daemon.headers, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            raw = rsp.read()
            return rsp.status, (orjson.loads(raw) if raw else None), rsp.headers
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, (orjson.loads(raw) if raw else None), exc.headers


def test_orm_is_acked_and_served_in_query_charset(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    # Müller Jürgen, UTF-8 bytes written as \X..\ hex escapes (HL7 2.7.4)
    ack = mllp.send(orm("T1-1", placer="T1P", accession="T1A", name="M\\XC3BC\\ller^J\\XC3BC\\rgen", start=TODAY + "093000", charset="UNICODE UTF-8"))
    assert ack_fields(ack)["MSA"][1:3] == ["AA", "T1-1"]

    latin = results(daemon, tmp_path, station_query(charset="ISO_IR 100") + ["AccessionNumber=T1A"])
    assert len(latin) == 1
    assert latin[0].SpecificCharacterSet == "ISO_IR 100"
    assert str(latin[0].PatientName) == "Müller^Jürgen"
    assert latin[0].ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "DXA1"

    utf8 = results(daemon, tmp_path, station_query(charset="ISO_IR 192") + ["AccessionNumber=T1A"])
    assert utf8[0].SpecificCharacterSet == "ISO_IR 192"
    assert str(utf8[0].PatientName) == "Müller^Jürgen"
    # The same Study Instance UID every time (generated once, kept).
    assert latin[0].StudyInstanceUID == utf8[0].StudyInstanceUID != ""
    mllp.close()


def test_latin1_message_and_requested_keys_only(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    msg = orm("T2-1", placer="T2P", accession="T2A", name="\u00c6r\u00f8^Bo", start=TODAY + "100000", charset="8859/1")
    ack = mllp.send(msg.encode("latin-1"), encoding="latin-1")
    assert ack_fields(ack)["MSA"][1] == "AA"
    found = results(daemon, tmp_path, ["AccessionNumber=T2A", "PatientName", "PatientSex", "SpecificCharacterSet=ISO_IR 100"])
    assert len(found) == 1
    ds = found[0]
    assert str(ds.PatientName) == "Ærø^Bo"
    assert ds.PatientSex == "F"
    # only the requested keys (plus the character set) come back
    assert {e.keyword for e in ds} == {"SpecificCharacterSet", "AccessionNumber", "PatientName", "PatientSex"}


def test_cancel_removes_the_step(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    assert ack_fields(mllp.send(orm("T3-1", placer="T3P", filler="T3F", accession="T3A", start=TODAY + "110000")))["MSA"][1] == "AA"
    assert len(results(daemon, tmp_path, station_query() + ["AccessionNumber=T3A"])) == 1
    ack = mllp.send(orm("T3-2", control="CA", placer="T3P", filler="T3F", accession="T3A", start=TODAY + "110000"))
    assert ack_fields(ack)["MSA"][1] == "AA"
    assert results(daemon, tmp_path, station_query() + ["AccessionNumber=T3A"]) == []
    status, rows, _ = api(daemon, "/api/worklist?patient=P001&status=CANCELLED")
    assert any(r["dataset"]["00080050"]["Value"] == ["T3A"] for r in rows)


def test_duplicate_message_is_acked_and_stored_once(daemon):
    mllp = MllpClient(daemon.hl7_port)
    msg = orm("T4-1", placer="T4P", filler="T4F", accession="T4A", patient_id="P004", start=TODAY + "120000")
    first, second = mllp.send(msg), mllp.send(msg)
    assert ack_fields(first)["MSA"][1:3] == ["AA", "T4-1"]
    assert ack_fields(second)["MSA"][1:3] == ["AA", "T4-1"]
    _, rows, _ = api(daemon, "/api/worklist?patient=P004")
    assert len(rows) == 1


def test_change_order_and_status_change(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    mllp.send(orm("T5-1", placer="T5P", filler="T5F", accession="T5A", station="DXA1", start=TODAY + "130000"))
    ack = mllp.send(orm("T5-2", control="XO", placer="T5P", filler="T5F", accession="T5A", station="DXA2", start=TODAY + "130000"))
    assert ack_fields(ack)["MSA"][1] == "AA"
    assert results(daemon, tmp_path, station_query("DXA1") + ["AccessionNumber=T5A"]) == []
    assert len(results(daemon, tmp_path, station_query("DXA2") + ["AccessionNumber=T5A"])) == 1
    ack = mllp.send(orm("T5-3", control="SC", order_status="CM", placer="T5P", filler="T5F", accession="T5A"))
    assert ack_fields(ack)["MSA"][1] == "AA"
    assert results(daemon, tmp_path, station_query("DXA2") + ["AccessionNumber=T5A"]) == []


def test_omi_gives_one_item_per_ipc(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    ack = mllp.send(omi("T6-1", placer="T6P", steps=[("T6A", "RPA", "SPA"), ("T6B", "RPB", "SPB")], start=TODAY + "140000", study_uid="1.2.826.0.1.3680043.8.498.66"))
    assert ack_fields(ack)["MSA"][1] == "AA"
    found = results(daemon, tmp_path, station_query() + ["PatientID=P009"])
    assert sorted(d.AccessionNumber for d in found) == ["T6A", "T6B"]
    assert {d.StudyInstanceUID for d in found} == {"1.2.826.0.1.3680043.8.498.66"}


def test_adt_update_and_merge(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    mllp.send(orm("T7-1", placer="T7P", filler="T7F", accession="T7A", patient_id="P007", name="Old^Name", start=TODAY + "150000"))
    # The same query before and after: the answer is not a cached one.
    found = results(daemon, tmp_path, ["AccessionNumber=T7A", "PatientName", "PatientID"])
    assert str(found[0].PatientName) == "Old^Name"
    assert ack_fields(mllp.send(adt("T7-2", "A08", patient_id="P007", name="New^Name")))["MSA"][1] == "AA"
    found = results(daemon, tmp_path, ["AccessionNumber=T7A", "PatientName", "PatientID"])
    assert str(found[0].PatientName) == "New^Name"
    assert ack_fields(mllp.send(adt("T7-3", "A40", patient_id="P077", name="New^Name", prior="P007")))["MSA"][1] == "AA"
    found = results(daemon, tmp_path, ["AccessionNumber=T7A", "PatientID"])
    assert found[0].PatientID == "P077"


def test_wildcard_range_and_tomorrow(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    mllp.send(orm("T8-1", placer="T8P", filler="T8F", accession="T8A", patient_id="P008", name="Wildman^Walter", start=TOMORROW + "081500"))
    assert results(daemon, tmp_path, station_query() + ["AccessionNumber=T8A"]) == []  # not today
    ranged = results(daemon, tmp_path, station_query(date=f"{TODAY}-{TOMORROW}") + ["AccessionNumber=T8A"])
    assert len(ranged) == 1
    # case-insensitive person name wildcard, PS3.4 C.2.2.2.4
    assert [str(d.PatientName) for d in results(daemon, tmp_path, ["PatientName=wILD*", "PatientID=P008"])] == ["Wildman^Walter"]
    assert results(daemon, tmp_path, ["PatientName=Wild?an^X*", "PatientID=P008"]) == []
    timed = ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=0800-0830", "AccessionNumber=T8A", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=" + TOMORROW]
    assert len(results(daemon, tmp_path, timed)) == 1
    timed[0] = "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=0900-"
    assert results(daemon, tmp_path, timed) == []


def test_fhir_service_request(daemon, tmp_path):
    sr = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "contained": [
            {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:hosp", "value": "PF1"}], "name": [{"family": "Fhir", "given": ["Frida"]}], "gender": "female", "birthDate": "1950-05-06"}
        ],
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}, "value": "F1A"}],
        "subject": {"reference": "#p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "38269-7", "display": "DXA Bone density"}]},
        "occurrenceDateTime": f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}T10:30:00+01:00",
        "extension": [{"url": "http://dxa-gateway.org/fhir/StructureDefinition/scheduled-station-ae", "valueString": "DXA1"}],
    }
    status, body, headers = api(daemon, "/fhir/ServiceRequest", "POST", sr, {"Content-Type": "application/fhir+json"})
    assert status == 201, body
    assert headers["Location"].startswith("/fhir/ServiceRequest/")
    found = results(daemon, tmp_path, station_query() + ["AccessionNumber=F1A"])
    assert [str(d.PatientName) for d in found] == ["Fhir^Frida"]
    assert found[0].PatientBirthDate == "19500506"

    before = api(daemon, "/api/worklist?patient=PF2")[1]
    bad = dict(sr, status="not-a-status")
    bad["contained"] = [dict(sr["contained"][0], identifier=[{"value": "PF2"}])]
    status, body, _ = api(daemon, "/fhir/ServiceRequest", "POST", bad)
    assert status in (400, 422)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    assert api(daemon, "/api/worklist?patient=PF2")[1] == before == []
    status, body, _ = api(daemon, "/fhir/ServiceRequest", "POST", b"{not json")
    assert status == 400 and body["resourceType"] == "OperationOutcome"


def test_worklist_rest_crud(daemon, tmp_path):
    ds = Dataset()
    ds.PatientID = "PR1"
    ds.PatientName = "Rest^Rita"
    ds.AccessionNumber = "R1A"
    sps = Dataset()
    sps.ScheduledStationAETitle = "DXA1"
    sps.ScheduledProcedureStepStartDate = TODAY
    sps.ScheduledProcedureStepStartTime = "160000"
    sps.Modality = "BMD"
    sps.ScheduledProcedureStepID = "S1"
    ds.ScheduledProcedureStepSequence = [sps]
    status, body, headers = api(daemon, "/api/worklist", "POST", ds.to_json_dict(), {"Content-Type": "application/dicom+json"})
    assert status == 201 and isinstance(body["id"], int)
    item_id = body["id"]
    status, row, _ = api(daemon, f"/api/worklist/{item_id}")
    assert status == 200 and row["dataset"]["00100020"]["Value"] == ["PR1"]
    rows = api(daemon, f"/api/worklist?date={TODAY}&station=DXA1&status=SCHEDULED")[1]
    assert item_id in [r["id"] for r in rows]
    assert len(results(daemon, tmp_path, station_query() + ["AccessionNumber=R1A"])) == 1
    status, _, _ = api(daemon, f"/api/worklist/{item_id}", "DELETE")
    assert status == 204
    assert results(daemon, tmp_path, station_query() + ["AccessionNumber=R1A"]) == []
    assert api(daemon, "/api/worklist/999999")[0] == 404
    missing = Dataset()
    missing.PatientName = "No^Id"
    status, body, _ = api(daemon, "/api/worklist", "POST", missing.to_json_dict())
    assert status == 422 and body["attribute"] == "PatientID"


def test_c_cancel_stops_the_query(daemon):
    """PS3.4 C.4.1.2.3: a C-CANCEL ends the query with status Cancel (FE00).

    The cancel goes out on the first pending response; the SCP must stop
    long before its 300th match.
    """
    mllp = MllpClient(daemon.hl7_port)
    for i in range(300):
        mllp.send(orm(f"T9-{i}", placer=f"T9P{i}", filler=f"T9F{i}", accession=f"T9A{i}", patient_id="P0C", start=TODAY + "170000"))
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="DXAGW")
    assert assoc.is_established
    query = Dataset()
    query.PatientID = "P0C"
    query.AccessionNumber = ""
    statuses = []
    for status, _identifier in assoc.send_c_find(query, ModalityWorklistInformationFind, msg_id=7):
        statuses.append(status.Status)
        if len(statuses) == 1:
            assoc.send_c_cancel(7, query_model=ModalityWorklistInformationFind)
    assoc.release()
    assert statuses[-1] == 0xFE00, (len(statuses), statuses[-3:])
    assert len(statuses) < 100


def test_metrics_count_what_happened(daemon):
    with urllib.request.urlopen(urllib.request.Request(daemon.http + "/metrics", headers=daemon.headers), timeout=10) as rsp:
        text = rsp.read().decode()
    assert 'dxagw_hl7_messages_total{ack="AA",type="ORM^O01"}' in text
    assert 'dxagw_mwl_queries_total{result="success"}' in text
    # DXA1 is named nowhere in this daemon's config: counted as "other" (README Operations)
    assert 'dxagw_associations_total{calling_ae="other",result="accepted"}' in text
    assert 'dxagw_worklist_items{status="SCHEDULED"}' in text
    assert "dxagw_mwl_query_seconds_bucket" in text
    # and the logs carry no patient data
    log = daemon.log_text()
    for phi in ("Müller", "Smith", "P001", "Wildman", "19580312"):
        assert phi not in log


@pytest.mark.parametrize("syntaxes", [["1.2.840.10008.1.2"], ["1.2.840.10008.1.2.1"], ["1.2.840.10008.1.2.1.99"]])
def test_same_answer_in_each_transfer_syntax(daemon, syntaxes):
    """Responses encoded once and reused must read the same in every syntax
    (Implicit, Explicit and Deflated Explicit VR Little Endian), query after query."""
    mllp = MllpClient(daemon.hl7_port)
    mllp.send(orm("T10-1", placer="T10P", filler="T10F", accession="T10A", patient_id="P010", name="Ärnström^Åsa", start=TODAY + "101500"))
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(ModalityWorklistInformationFind, syntaxes)
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 100"
    query.AccessionNumber = "T10A"
    query.PatientName = ""
    query.PatientWeight = ""
    step = Dataset()
    step.ScheduledStationAETitle = ""
    step.ScheduledProcedureStepStartTime = ""
    query.ScheduledProcedureStepSequence = [step]
    for _ in range(2):
        assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="DXAGW")
        assert assoc.is_established
        found = [ds for status, ds in assoc.send_c_find(query, ModalityWorklistInformationFind) if status.Status == 0xFF00]
        assoc.release()
        assert len(found) == 1
        assert found[0].SpecificCharacterSet == "ISO_IR 100"
        assert str(found[0].PatientName) == "Ärnström^Åsa"
        assert found[0].AccessionNumber == "T10A" and found[0].PatientWeight in (None, "")
        assert found[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "101500"
