"""Referrer entitlement against the real daemon: MLLP in, findscu out.

Source: IR(ME)R 2017 reg. 6(5)(b), 10(1) and 11 (only entitled referrers may
refer; a practitioner justifies); seed 003, principles 6 and 9 (removal of
entitlement; automated, systems-based control).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
import urllib.request

import orjson
import pytest

from tests.hl7_messages import orm
from tests.integration.test_orders_worklist import api, results, station_query
from tests.support import MllpClient, ack_fields, start_daemon

TODAY = dt.date.today().strftime("%Y%m%d")
REGISTER = "id,name,role,scope,valid_until\nD456,Orderer^Olga,referrer,BMD,\nR5,Rad Rob,practitioner,BMD,\nX1,Old Referrer,referrer,BMD,2020-01-31\n"


# Callers of the justify endpoint: a practitioner, a referrer (not a
# practitioner), both with the reporter role; and a viewer.
IDENTITIES = [
    {"name": "rob", "token": "rob-token-0000000000000001", "roles": ["reporter"], "registration": "R5"},
    {"name": "olga", "token": "olga-token-000000000000001", "roles": ["reporter"], "registration": "D456"},
    {"name": "vic", "token": "vic-token-0000000000000001", "roles": ["viewer"]},
]


def as_(name: str) -> dict:
    token = next(i["token"] for i in IDENTITIES if i["name"] == name)
    return {"Authorization": f"Bearer {token}"}


def order(control_id: str, accession: str, referrer: str) -> str:
    msg = orm(control_id, placer=f"P{accession}", filler=f"F{accession}", accession=accession, start=TODAY + "100000")
    return msg.replace("D456^Orderer^Olga", referrer)


def metric(daemon, name: str, labels: str) -> float:
    with urllib.request.urlopen(urllib.request.Request(daemon.http + "/metrics", headers=daemon.headers), timeout=10) as rsp:
        text = rsp.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


@pytest.fixture(scope="module")
def held_daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ent")
    (tmp / "referrers.csv").write_text(REGISTER)
    d = start_daemon(tmp, {"entitlement": {"referrers_file": str(tmp / "referrers.csv"), "on_unknown": "hold"}, "security": {"tokens": IDENTITIES}})
    yield d
    d.stop()


def accessions(daemon, tmp_path) -> set[str]:
    return {ds.AccessionNumber for ds in results(daemon, tmp_path, station_query())}


def test_unknown_referrer_is_held_off_the_mwl_until_justified(held_daemon, tmp_path):
    d = held_daemon
    mllp = MllpClient(d.hl7_port)
    assert ack_fields(mllp.send(order("EN-1", "ENT1", "Z999^Unknown^Ursula")))["MSA"][1] == "AA"
    assert ack_fields(mllp.send(order("EN-2", "ENT2", "D456^Orderer^Olga")))["MSA"][1] == "AA"
    assert ack_fields(mllp.send(order("EN-3", "ENT3", "X1^Referrer^Old")))["MSA"][1] == "AA"
    mllp.close()

    status, held, _ = api(d, "/api/worklist?status=HELD")
    assert status == 200
    by_acc = {r["dataset"]["00080050"]["Value"][0]: r for r in held}
    assert set(by_acc) == {"ENT1", "ENT3"}
    assert by_acc["ENT1"]["hold_reason"].startswith("unknown:")
    assert by_acc["ENT1"]["referrer_id"] == "Z999"
    assert by_acc["ENT3"]["hold_reason"].startswith("expired:")
    assert metric(d, "dxagw_orders_held_total", 'reason="unknown"') == 1
    assert metric(d, "dxagw_orders_held_total", 'reason="expired"') == 1
    assert metric(d, "dxagw_worklist_items", 'status="HELD"') == 2

    # findscu sees the entitled order only, even when it asks for HELD steps
    assert accessions(d, tmp_path) == {"ENT2"}
    held_query = station_query() + ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus=HELD"]
    assert results(d, tmp_path, held_query) == []

    item = by_acc["ENT1"]["id"]
    justify = f"/api/worklist/{item}/justify"
    # a referrer is not a practitioner; the test identity is not in the register; a viewer has not the role
    assert api(d, justify, "POST", {}, as_("olga"))[0] == 403
    assert api(d, justify, "POST", {})[0] == 403
    assert api(d, justify, "POST", {}, as_("vic"))[0] == 403
    assert api(d, justify, "POST", [1], as_("rob"))[0] == 422
    status, body, _ = api(d, justify, "POST", {"note": "clinically justified"}, as_("rob"))
    assert (status, body["status"], body["practitioner"]) == (200, "SCHEDULED", "R5")
    assert api(d, justify, "POST", {}, as_("rob"))[0] == 409
    assert api(d, "/api/worklist/999999/justify", "POST", {}, as_("rob"))[0] == 404

    assert accessions(d, tmp_path) == {"ENT1", "ENT2"}
    db = sqlite3.connect(d.dir / "data" / "gateway.sqlite3")
    (actor, detail), = db.execute("SELECT actor, detail FROM audit WHERE event = 'worklist.justify'").fetchall()
    db.close()
    assert actor == "rob"  # the caller's identity, never a name it typed
    assert orjson.loads(detail) == {"id": item, "patient_id": "P001", "practitioner": "R5", "held_for": "unknown", "note": "clinically justified"}

    # A change to the justified order from the same referrer does not hold it again.
    mllp = MllpClient(d.hl7_port)
    change = order("EN-4", "ENT1", "Z999^Unknown^Ursula").replace("ORC|NW|", "ORC|XO|")
    assert ack_fields(mllp.send(change))["MSA"][1] == "AA"
    mllp.close()
    assert api(d, f"/api/worklist/{item}")[1]["status"] == "SCHEDULED"


def test_register_is_read_again_when_it_changes(held_daemon, tmp_path):
    """Principle 6: the register changes; the gateway follows without a restart."""
    d = held_daemon
    path = d.dir / "referrers.csv"
    path.write_text(REGISTER + "N1,New Nurse,referrer,BMD,\n")
    later = time.time() + 5
    os.utime(path, (later, later))
    mllp = MllpClient(d.hl7_port)
    assert ack_fields(mllp.send(order("EN-5", "ENT5", "N1^Nurse^New")))["MSA"][1] == "AA"
    # an unreadable register holds every order, with its own reason
    path.unlink()
    assert ack_fields(mllp.send(order("EN-6", "ENT6", "N1^Nurse^New")))["MSA"][1] == "AA"
    mllp.close()
    path.write_text(REGISTER)
    rows = {r["dataset"]["00080050"]["Value"][0]: r for r in api(d, "/api/worklist?limit=1000")[1]}
    assert rows["ENT5"]["status"] == "SCHEDULED"
    assert rows["ENT6"]["status"] == "HELD"
    assert rows["ENT6"]["hold_reason"].startswith("register_unavailable:")


def test_reject_mode_answers_ar_naming_the_field_and_stores_nothing(tmp_path):
    (tmp_path / "referrers.csv").write_text(REGISTER)
    d = start_daemon(tmp_path, {"entitlement": {"referrers_file": str(tmp_path / "referrers.csv"), "on_unknown": "reject"}})
    try:
        mllp = MllpClient(d.hl7_port)
        ack = ack_fields(mllp.send(order("RJ-1", "REJ1", "Z999^Unknown^Ursula")))
        assert ack["MSA"][1] == "AR"
        assert ack["MSA"][2] == "RJ-1"
        assert "not entitled" in "|".join(ack["ERR"]) and "ORC^1^12" in "|".join(ack["ERR"])
        assert ack_fields(mllp.send(order("RJ-2", "REJ2", "D456^Orderer^Olga")))["MSA"][1] == "AA"
        mllp.close()
        rows = api(d, "/api/worklist?limit=1000")[1]
        assert [r["dataset"]["00080050"]["Value"][0] for r in rows] == ["REJ2"]
        assert metric(d, "dxagw_orders_refused_total", 'reason="unknown"') == 1
        assert metric(d, "dxagw_orders_held_total", 'reason="unknown"') == 0
    finally:
        d.stop()


def test_fhir_order_from_unknown_requester_is_held(held_daemon, tmp_path):
    d = held_daemon
    sr = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "contained": [{"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:hosp", "value": "PFE1"}], "gender": "female", "birthDate": "1950-05-06"}],
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}, "value": "FENT1"}],
        "subject": {"reference": "#p1"},
        "requester": {"reference": "Practitioner/Z42", "display": "Zed Unknown"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "38269-7", "display": "DXA Bone density"}]},
        "occurrenceDateTime": f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}T11:30:00+00:00",
        "extension": [{"url": "http://dxa-gateway.org/fhir/StructureDefinition/scheduled-station-ae", "valueString": "DXA1"}],
    }
    status, body, _ = api(d, "/fhir/ServiceRequest", "POST", sr, {"Content-Type": "application/fhir+json"})
    assert status == 201, body
    (row,) = api(d, "/api/worklist?patient=PFE1")[1]
    assert (row["status"], row["referrer_id"]) == ("HELD", "Z42")
    assert "FENT1" not in accessions(d, tmp_path)


def test_dicom_json_item_is_screened_by_name(held_daemon, tmp_path):
    """POST /api/worklist (DICOM JSON) names the requesting physician: checked like an order."""
    d = held_daemon

    def item(accession: str, requester: str) -> dict:
        return {
            "00100020": {"vr": "LO", "Value": [f"PJ{accession}"]},
            "00080050": {"vr": "SH", "Value": [accession]},
            "00321032": {"vr": "PN", "Value": [{"Alphabetic": requester}]},
            "00400100": {"vr": "SQ", "Value": [{
                "00400001": {"vr": "AE", "Value": ["DXA1"]}, "00080060": {"vr": "CS", "Value": ["BMD"]},
                "00400002": {"vr": "DA", "Value": [TODAY]}, "00400003": {"vr": "TM", "Value": ["120000"]},
            }]},
        }  # fmt: skip

    status, body, _ = api(d, "/api/worklist", "POST", item("JS1", "Orderer^Olga"))
    assert status == 201, body
    assert api(d, f"/api/worklist/{body['id']}")[1]["status"] == "SCHEDULED"
    status, body, _ = api(d, "/api/worklist", "POST", item("JS2", "Nobody^Known"))
    assert status == 201, body
    held = api(d, f"/api/worklist/{body['id']}")[1]
    assert (held["status"], held["hold_reason"].split(":")[0]) == ("HELD", "unknown")
    assert accessions(d, tmp_path) >= {"JS1"} and "JS2" not in accessions(d, tmp_path)
