"""The RIS simulator against a tiny in-test MLLP ACK server and FHIR server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from simulators.ris import RisOptions, RisSimulator


def test_orders_updates_and_cancels_on_one_connection(ack_server):
    server = ack_server()
    rep = RisSimulator(RisOptions(port=server.port, count=3, update=True, cancel=True, seed=5, day="20261124", timeout=5)).run()
    assert rep.ok, rep.to_text()
    acks = rep.by_name("ACK ")
    assert len(acks) == 9 and all(c.passed for c in acks)
    assert len(server.messages) == 9
    assert server.connections == 1  # many messages per connection
    kinds = [m.split("\r")[0].split("|")[8] for m in server.messages]
    assert kinds == ["ORM^O01"] * 3 + ["ADT^A08^ADT_A01"] * 3 + ["ORM^O01"] * 3
    cancels = [m for m in server.messages[6:]]
    assert all(m.split("\r")[3].split("|")[1] == "CA" for m in cancels)
    assert rep.stats["messages"] == 9


def test_omi_messages(ack_server):
    server = ack_server()
    rep = RisSimulator(RisOptions(port=server.port, format="omi", count=4, seed=2, timeout=5)).run()
    assert rep.ok, rep.to_text()
    assert all(m.split("\r")[0].split("|")[8] == "OMI^O23^OMI_O23" for m in server.messages)
    assert all("\rIPC|" in m for m in server.messages)


def test_wrong_msa_2_fails_the_check(ack_server):
    server = ack_server(lambda text, cid: ("AA", "NOT-" + cid))
    rep = RisSimulator(RisOptions(port=server.port, count=2, timeout=5)).run()
    assert not rep.ok
    assert len(rep.failed) == 2 and all("MSA-2" in c.detail for c in rep.failed)


def test_error_ack_fails_only_that_message(ack_server):
    server = ack_server(lambda text, cid: ("AE" if "\rORC|CA|" in text else "AA", cid))
    rep = RisSimulator(RisOptions(port=server.port, count=2, cancel=True, timeout=5)).run()
    assert [c.passed for c in rep.by_name("ACK ")] == [True, True, False, False]
    assert all("CA" in c.name for c in rep.failed)


def test_latin1_charset_on_the_wire(ack_server):
    server = ack_server()
    rep = RisSimulator(RisOptions(port=server.port, count=10, seed=3, charset="8859/1", timeout=5)).run()
    assert rep.ok, rep.to_text()
    assert all(m.split("\r")[0].split("|")[17] == "8859/1" for m in server.messages)


def test_files_are_sent_as_they_are(ack_server, tmp_path):
    for n in (1, 2):
        (tmp_path / f"m{n}.hl7").write_text(f"MSH|^~\\&|RIS|H|GW|D|20260101||ORM^O01|FILE{n}|P|2.3.1\nPID|1||P{n}\n")
    server = ack_server()
    rep = RisSimulator(RisOptions(port=server.port, files=str(tmp_path / "*.hl7"), timeout=5)).run()
    assert rep.ok, rep.to_text()
    assert [m.split("\r")[0].split("|")[9] for m in server.messages] == ["FILE1", "FILE2"]
    assert all("\n" not in m for m in server.messages)


def test_no_listener_is_a_failed_check():
    from tests.sim.conftest import free_port

    rep = RisSimulator(RisOptions(port=free_port(), count=1, timeout=2)).run()
    assert not rep.ok and rep.failed[0].name == "connect"


class _Fhir(BaseHTTPRequestHandler):
    status = 201
    received: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        ServiceRequest.model_validate(body)
        out = json.dumps({"resourceType": "ServiceRequest", "id": "x"} if self.status < 300 else {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def fhir_server():
    servers = []

    def make(status: int):
        handler = type("H", (_Fhir,), {"status": status, "received": []})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv, handler

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def test_fhir_service_requests(fhir_server):
    srv, handler = fhir_server(201)
    url = f"http://127.0.0.1:{srv.server_address[1]}/fhir"
    rep = RisSimulator(RisOptions(format="fhir", fhir_url=url, count=3, cancel=True, seed=4, timeout=5)).run()
    assert rep.ok, rep.to_text()
    assert all(path == "/fhir/ServiceRequest" for path, _ in handler.received)
    statuses = [b["status"] for _, b in handler.received]
    assert statuses.count("revoked") == statuses.count("active") >= 3
    ext = handler.received[0][1]["extension"][0]
    assert ext == {"url": "http://dxa-gateway.org/fhir/StructureDefinition/scheduled-station-ae", "valueString": "DXA1"}


def test_fhir_refusal_fails(fhir_server):
    srv, _ = fhir_server(422)
    rep = RisSimulator(RisOptions(format="fhir", fhir_url=f"http://127.0.0.1:{srv.server_address[1]}", count=1, timeout=5)).run()
    assert not rep.ok and "422" in rep.failed[0].detail


def test_cli_exit_code_and_json_report(ack_server, tmp_path):
    good = ack_server()
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, "-m", "simulators", "ris", "--port", str(good.port), "--count", "2", "--report", str(out)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(out.read_text())
    assert data["ok"] and data["passed"] == 3 and data["failed"] == 0 and data["simulator"] == "ris"  # connect + 2 ACKs
    bad = ack_server(lambda text, cid: ("AR", cid))
    run = subprocess.run([sys.executable, "-m", "simulators", "ris", "--port", str(bad.port), "--count", "1"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "[FAIL]" in run.stdout
