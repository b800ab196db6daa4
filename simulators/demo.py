"""``dxa-sim demo``: a short DXA day on loopback, end to end.

Starts the gateway (as its own process, on free ports, in a fresh data
folder) beside the PACS and EMR simulators, sends orders from the RIS
simulator, lets the scanner simulator work its worklist (MPPS, images, BMD
and dose SRs, commitment), waits until the PACS has the objects and the EMR
the reports, and prints what happened.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from gateway.ports import free_port, wait_port
from gateway.security.tokens import new_token
from simulators.emr import EmrOptions, EmrSimulator
from simulators.pacs import PacsOptions, PacsSimulator
from simulators.pki import DemoPki, make_demo_pki
from simulators.ris import RisOptions, RisSimulator
from simulators.scanner import ScannerOptions, ScannerSimulator


def _get(url: str, token: str, context: ssl.SSLContext | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10, context=context) as rsp:
        return rsp.read()


# who gets a certificate: name -> (server, client) extended key usage
PARTIES = {"gateway": (True, True), "pacs": (True, False), "emr": (True, False), "dxa1": (False, True), "ris": (False, True)}


def _tls_config(config: dict, pki: DemoPki, ports: dict[str, int]) -> None:
    """TLS on the gateway's three ports and toward both destinations.

    The DICOM and MLLP TLS listeners take the demo's ports; the plain ones
    (the gateway always runs them, README "Security") move to other free
    ports where, the scanner and the RIS being bound to their certificates
    (dicom.peers, hl7.allowed_senders), they are refused."""
    gw = pki["gateway"]
    listener = {"cert": str(gw.cert), "key": str(gw.key), "ca": str(pki.ca), "require_client_cert": True}
    config["dicom"].update(
        port=free_port(),
        tls={**listener, "port": ports["dicom"]},
        allowed_calling_aes=["DXA1"],
        peers={"DXA1": {"tls_subject": pki["dxa1"].subject}},
    )
    config["hl7"].update(
        port=free_port(),
        tls={**listener, "port": ports["hl7"]},
        allowed_senders=[{"sender": "RIS^HOSP", "tls_subject": pki["ris"].subject}],
    )
    config["http"]["tls"] = {"cert": str(gw.cert), "key": str(gw.key), "require_client_cert": False}
    client = {"ca": str(pki.ca), "cert": str(gw.cert), "key": str(gw.key)}
    for name in ("pacs", "emr"):
        config["destinations"][name]["tls"] = client


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_demo(
    patients: int = 5, vendor: str = "hologic", data: str | None = None, keep_running: bool = False, timeout: float = 120.0, tls: bool = False
) -> int:
    work = Path(data) if data else Path(tempfile.mkdtemp(prefix="dxagw-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("dicom", "hl7", "http", "pacs", "emr")}
    pki = make_demo_pki(work / "pki", PARTIES) if tls else None
    # the PACS and EMR ask for the gateway's client certificate under the demo CA
    served = {name: {"tls_cert": str(pki[name].cert), "tls_key": str(pki[name].key), "tls_ca": str(pki.ca)} if pki else {} for name in ("pacs", "emr")}
    pacs = PacsSimulator(PacsOptions(port=ports["pacs"], ae_title="PACS", folder=str(work / "pacs-received"), **served["pacs"]))
    emr = EmrSimulator(EmrOptions(port=ports["emr"], **served["emr"]))
    token = new_token()  # this demo's only HTTP identity
    config = {
        "security": {"tokens": [{"name": "demo", "token": token, "roles": ["viewer", "admin", "metrics"]}]},
        "dicom": {"ae_title": "DXAGW", "host": "127.0.0.1", "port": ports["dicom"]},
        "hl7": {"host": "127.0.0.1", "port": ports["hl7"]},
        "http": {"host": "127.0.0.1", "port": ports["http"]},
        "storage": {"path": str(work / "data"), "min_free_bytes": 0},
        "reports": {"auto_release": True, "settle_seconds": 1},  # the simulator sends a study at once
        "destinations": {
            "pacs": {"type": "dicom", "host": "127.0.0.1", "port": ports["pacs"], "ae_title": "PACS"},
            "emr": {"type": "hl7", "host": "127.0.0.1", "port": ports["emr"]},
        },
        "routes": [
            {"match": {"kind": ["image", "sr", "pdf", "dose"]}, "to": ["pacs"]},
            {"match": {"kind": "report"}, "to": ["emr"]},
        ],
    }
    if pki:
        _tls_config(config, pki, ports)
    config_path = work / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = work / "gateway.log"
    print(f"demo folder: {work}")
    pacs.start()
    emr.start()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
    )
    http = f"{'https' if pki else 'http'}://127.0.0.1:{ports['http']}"
    https = ssl.create_default_context(cafile=str(pki.ca)) if pki else None
    # the scanner and the RIS present their certificates (mutual TLS)
    client = {name: {"tls_ca": str(pki.ca), "tls_cert": str(pki[name].cert), "tls_key": str(pki[name].key)} if pki else {} for name in ("dxa1", "ris")}
    try:
        for name in ("dicom", "hl7", "http"):
            wait_port(ports[name])
        started = time.monotonic()
        ris = RisSimulator(RisOptions(port=ports["hl7"], count=patients, station_ae="DXA1", seed=7, prefix="DEMO", **client["ris"])).run()
        scanner = ScannerSimulator(
            ScannerOptions(vendor=vendor, gateway_port=ports["dicom"], called_ae="DXAGW", ae_title="DXA1", seed=7, images=2, **client["dxa1"])
        ).run()
        expected_objects = scanner.stats.get("objects", 0)
        pacs.wait_for(instances=expected_objects, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(emr.messages) < scanner.stats.get("exams", 0):
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        metrics = _get(f"{http}/metrics", token, https).decode()
        outbox = json.loads(_get(f"{http}/api/outbox?limit=1000", token, https))
        forwarded = sum(1 for r in outbox if r["state"] == "done" and r["kind"] != "report")
        reports = sum(1 for r in outbox if r["state"] == "done" and r["kind"] == "report")
        rows = [
            ("orders sent / acknowledged", f"{ris.stats.get('messages', 0)} / {sum(1 for c in ris.checks if c.name.startswith('ACK ') and c.passed)}"),
            ("worklist hits", str(scanner.stats.get("worklist_items", 0))),
            ("exams scanned", f"{scanner.stats.get('exams_ok', 0)} of {scanner.stats.get('exams', 0)} ok"),
            ("objects stored by the gateway", str(int(_metric(metrics, "dxagw_instances_received_total")))),
            ("objects forwarded to the PACS", f"{forwarded} (PACS holds {len(pacs.instances)})"),
            ("reports delivered to the EMR", f"{reports} (EMR got {len(emr.messages)})"),
            ("order ACK latency p50 / max", f"{ris.stats.get('latency_ms_p50', '-')} / {ris.stats.get('latency_ms_max', '-')} ms"),
            ("exam time p50 / max", f"{scanner.stats.get('exam_s_p50', '-')} / {scanner.stats.get('exam_s_max', '-')} s"),
            ("whole day", f"{elapsed:.1f} s"),
            ("metrics", f"{http}/metrics"),
            ("API token (viewer, admin, metrics)", f"in {config_path} (curl -H 'Authorization: Bearer ...')"),
            ("data folder", str(work / "data")),
        ]
        if pki:
            rows += [
                ("DICOM TLS / MLLP TLS ports", f"{ports['dicom']} / {ports['hl7']} (client certificate required)"),
                ("HTTPS", f"{http}/"),
                ("CA certificate", f"{pki.ca} (curl --cacert ...)"),
                ("certificates and keys", f"{pki.ca.parent} (scanner dxa1, RIS ris; keys 0600)"),
            ]
        rows += [
            ("gateway log", str(log_path)),
        ]
        width = max(len(k) for k, _ in rows)
        print()
        print("DXA day on loopback")
        print("-" * (width + 40))
        for key, value in rows:
            print(f"{key.ljust(width)}  {value}")
        failures = ris.failed + scanner.failed + pacs.report().failed + emr.report().failed
        ok = not failures and len(pacs.instances) >= expected_objects > 0 and len(emr.messages) >= scanner.stats.get("exams", 0) > 0
        if failures:
            print("\nchecks that failed:")
            for check in failures[:20]:
                print(f"  FAIL {check.name}: {check.detail}")
        print("\nresult:", "ok" if ok else "INCOMPLETE")
        if keep_running:
            print("the gateway keeps running; Ctrl-C to stop")
            try:
                gateway.wait()
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    finally:
        if gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        pacs.stop()
        emr.stop()
