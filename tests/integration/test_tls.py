"""TLS on every port (issue 13, README "Security"; DICOM PS3.15 B.9, BCP 195):
dcmtk's own TLS (storescu/echoscu/findscu +tls) with certificates made here,
the RIS simulator over MLLP/TLS, HTTPS, outbound DICOM TLS, and a peer bound
to its certificate."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme
from pydicom.uid import generate_uid

from simulators.ris import RisOptions, RisSimulator
from tests.dicom_data import secondary_capture
from tests.support import MllpClient, dcmtk, free_port, http_request, start_daemon, wait_port
from tests.hl7_messages import orm

ENV = dict(os.environ, TCP_NODELAY="1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, the gateway's certificate (127.0.0.1, localhost), a scanner's and
    one from another CA."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="Hospital Test CA")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="dxagw.hospital.example")
    server.private_key_pem.write_to_path(str(d / "gw.key"))
    server.cert_chain_pems[0].write_to_path(str(d / "gw.pem"))
    for name, issuer in (("dxa1", ca), ("stranger", trustme.CA())):
        client = issuer.issue_cert(f"{name}.hospital.example", common_name=f"{name}.hospital.example")
        client.private_key_pem.write_to_path(str(d / f"{name}.key"))
        client.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
    return d


def _der_sha256(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, pki):
    tls = {"cert": str(pki / "gw.pem"), "key": str(pki / "gw.key"), "ca": str(pki / "ca.pem"), "require_client_cert": True}
    d = start_daemon(
        tmp_path_factory.mktemp("tls"),
        {
            "storage": {"min_free_bytes": 0},
            "dicom": {
                "tls": {**tls, "port": free_port()},
                "peers": {"DXA1": {"tls_subject": "CN=dxa1.hospital.example"}, "PINNED": {"tls_fingerprint": "00" * 32}},
            },
            "hl7": {"tls": {**tls, "port": free_port()}, "allowed_senders": [{"sender": "RIS^HOSP", "tls_subject": "CN=dxa1.hospital.example"}]},
        },
    )
    d.tls = yaml_tls(d)
    wait_port(d.tls["dicom"])
    wait_port(d.tls["hl7"])
    yield d
    d.stop()


def yaml_tls(d) -> dict:
    import yaml

    cfg = yaml.safe_load(d.config_path.read_text())
    return {"dicom": cfg["dicom"]["tls"]["port"], "hl7": cfg["hl7"]["tls"]["port"]}


def dcmtk_tls(tool: str, pki: Path, port: int, *args: str, client: str | None = "dxa1", aet: str = "DXA1"):
    creds = ["+tls", str(pki / f"{client}.key"), str(pki / f"{client}.pem"), "-pw"] if client else ["+tla"]
    cmd = [dcmtk(tool), "-v", *creds, "+cf", str(pki / "ca.pem"), "-aet", aet, "-aec", "DXAGW", "-to", "10", "127.0.0.1", str(port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)


def stored(daemon, sop_uid: str) -> bool:
    db = daemon.dir / "data" / "gateway.sqlite3"
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", (sop_uid,)).fetchone()[0] == 1


def test_storescu_with_a_client_certificate_stores(daemon, pki, tmp_path):
    f = tmp_path / "sc.dcm"
    ds = secondary_capture(f, seed=1)
    r = dcmtk_tls("storescu", pki, daemon.tls["dicom"], str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    assert stored(daemon, str(ds.SOPInstanceUID))
    # a peer that connects and never starts its handshake does not hold up the others
    import socket

    stalled = socket.create_connection(("127.0.0.1", daemon.tls["dicom"]))
    try:
        assert dcmtk_tls("echoscu", pki, daemon.tls["dicom"]).returncode == 0
    finally:
        stalled.close()


def test_without_a_client_certificate_it_is_refused(daemon, pki, tmp_path):
    f = tmp_path / "sc.dcm"
    ds = secondary_capture(f, seed=2)
    r = dcmtk_tls("storescu", pki, daemon.tls["dicom"], str(f), client=None)
    assert r.returncode != 0
    from tests.orthanc import wait_for

    def refusals():
        return {row["detail"]["reason"] for row in daemon.request("GET", "/api/audit?event=dicom.tls_refused")[1]}

    assert wait_for(lambda: "TLS: PEER_DID_NOT_RETURN_A_CERTIFICATE" in refusals(), 10)  # refused in the handshake, audited
    assert not stored(daemon, str(ds.SOPInstanceUID))
    # a certificate from another CA is refused too
    r = dcmtk_tls("storescu", pki, daemon.tls["dicom"], str(f), client="stranger")
    assert r.returncode != 0
    assert not stored(daemon, str(ds.SOPInstanceUID))
    assert wait_for(lambda: "TLS: CERTIFICATE_VERIFY_FAILED" in refusals(), 10)
    # the plain port still serves beside the TLS one; plain TCP to the TLS port does not
    r = subprocess.run([dcmtk("echoscu"), "-aet", "PLAIN", "-aec", "DXAGW", "-to", "5", "127.0.0.1", str(daemon.dicom_port)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0
    r = subprocess.run([dcmtk("echoscu"), "-aet", "PLAIN", "-aec", "DXAGW", "-to", "5", "127.0.0.1", str(daemon.tls["dicom"])], capture_output=True, text=True, env=ENV)
    assert r.returncode != 0


def test_peer_bound_to_its_certificate(daemon, pki):
    """dicom.peers: DXA1 must present CN=dxa1.hospital.example; PINNED a
    certificate with another fingerprint; without TLS neither can prove it."""
    r = dcmtk_tls("echoscu", pki, daemon.tls["dicom"], aet="PINNED")
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr
    r = subprocess.run([dcmtk("echoscu"), "-v", "-aet", "DXA1", "-aec", "DXAGW", "-to", "5", "127.0.0.1", str(daemon.dicom_port)], capture_output=True, text=True, env=ENV)
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr
    from tests.orthanc import wait_for

    assert wait_for(lambda: any(a["actor"].startswith("PINNED@") and "fingerprint" in a["detail"]["reason"] for a in daemon.request("GET", "/api/audit?event=dicom.association_refused")[1]), 10)


def test_ris_simulator_over_mllp_tls(daemon, pki):
    rep = RisSimulator(
        RisOptions(port=daemon.tls["hl7"], count=2, seed=3, prefix="TLS", tls_ca=str(pki / "ca.pem"), tls_cert=str(pki / "dxa1.pem"), tls_key=str(pki / "dxa1.key"), timeout=10)
    ).run()
    assert not rep.failed, [(c.name, c.detail) for c in rep.failed]
    rows = daemon.request("GET", "/api/worklist?limit=1000")[1]
    assert sum(1 for r in rows if r["dataset"].get("00100020", {}).get("Value", [""])[0].startswith("TLS")) >= 2
    # and the worklist answers findscu over DICOM TLS
    r = dcmtk_tls("findscu", pki, daemon.tls["dicom"], "-W", "-k", "PatientID=TLS*", "-k", "PatientName", "-k", "AccessionNumber")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("Find Response:") + r.stdout.count("Find Response:") >= 2, r.stdout + r.stderr
    # RIS^HOSP must present its certificate: on the plain port it is refused (AR) and changes nothing
    from tests.support import ack_fields

    plain = MllpClient(daemon.hl7_port)
    ack = ack_fields(plain.send(orm("TLS-PLAIN", placer="TPL", accession="TPL", patient_id="PTLSPLAIN")))
    plain.close()
    assert ack["MSA"][1] == "AR" and "certificate" in ack["MSA"][3]
    assert daemon.request("GET", "/api/worklist?patient=PTLSPLAIN")[1] == []
    # without a client certificate the handshake fails and nothing is read
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        client = MllpClient(daemon.tls["hl7"])
        client.sock = ctx.wrap_socket(client.sock, server_hostname="127.0.0.1")
        client.send(orm("TLS-NOCERT", placer="TNC", accession="TNC"))


def test_scanner_simulator_over_dicom_tls(daemon, pki):
    """The whole exam over DICOM TLS with the scanner's certificate: worklist,
    MPPS, images, SRs and commitment (after the RIS test's orders)."""
    from simulators.scanner import ScannerOptions, ScannerSimulator

    sim = ScannerSimulator(ScannerOptions(
        gateway_port=daemon.tls["dicom"], called_ae="DXAGW", ae_title="DXA1", seed=5, images=1, patients=1, timeout=15, commit_timeout=15,
        tls_ca=str(pki / "ca.pem"), tls_cert=str(pki / "dxa1.pem"), tls_key=str(pki / "dxa1.key"),
    ))
    rep = sim.run()
    assert not rep.failed, [(c.name, c.detail) for c in rep.failed]
    assert rep.stats.get("worklist_items", 0) >= 1 and rep.stats.get("objects", 0) >= 2, rep.stats


def test_https_and_outbound_dicom_tls(tmp_path, pki):
    """http.tls serves HTTPS (client certificates optional there); a dicom
    destination with tls: reaches a gateway's DICOM TLS port with our certificate."""
    receiver_tls = {"cert": str(pki / "gw.pem"), "key": str(pki / "gw.key"), "ca": str(pki / "ca.pem"), "require_client_cert": True}
    rx_port = free_port()
    rx = start_daemon(tmp_path / "rx", {"storage": {"min_free_bytes": 0}, "dicom": {"ae_title": "RX", "tls": {**receiver_tls, "port": rx_port}}})
    try:
        wait_port(rx_port)
        tx = start_daemon(
            tmp_path / "tx",
            {
                "storage": {"min_free_bytes": 0},
                "http": {"tls": {"cert": str(pki / "gw.pem"), "key": str(pki / "gw.key"), "require_client_cert": False}},
                "destinations": {"rx": {"type": "dicom", "host": "127.0.0.1", "port": rx_port, "ae_title": "RX", "retry_base": 0.3, "tls": {"ca": str(pki / "ca.pem"), "cert": str(pki / "dxa1.pem"), "key": str(pki / "dxa1.key")}}},
                "routes": [{"match": {"kind": "image"}, "to": ["rx"]}],
            },
        )
        try:
            ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            import urllib.request

            req = urllib.request.Request(f"https://127.0.0.1:{tx.http_port}/api/worklist", headers=tx.headers)
            with urllib.request.urlopen(req, context=ctx, timeout=10) as rsp:
                assert rsp.status == 200
                assert rsp.headers["Strict-Transport-Security"].startswith("max-age=")
            f = tmp_path / "sc.dcm"
            ds = secondary_capture(f, seed=9)
            r = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(tx.dicom_port), str(f)], capture_output=True, text=True, env=ENV)
            assert r.returncode == 0, r.stderr
            from tests.orthanc import wait_for

            assert wait_for(lambda: stored(rx, str(ds.SOPInstanceUID)), 20)
            rows = http_request(f"http://127.0.0.1:{rx.http_port}/api/audit?limit=50", token=rx.token)[1]
            assert not any(r["event"] == "dicom.association_refused" for r in rows)
        finally:
            tx.stop()
    finally:
        rx.stop()


