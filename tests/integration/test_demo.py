"""``dxa-sim demo`` runs a DXA day end to end and says so; with ``--tls``
over TLS on every hop (README "Simulators and demo", "Security")."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.hl7_messages import orm
from tests.support import MllpClient, ack_fields


def _check_day(stdout: str, data: Path) -> dict[str, str]:
    """The summary's figures agree: every order acknowledged, every object
    stored reached the PACS, a report per exam reached the EMR."""
    lines = {line.split("  ")[0].strip(): line for line in stdout.splitlines() if "  " in line}
    assert lines["orders sent / acknowledged"].split()[-3:] == ["3", "/", "3"]
    forwarded = lines["objects forwarded to the PACS"].split()
    stored = int(lines["objects stored by the gateway"].split()[-1])
    assert stored > 0 and int(forwarded[-4]) == stored
    reports = lines["reports delivered to the EMR"].split()
    assert int(reports[-4]) >= 3
    assert "result: ok" in stdout
    assert (data / "data" / "gateway.sqlite3").exists()
    return lines


def test_demo_runs_a_dxa_day(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "simulators", "demo", "--patients", "3", "--data", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = _check_day(out.stdout, tmp_path / "demo")
    assert lines["metrics"].split()[-1].startswith("http://")
    assert not (tmp_path / "demo" / "pki").exists()


def _plain_dicom_echo(port: int, aet: str = "DXA1") -> bool:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DXAGW")
    try:
        return assoc.is_established
    finally:
        if assoc.is_established:
            assoc.release()


def test_demo_over_tls(tmp_path):
    """The same day with every hop over TLS; then, with the gateway still up,
    plain TCP gets nowhere: no association on the DICOM port, no ACK on the
    MLLP port, no HTTP answer on the HTTPS port, and the plain listeners the
    gateway keeps beside them refuse the scanner and the RIS, whose AE title
    and MSH-3^MSH-4 are bound to their certificates."""
    data = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "demo", "--tls", "--keep-running", "--patients", "3", "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if "the gateway keeps running" in line or line.startswith("result:") and "ok" not in line:
                break
        stdout = "".join(out)
        assert "the gateway keeps running" in stdout, stdout[-3000:]
        lines = _check_day(stdout, data)
        pki = data / "pki"
        assert lines["CA certificate"].split()[-4] == str(pki / "ca.pem")
        for key in pki.glob("*.key"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        config = yaml.safe_load((data / "gateway.yaml").read_text())
        dicom_tls, hl7_tls = (int(p) for p in lines["DICOM TLS / MLLP TLS ports"].split()[-6:-3:2])
        assert (dicom_tls, hl7_tls) == (config["dicom"]["tls"]["port"], config["hl7"]["tls"]["port"])
        https = lines["HTTPS"].split()[-1]
        assert https.startswith("https://127.0.0.1:")

        # HTTPS under the demo CA answers; plain HTTP to the same port does not
        token = config["security"]["tokens"][0]["token"]
        req = urllib.request.Request(https + "metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(pki / "ca.pem")), timeout=10) as rsp:
            assert rsp.status == 200 and b"dxagw_instances_received_total" in rsp.read()
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(https.replace("https://", "http://") + "metrics", timeout=10)

        # plain DICOM to the TLS port: no association
        assert not _plain_dicom_echo(dicom_tls)
        # plain MLLP to the TLS port: no ACK, the connection ends
        with socket.create_connection(("127.0.0.1", hl7_tls), timeout=10) as sock:
            sock.sendall(b"\x0b" + orm("DEMO-PLAIN", placer="DPL", accession="DPL").encode() + b"\x1c\x0d")
            got = b""
            try:
                while chunk := sock.recv(4096):
                    got += chunk
            except (ConnectionResetError, TimeoutError):
                pass
            assert b"MSA" not in got

        # the plain listeners refuse the demo's scanner and RIS without their certificates
        assert not _plain_dicom_echo(config["dicom"]["port"])
        plain = MllpClient(config["hl7"]["port"])
        try:
            ack = ack_fields(plain.send(orm("DEMO-PLAIN-2", placer="DP2", accession="DP2")))
        finally:
            plain.close()
        assert ack["MSA"][1] == "AR" and "certificate" in ack["MSA"][3]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0, "".join(out)[-3000:]
