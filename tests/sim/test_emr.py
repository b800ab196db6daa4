"""The EMR simulator: ORU checks, ACKs over MLLP, faults, FHIR Bundles."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from simulators.emr import EmrSimulator, check_oru, loinc_valid
from hl7v2.mllp import MllpClient
from hl7v2.ack import parse_ack

MSH = "MSH|^~\\&|DXAGW|DXA|EMR|HOSP|20261124120000||ORU^R01^ORU_R01|{cid}|P|2.5.1|||||UNICODE UTF-8"
PID = "PID|1||P001^^^HOSP^MR||Müller^Anna||19500312|F"
OBR = "OBR|1|PO1|FO1|38269-7^DXA Bone density report^LN|||20261124100000|||||||||||||||20261124120000||BMD|F"
OBX = [
    "OBX|1|NM|24966-4^Lumbar spine BMD^LN||0.912|g/cm2^g/cm2^UCUM|||||F",
    "OBX|2|NM|38267-1^Lumbar spine T-score^LN||-1.8|1^^UCUM|||||F",
    "OBX|3|TX|38269-7^Report^LN||Osteopenia at the lumbar spine.||||||F",
]


def oru(cid="ORU1", msh=None, pid=PID, obr=OBR, obx=None) -> bytes:
    segs = [(msh or MSH).format(cid=cid), pid, obr, *(OBX if obx is None else obx)]
    return ("\r".join(segs) + "\r").encode("utf-8")


def test_loinc_check_digit():
    for code in ("24966-4", "38267-1", "85394-5", "38261-4", "80946-7", "24890-6", "83311-1", "38269-7", "90265-0"):
        assert loinc_valid(code), code
    assert not loinc_valid("24966-5") and not loinc_valid("24966") and not loinc_valid("A1-1")


def test_good_oru_passes():
    res = check_oru(oru())
    assert res.ok, [c for c in res.checks if not c.passed]
    assert res.control_id == "ORU1" and res.sending == ("DXAGW", "DXA")
    assert len(res.checks) >= 7


@pytest.mark.parametrize(
    "kw, failing",
    [
        ({"msh": MSH.replace("ORU^R01^ORU_R01", "ORM^O01")}, "MSH-9"),
        ({"pid": "PID|1||||Müller^Anna"}, "PID-3"),
        ({"obr": OBR.replace("|BMD|F", "|BMD|X")}, "OBR[1]-25"),
        ({"obx": ["OBX|1|NM|24966-4^Lumbar spine BMD^LN||zero point nine|g/cm2|||||F"]}, "OBX[1] NM"),
        ({"obx": ["OBX|1|NM|BMDSPINE^Lumbar spine BMD^L||0.9|g/cm2|||||F"]}, "numeric results LOINC-coded"),  # local only
        ({"obx": ["OBX|1|NM|BMDSPINE^Lumbar spine BMD^XYZ||0.9|g/cm2|||||F"]}, "OBX[1] NM"),  # neither LOINC nor local
        ({"obx": ["OBX|1|NM|24966-5^Lumbar spine BMD^LN||0.9|g/cm2|||||F"]}, "OBX[1] NM"),
        ({"obx": ["OBX|1|NM|24966-4^Lumbar spine BMD^LN||0.9|g/cm2|||||"]}, "OBX[1] NM"),
        ({"obx": []}, "OBX present"),
    ],
)
def test_broken_oru_fails_the_named_check(kw, failing):
    res = check_oru(oru(**kw))
    failed = [c.name for c in res.checks if not c.passed]
    assert failed and failed[0].startswith(failing), failed


def test_garbage_fails_to_parse():
    res = check_oru(b"this is not HL7")
    assert not res.ok and not res.parsed


@pytest.fixture
def emr_factory():
    sims = []

    def make(**kw) -> EmrSimulator:
        sim = EmrSimulator(port=0, **kw).start()
        sims.append(sim)
        return sim

    yield make
    for s in sims:
        s.stop()


def test_acks_over_one_connection(emr_factory):
    emr = emr_factory()
    with MllpClient("127.0.0.1", emr.port, timeout=5) as c:
        good = parse_ack(c.request(oru("G1")))
        bad = parse_ack(c.request(oru("B1", obr=OBR.replace("|BMD|F", "|BMD|"))))
        good2 = parse_ack(c.request(oru("G2")))
    assert (good.code, good.control_id) == ("AA", "G1")
    assert (bad.code, bad.control_id) == ("AE", "B1") and "OBR[1]-25" in bad.text
    assert (good2.code, good2.control_id) == ("AA", "G2")
    rep = emr.report()
    assert not rep.ok
    assert [c.name for c in rep.failed] == ["ORU [B1] OBR[1]-25 result status"]
    assert rep.stats["hl7_messages"] == 3


@pytest.mark.parametrize("answer", ["AE", "AR"])
def test_forced_answer(emr_factory, answer):
    emr = emr_factory(answer=answer)
    with MllpClient("127.0.0.1", emr.port, timeout=5) as c:
        ack = parse_ack(c.request(oru("F1")))
    assert (ack.code, ack.control_id) == (answer, "F1")
    assert "ERR" in ack.error


def test_fail_first_then_accept(emr_factory):
    emr = emr_factory(answer="AE", fail_first=1)
    with MllpClient("127.0.0.1", emr.port, timeout=5) as c:
        codes = [parse_ack(c.request(oru(f"X{n}"))).code for n in range(3)]
    assert codes == ["AE", "AA", "AA"]


def test_drop_closes_without_ack(emr_factory):
    emr = emr_factory(drop=True)
    with MllpClient("127.0.0.1", emr.port, timeout=5) as c:
        with pytest.raises(ConnectionError):
            c.request(oru("D1"))


def test_delay(emr_factory):
    emr = emr_factory(delay=0.4)
    with MllpClient("127.0.0.1", emr.port, timeout=5) as c:
        t = time.monotonic()
        assert parse_ack(c.request(oru("S1"))).code == "AA"
        assert time.monotonic() - t >= 0.35


def test_oversized_frame_is_refused(emr_factory):
    emr = emr_factory(max_frame=4096)
    with socket.create_connection(("127.0.0.1", emr.port), timeout=5) as s:
        s.sendall(b"\x0b" + oru("BIG", obx=["OBX|1|TX|38269-7^Report^LN||" + "x" * 100_000 + "||||||F"]) + b"\x1c\x0d")
        s.settimeout(5)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    assert data == b""
    assert any(c.name == "MLLP frame size" and not c.passed for c in emr.report().checks)


def _bundle(loinc="24966-4", value=0.912) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b0c0d0e-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "38269-7"}]},
                    "result": [{"reference": "urn:uuid:0b0c0d0e-0000-4000-8000-000000000002"}],
                },
                "request": {"method": "POST", "url": "DiagnosticReport"},
            },
            {
                "fullUrl": "urn:uuid:0b0c0d0e-0000-4000-8000-000000000002",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                    "valueQuantity": {"value": value, "unit": "g/cm2", "system": "http://unitsofmeasure.org", "code": "g/cm2"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def _post(port, body) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/fhir+json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_fhir_bundle_checks(emr_factory):
    emr = emr_factory(http_port=0)
    status, body = _post(emr.http_port, _bundle())
    assert status == 200 and body["type"] == "transaction-response"
    assert emr.report().ok
    status, body = _post(emr.http_port, _bundle(loinc="24966-5"))
    assert status == 422 and body["resourceType"] == "OperationOutcome"
    status, _ = _post(emr.http_port, {"resourceType": "Bundle", "type": "not-a-type"})
    assert status == 422
    rep = emr.report()
    assert len(rep.failed) == 2 and rep.stats["fhir_bundles"] == 3


def test_fhir_forced_refusal(emr_factory):
    emr = emr_factory(http_port=0, answer="AR")
    status, body = _post(emr.http_port, _bundle())
    assert status == 400 and body["issue"][0]["severity"] == "error"


def test_cli_serves_until_sigterm_then_reports(tmp_path):
    import signal
    import subprocess
    import sys

    from tests.sim.conftest import free_port, wait_port

    port = free_port()
    out = tmp_path / "emr.json"
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "emr", "--port", str(port), "--report", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        with MllpClient("127.0.0.1", port, timeout=5) as c:
            assert parse_ack(c.request(oru("C1"))).code == "AA"
            assert parse_ack(c.request(oru("C2", pid="PID|1"))).code == "AE"
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1, stdout + stderr
    data = json.loads(out.read_text())
    assert data["failed"] == 1 and data["stats"]["hl7_messages"] == 2