def test_outbound_mllp_and_https_senders(daemon, pki, tmp_path):
    """The hl7 and fhir senders with tls: reach an MLLP/TLS listener with our
    client certificate (and fail without it) and an HTTPS endpoint under our CA."""
    import asyncio

    from aiohttp import web

    from gateway.security.tls import client_context, server_context
    from routes.base import Delivery, Retry
    from routes.hl7_mllp import MllpSender
    from routes.http_senders import FhirSender

    async def run():
        message = orm("TLS-OUT-1", placer="TOP", filler="TOF", accession="TOA", patient_id="PTLSOUT").encode()
        good = MllpSender("127.0.0.1", daemon.tls["hl7"], timeout=10, tls=client_context(pki / "ca.pem", pki / "dxa1.pem", pki / "dxa1.key"))
        await good.send(Delivery(1, "order-status", message=message, control_id="TLS-OUT-1"))
        await good.close()
        bare = MllpSender("127.0.0.1", daemon.tls["hl7"], timeout=10, tls=client_context(pki / "ca.pem"))
        with pytest.raises(Retry):
            await bare.send(Delivery(2, "order-status", message=message.replace(b"TLS-OUT-1", b"TLS-OUT-2"), control_id="TLS-OUT-2"))
        await bare.close()

        got = []

        async def bundle(request):
            got.append(await request.read())
            return web.json_response({"resourceType": "Bundle", "type": "transaction-response"}, content_type="application/fhir+json")

        app = web.Application()
        app.router.add_post("/fhir", bundle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context(pki / "gw.pem", pki / "gw.key", require_client_cert=False))
        await site.start()
        try:
            fhir = FhirSender(f"https://127.0.0.1:{port}/fhir", timeout=10, tls=client_context(pki / "ca.pem"))
            await fhir.send(Delivery(3, "report", resource={"resourceType": "Bundle", "type": "transaction", "entry": []}, resource_json=b'{"resourceType":"Bundle","type":"transaction","entry":[]}'))
            await fhir.close()
        finally:
            await runner.cleanup()
        return got

    got = asyncio.run(run())
    assert len(got) == 1 and b"transaction" in got[0]
    rows = daemon.request("GET", "/api/worklist?patient=PTLSOUT")[1]
    assert len(rows) == 1

