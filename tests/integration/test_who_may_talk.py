"""Who may talk over DICOM and MLLP (issue 13, README "Security"): the called
AE title must be ours, known AE titles only from their addresses, and only
``hl7.allowed_senders`` change anything."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.hl7_messages import adt, orm
from tests.orthanc import wait_for
from tests.support import MllpClient, ack_fields, dcmtk, start_daemon

ENV = dict(os.environ, TCP_NODELAY="1")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(
        tmp_path_factory.mktemp("talk"),
        {
            "hl7": {"allowed_senders": ["RIS^HOSP", {"sender": "LAB^HOSP", "addresses": ["192.0.2.1"]}]},
            "dicom": {"peers": {"DXA1": {"addresses": ["127.0.0.1", "::1"]}, "FARAWAY": {"addresses": ["192.0.2.0/24"]}}},
        },
    )
    yield d
    d.stop()


def from_sender(message: str, app: str, facility: str) -> str:
    return message.replace("|RIS|HOSP|", f"|{app}|{facility}|", 1)


def echo(daemon, aet: str, aec: str):
    return subprocess.run([dcmtk("echoscu"), "-v", "-aet", aet, "-aec", aec, "127.0.0.1", str(daemon.dicom_port)], capture_output=True, text=True, env=ENV, timeout=30)


def worklist(daemon, patient: str) -> list[dict]:
    status, rows, _ = daemon.request("GET", f"/api/worklist?patient={patient}")
    assert status == 200
    return rows


def test_merge_from_an_unknown_sender_changes_nothing(daemon):
    """An ADT^A40 from an MSH-3/MSH-4 not in hl7.allowed_senders gets AR with
    an ERR naming MSH-3, and the patient is not merged."""
    mllp = MllpClient(daemon.hl7_port)
    ack = ack_fields(mllp.send(orm("W1-1", placer="W1P", filler="W1F", accession="W1A", patient_id="PW1")))
    assert ack["MSA"][1] == "AA"
    assert len(worklist(daemon, "PW1")) == 1
    ack = ack_fields(mllp.send(from_sender(adt("W1-2", "A40", patient_id="PW-EVIL", name="Evil^Eve", prior="PW1"), "EVIL", "ELSEWHERE")))
    assert ack["MSA"][1] == "AR" and ack["MSA"][2] == "W1-2"
    assert ack["ERR"][2] == "MSH^1^3" and ack["ERR"][3].startswith("103^")  # ERR-2 location, ERR-3 HL7 error code
    assert len(worklist(daemon, "PW1")) == 1 and worklist(daemon, "PW-EVIL") == []
    # an allowed sender, but not from its address
    ack = ack_fields(mllp.send(from_sender(adt("W1-3", "A40", patient_id="PW-LAB", prior="PW1"), "LAB", "HOSP")))
    assert ack["MSA"][1] == "AR"
    assert len(worklist(daemon, "PW1")) == 1 and worklist(daemon, "PW-LAB") == []
    # the connection still serves the allowed sender
    ack = ack_fields(mllp.send(adt("W1-4", "A40", patient_id="PW1-NEW", prior="PW1")))
    assert ack["MSA"][1] == "AA"
    assert worklist(daemon, "PW1") == [] and len(worklist(daemon, "PW1-NEW")) == 1
    mllp.close()
    audit = daemon.request("GET", "/api/audit?event=hl7.sender_refused")[1]
    assert {a["actor"].split("@")[0] for a in audit} >= {"EVIL^ELSEWHERE", "LAB^HOSP"}


def test_called_ae_must_be_ours(daemon):
    """PS3.8 9.3.4: A-ASSOCIATE-RJ, reason 7 "called AE title not recognized"."""
    assert echo(daemon, "DXA1", "DXAGW").returncode == 0
    bad = echo(daemon, "DXA1", "ANY-SCP")
    assert bad.returncode != 0
    assert "Called AE Title Not Recognized" in bad.stdout + bad.stderr
    assert wait_for(lambda: any(a["detail"]["called_ae"] == "ANY-SCP" for a in daemon.request("GET", "/api/audit?event=dicom.association_refused")[1]), 10)


def test_known_ae_only_from_its_addresses(daemon):
    """dicom.peers.FARAWAY may only connect from 192.0.2.0/24: from loopback
    it is refused ("calling AE title not recognized"); an AE not in
    dicom.peers is governed by the calling-AE lists alone."""
    bad = echo(daemon, "FARAWAY", "DXAGW")
    assert bad.returncode != 0 and "Calling AE Title Not Recognized" in bad.stdout + bad.stderr
    assert echo(daemon, "OTHER", "DXAGW").returncode == 0


def test_accept_any_called_ae(tmp_path):
    d = start_daemon(tmp_path, {"dicom": {"accept_any_called_ae": True}})
    try:
        assert echo(d, "DXA1", "ANY-SCP").returncode == 0
    finally:
        d.stop()
