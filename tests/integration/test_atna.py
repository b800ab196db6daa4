"""IHE ATNA audit messages reach a real rsyslog and validate (issue 13;
DICOM PS3.15 A.5, RFC 5424 over UDP, TCP and TLS RFC 5425)."""

from __future__ import annotations

import os
import subprocess

import pytest
import trustme
from pydicom.uid import generate_uid

from mappings.bmd.samples import hologic_sr
from tests.atna_schema import event_id, problems
from tests.dicom_data import secondary_capture
from tests.hl7_messages import adt, orm
from tests.mllp_peer import MllpPeer
from tests.orthanc import wait_for
from tests.rsyslog import Rsyslog, have_rsyslog
from tests.support import MllpClient, ack_fields, dcmtk, findscu, http_request, start_daemon
from tests.unit.bmd.helpers import HOLOGIC, known_exam

pytestmark = pytest.mark.skipif(not have_rsyslog(), reason="rsyslog is not installed (./run-tests installs it)")
ENV = dict(os.environ, TCP_NODELAY="1")


def messages(rsyslog: Rsyslog) -> list[tuple[list[str], str]]:
    """(header fields as rsyslog parsed them, the XML) per received message."""
    out = []
    for line in rsyslog.lines():
        parts = line.split("|", 6)
        out.append((parts[:6], parts[6].lstrip("\ufeff").strip()))
    return out


def assert_valid(received) -> set[tuple[str, str]]:
    """Every message is RFC 5424 as ATNA asks and a valid PS3.15 A.5.1 AuditMessage."""
    seen = set()
    for header, xml in received:
        facility, severity, version, app, msgid, sd = header
        assert (facility, severity, version, app, msgid, sd) == ("10", "5", "1", "dxa-gateway", "IHE+RFC-3881", "-"), header
        assert problems(xml) == [], (problems(xml), xml)
        seen.add(event_id(xml))
    return seen


@pytest.fixture
def peer():
    p = MllpPeer(default="AA")
    yield p
    p.close()


def test_every_event_kind_over_tcp(tmp_path, peer):
    """User authentication (success, failure), patient record (created,
    merged, cancelled), instances transferred in and out, query, export,
    security alert (bad credential, refused association, refused sender)."""
    rs = Rsyslog(tmp_path / "rsyslog", "tcp")
    try:
        d = start_daemon(
            tmp_path / "gw",
            {
                "storage": {"min_free_bytes": 0},
                "audit": {"syslog": {"host": "127.0.0.1", "port": rs.port, "transport": "tcp"}, "site_id": "TEST-HOSPITAL"},
                "hl7": {"allowed_senders": ["RIS^HOSP"]},
                "destinations": {"folder": {"type": "folder", "path": str(tmp_path / "out")}, "emr": {"type": "hl7", "host": "127.0.0.1", "port": peer.port, "retry_base": 0.3}},
                "routes": [{"match": {"kind": "image"}, "to": ["folder"]}, {"match": {"kind": "report"}, "to": ["emr"]}],
            },
        )
        try:
            assert http_request(d.http + "/api/worklist", token="wrong-token-0123456789")[0] == 401
            assert d.request("GET", "/api/worklist")[0] == 200
            mllp = MllpClient(d.hl7_port)
            assert ack_fields(mllp.send(orm("A1-1", placer="A1P", filler="A1F", accession="A1A", patient_id="PATNA")))["MSA"][1] == "AA"
            assert ack_fields(mllp.send(adt("A1-2", "A40", patient_id="PATNA2", prior="PATNA")))["MSA"][1] == "AA"
            evil = adt("A1-3", "A40", patient_id="PX", prior="PATNA2").replace("|RIS|HOSP|", "|EVIL|ELSEWHERE|", 1)
            assert ack_fields(mllp.send(evil))["MSA"][1] == "AR"
            mllp.close()
            item = d.request("GET", "/api/worklist?patient=PATNA2")[1][0]
            assert d.request("DELETE", f"/api/worklist/{item['id']}")[0] == 204
            rc, out, _ = findscu(d.dicom_port, ["PatientName", "PatientID=PATNA2"])
            assert rc == 0, out
            bad = subprocess.run([dcmtk("echoscu"), "-aet", "DXA1", "-aec", "NOT-US", "127.0.0.1", str(d.dicom_port)], capture_output=True, env=ENV)
            assert bad.returncode != 0
            f = tmp_path / "sc.dcm"
            secondary_capture(f, seed=5)
            sr = hologic_sr(known_exam("hologic", HOLOGIC, patient_id="PATNA-SR", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid()))
            sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
            r = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(d.dicom_port), str(f), str(tmp_path / "sr.dcm")], capture_output=True, text=True, env=ENV)
            assert r.returncode == 0, r.stderr
            exam = wait_for(lambda: (d.request("GET", "/api/exams?patient=PATNA-SR")[1] or [None])[0], 15)
            assert d.request("POST", f"/api/exams/{exam['id']}/sign", {})[0] == 201
            assert wait_for(lambda: peer.received, 15)

            wanted = {
                ("110114", "0"),  # user authentication, success
                ("110114", "4"),  # user authentication, failure
                ("110110", "0"),  # patient record
                ("110104", "0"),  # DICOM instances transferred
                ("110112", "0"),  # query
                ("110106", "0"),  # export
                ("110113", "4"),  # security alert
            }
            assert wait_for(lambda: wanted <= {event_id(x) for _, x in messages(rs)}, 20), {event_id(x) for _, x in messages(rs)}
            received = messages(rs)
            assert wanted <= assert_valid(received)
            xmls = [x for _, x in received]
            # what the messages say, beyond the schema
            assert any('EventActionCode="U"' in x and "patients merged" in x and "PATNA" in x for x in xmls)
            assert any("110113" in x and "EVIL^ELSEWHERE" in x for x in xmls)
            assert any("110113" in x and "NOT-US" in x for x in xmls)
            assert any("110104" in x and 'EventActionCode="C"' in x for x in xmls)
            assert any("110104" in x and 'EventActionCode="R"' in x for x in xmls)  # the image sent on to the folder
            assert any("110114" in x and 'UserID="test"' in x for x in xmls)
            assert all('AuditEnterpriseSiteID="TEST-HOSPITAL"' in x for x in xmls)
            # and the store keeps them too
            assert d.request("GET", "/api/audit?event=instance.received")[1]
        finally:
            d.stop()
    finally:
        rs.stop()


