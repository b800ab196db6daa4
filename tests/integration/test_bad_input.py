"""Bad input gets a specific refusal, changes nothing, and the daemon keeps serving."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from tests.hl7_messages import msh, orm, pid, segment
from tests.support import MllpClient, ack_fields, dcmtk, findscu, start_daemon


def counts(daemon) -> tuple[int, int]:
    """(worklist rows, inbound messages) straight from the store."""
    db = sqlite3.connect(daemon.dir / "data" / "gateway.sqlite3")
    try:
        return (
            db.execute("SELECT COUNT(*) FROM worklist_items").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM inbound_messages").fetchone()[0],
        )
    finally:
        db.close()


def still_serving(daemon, control_id: str) -> None:
    mllp = MllpClient(daemon.hl7_port)
    ack = mllp.send(orm(control_id, placer=control_id, filler=control_id, accession=control_id))
    assert ack_fields(ack)["MSA"][1] == "AA"
    mllp.close()


def test_garbage_on_the_hl7_port(daemon):
    before = counts(daemon)
    with socket.create_connection(("127.0.0.1", daemon.hl7_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 4)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""  # no ACK for unframed bytes: the connection is closed
    assert counts(daemon) == before
    still_serving(daemon, "G-OK-1")


def test_framed_message_without_msh(daemon):
    before = counts(daemon)
    mllp = MllpClient(daemon.hl7_port)
    ack = ack_fields(mllp.send("PID|1||X1^^^H||Doe^John\rORC|NW|1\r"))
    assert ack["MSA"][1] == "AR"
    assert ack["ERR"][3].startswith("100^Segment sequence error")
    assert ack["ERR"][2].startswith("MSH")
    assert counts(daemon) == before
    # the same connection keeps working
    assert ack_fields(mllp.send(orm("G-OK-2", placer="G2", filler="G2", accession="G2")))["MSA"][1] == "AA"


@pytest.mark.parametrize(
    "mutate, location, code",
    [
        (lambda m: m.replace("19580312", "1958-03-12"), "PID^1^7", "102"),  # DOB not a DTM
        (lambda m: m.replace("|F|", "|Q|", 1), "PID^1^8", "103"),  # sex not in Table 0001
        (lambda m: m.replace("P001^^^HOSP^MR", ""), "PID^1^3", "101"),  # no patient ID
        (lambda m: m.replace("^^^20261124093000", "^^^2026132599"), "OBR^1^27", "102"),  # bad start
        (lambda m: m.replace("ORC|NW|", "ORC|ZZ|"), "ORC^1^1", "103"),  # unknown order control
    ],
)
def test_wrong_field_values_are_named(daemon, mutate, location, code):
    before = counts(daemon)
    mllp = MllpClient(daemon.hl7_port)
    control_id = "BAD-" + location.replace("^", "-") + "-" + code
    msg = mutate(orm(control_id, placer="BADP", filler="BADF", accession="BADA"))
    ack = ack_fields(mllp.send(msg))
    assert ack["MSA"][1] == "AE", ack
    assert ack["MSA"][2] == control_id  # MSA-2 echoes MSH-10
    assert ack["ERR"][2].startswith(location), ack["ERR"]
    assert ack["ERR"][3].startswith(code)
    assert counts(daemon) == before


def test_unsupported_message_type_and_version(daemon):
    before = counts(daemon)
    mllp = MllpClient(daemon.hl7_port)
    ack = ack_fields(mllp.send("\r".join([msh("U1", "ORU^R01", "2.5.1"), pid()]) + "\r"))
    assert ack["MSA"][1] == "AR" and ack["ERR"][3].startswith("200")
    ack = ack_fields(mllp.send("\r".join([msh("U2", "ADT^A01", "2.5.1"), pid()]) + "\r"))
    assert ack["MSA"][1] == "AR" and ack["ERR"][3].startswith("201")
    ack = ack_fields(mllp.send(orm("U3", version="9.9")))
    assert ack["MSA"][1] == "AR" and ack["ERR"][3].startswith("203")
    ack = ack_fields(mllp.send(orm("U4", charset="EBCDIC")))
    assert ack["MSA"][1] == "AR" and ack["ERR"][2].startswith("MSH^1^18")
    assert counts(daemon) == before


def test_cancel_of_unknown_order(daemon):
    before = counts(daemon)
    mllp = MllpClient(daemon.hl7_port)
    ack = ack_fields(mllp.send(orm("C-UNK", control="CA", placer="NOPE", filler="NOPE", accession="NOPE")))
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][3].startswith("204")
    assert counts(daemon) == before


def test_oversized_frame_is_refused(tmp_path):
    d = start_daemon(tmp_path, {"hl7": {"max_message_bytes": 4096}})
    try:
        before = counts(d)
        with socket.create_connection(("127.0.0.1", d.hl7_port), timeout=5) as s:
            s.sendall(b"\x0b" + orm("BIG").encode() + b"X" * 10000 + b"\x1c\x0d")
            assert s.recv(100) == b""  # closed without an ACK
        assert counts(d) == before
        still_serving(d, "BIG-OK")
    finally:
        assert d.stop() == 0


def test_unsupported_query_key_is_refused_with_a900(daemon):
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="DXAGW")
    query = Dataset()
    query.PatientName = ""
    query.StudyDescription = "x"  # not an MWL key (PS3.4 Table K.6-1)
    statuses = [s for s, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    bad_date = Dataset()
    bad_date.PatientBirthDate = "1958XX12"
    statuses2 = [s for s, _ in assoc.send_c_find(bad_date, ModalityWorklistInformationFind)]
    assoc.release()
    assert len(statuses) == 1 and statuses[0].Status == 0xA900
    assert "StudyDescription" in statuses[0].ErrorComment
    assert statuses[0].OffendingElement == 0x00081030
    assert statuses2[0].Status == 0xA900 and statuses2[0].OffendingElement == 0x00100030
    # dcmtk's findscu sees the same refusal
    rc, out, _ = findscu(daemon.dicom_port, ["StudyDescription=x"], extra=["-v"])
    assert "DataSetDoesNotMatchSOPClass" in out


def test_unknown_ae_titles_are_refused_at_association(tmp_path):
    d = start_daemon(
        tmp_path,
        {"dicom": {"allowed_calling_aes": ["DXA1", "PACSMON"], "services": {"worklist": {"allowed_calling_aes": ["DXA1"]}}}},
    )
    try:
        env = {"TCP_NODELAY": "1"}
        ok = subprocess.run([dcmtk("echoscu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(d.dicom_port)], capture_output=True, text=True, env=env)
        assert ok.returncode == 0, ok.stderr
        bad = subprocess.run([dcmtk("echoscu"), "-aet", "INTRUDER", "-aec", "DXAGW", "127.0.0.1", str(d.dicom_port)], capture_output=True, text=True, env=env)
        assert bad.returncode != 0
        assert "Calling AE Title Not Recognized" in bad.stdout + bad.stderr
        # PACSMON may echo but not query the worklist
        ae = AE(ae_title="PACSMON")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
        assert assoc.is_established
        assoc.release()
        ae = AE(ae_title="PACSMON")
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
        assert assoc.is_rejected
        rc, out, _ = findscu(d.dicom_port, ["PatientName"], aet="PACSMON")
        assert "Calling AE Title Not Recognized" in out
        # asking for both, PACSMON gets an association with the worklist
        # context rejected; that must not narrow what the next peer is offered
        ae = AE(ae_title="PACSMON")
        ae.add_requested_context(Verification)
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
        assert assoc.is_established
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [str(Verification)]
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        # and the allowed scanner still gets its worklist
        rc, out, _ = findscu(d.dicom_port, ["PatientName"], aet="DXA1")
        assert rc == 0 and "Rejected" not in out
    finally:
        assert d.stop() == 0


def test_malformed_p_data_aborts_that_association_only(daemon):
    """A P-DATA-TF whose PDV item runs past the PDU (PS3.8 9.3.5.1) is an
    invalid PDU: the gateway aborts that association and serves the next."""
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="DXAGW")
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    body = (100).to_bytes(4, "big") + b"\x01\x03" + b"\x00" * 10  # says 100 bytes, has 11
    sock.sendall(b"\x04\x00" + len(body).to_bytes(4, "big") + body)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and assoc.is_established:
        time.sleep(0.05)
    assert assoc.is_aborted
    ok = subprocess.run([dcmtk("echoscu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(daemon.dicom_port)], capture_output=True, text=True, env={"TCP_NODELAY": "1"})
    assert ok.returncode == 0, ok.stderr


def test_peer_vanishing_mid_association_leaves_daemon_serving(daemon):
    # An A-ASSOCIATE-RQ cut off half way, then a bare TCP probe.
    for payload in (b"\x01\x00\x00\x00\x01\x00\x00\x01", b""):
        s = socket.create_connection(("127.0.0.1", daemon.dicom_port), timeout=5)
        if payload:
            s.sendall(payload)
        s.close()
    rc, out, _ = findscu(daemon.dicom_port, ["PatientName"])
    assert rc == 0, out


def test_sigterm_exits_zero_quickly(tmp_path):
    d = start_daemon(tmp_path)
    mllp = MllpClient(d.hl7_port)
    assert ack_fields(mllp.send(orm("S1")))["MSA"][1] == "AA"
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 10
    assert '"event":"gateway.stopped"' in d.log_text()


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    d = start_daemon(tmp_path)
    mllp = MllpClient(d.hl7_port)
    acked = []
    for i in range(50):
        ack = ack_fields(mllp.send(orm(f"K{i}", placer=f"K{i}", filler=f"K{i}", accession=f"K{i}")))
        if ack["MSA"][1] == "AA":
            acked.append(f"K{i}")
    d.proc.kill()
    d.proc.wait(5)
    db = sqlite3.connect(tmp_path / "data" / "gateway.sqlite3")
    stored = {r[0] for r in db.execute("SELECT accession FROM worklist_items")}
    db.close()
    assert set(acked) <= stored and len(acked) == 50


def test_check_config_names_the_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  ae_title: DXAGW\n  port: eleven\nhl7:\n  portt: 2575\n")
    out = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{bad}:3: dicom.port" in out.stderr
    assert f"{bad}:5: hl7.portt: unknown key" in out.stderr
    good = subprocess.run([sys.executable, "-m", "gateway", "check-config", "gateway/default.yaml"], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr


def test_tcp_health_checks_do_not_use_up_associations(tmp_path):
    """A load balancer probing the port (connect, close) must not fill the
    association limit: pynetdicom would hold each probe for the ACSE timeout."""
    d = start_daemon(tmp_path, {"dicom": {"maximum_associations": 5}})
    try:
        for _ in range(20):
            socket.create_connection(("127.0.0.1", d.dicom_port), timeout=5).close()
        time.sleep(0.5)
        for _ in range(3):
            rc, out, _ = findscu(d.dicom_port, ["PatientName"])
            assert rc == 0 and "Rejected" not in out, out
    finally:
        assert d.stop() == 0


def test_pdu_declaring_gigabytes_is_refused_without_taking_the_memory(daemon):
    """pynetdicom trusts a declared PDU length up to 4 GiB; the gateway refuses
    one over its maximum before allocating anything, and keeps serving."""
    status = Path(f"/proc/{daemon.proc.pid}/status")

    def rss_mb() -> float:
        return next(int(l.split()[1]) for l in status.read_text().splitlines() if l.startswith("VmRSS:")) / 1024

    before = rss_mb()
    with socket.create_connection(("127.0.0.1", daemon.dicom_port), timeout=5) as s:
        s.sendall(b"\x01\x00" + (3 * 1024**3).to_bytes(4, "big") + b"\x00" * 1024)
        s.settimeout(5)
        try:
            assert s.recv(100) == b""  # the gateway closed the connection
        except ConnectionResetError:
            pass  # or reset it
    time.sleep(0.3)
    assert rss_mb() - before < 50
    assert '"event":"dicom.pdu_too_large"' in daemon.log_text()
    rc, out, _ = findscu(daemon.dicom_port, ["PatientName"])
    assert rc == 0, out