def test_collector_outage_loses_nothing(tmp_path):
    """Rows wait in the audit table while the collector is down and go when it is back."""
    rs = Rsyslog(tmp_path / "rs1", "tcp")
    port = rs.port
    d = start_daemon(tmp_path / "gw", {"audit": {"syslog": {"host": "127.0.0.1", "port": port, "transport": "tcp"}}})
    try:
        assert http_request(d.http + "/api/worklist", token="first-wrong-token-000")[0] == 401
        assert wait_for(lambda: messages(rs), 15)
        rs.stop()
        for i in range(3):  # refused associations while nobody listens
            bad = subprocess.run([dcmtk("echoscu"), "-aet", f"OUT{i}", "-aec", "NOT-US", "127.0.0.1", str(d.dicom_port)], capture_output=True, env=ENV)
            assert bad.returncode != 0
        time_to_fail = wait_for(lambda: "audit.syslog_unreachable" in d.log_text(), 20)
        assert time_to_fail
        rs2 = Rsyslog(tmp_path / "rs2", "tcp", port=port)
        try:
            def callers():
                return {x.split('UserID="', 1)[1].split('"', 1)[0] for _, x in messages(rs2) if "NOT-US" in x}

            assert wait_for(lambda: callers() >= {"OUT0", "OUT1", "OUT2"}, 90), rs2.lines()
            assert_valid(messages(rs2))
        finally:
            rs2.stop()
    finally:
        d.stop()


@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_udp_and_tls(tmp_path, transport):
    extra = {}
    if transport == "tls":
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        server.private_key_pem.write_to_path(str(tmp_path / "rs.key"))
        server.cert_chain_pems[0].write_to_path(str(tmp_path / "rs.pem"))
        extra = {"cert": tmp_path / "rs.pem", "key": tmp_path / "rs.key", "ca": tmp_path / "ca.pem"}
    rs = Rsyslog(tmp_path / "rsyslog", transport, **extra)
    try:
        syslog = {"host": "127.0.0.1", "port": rs.port, "transport": transport}
        if transport == "tls":
            syslog["ca"] = str(tmp_path / "ca.pem")
        d = start_daemon(tmp_path / "gw", {"audit": {"syslog": syslog}})
        try:
            assert http_request(d.http + "/api/outbox", token="bad-token-over-" + transport + "-0000")[0] == 401
            assert d.request("GET", "/api/outbox")[0] == 200
            assert wait_for(lambda: {("110114", "0"), ("110114", "4"), ("110113", "4")} <= {event_id(x) for _, x in messages(rs)}, 20), rs.lines()
            assert_valid(messages(rs))
        finally:
            d.stop()
    finally:
        rs.stop()
