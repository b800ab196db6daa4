"""End to end: a DXA day on loopback, from the BMD SR's C-STORE to the ORU's ACK.

Orders go in over MLLP (RIS simulator); the scanner simulator works the
worklist at an offered rate (MPPS, three images, a BMD SR, a dose SR,
commitment, MPPS completed); the gateway routes the objects to Orthanc and,
with ``reports.auto_release``, the ORU^R01 to an MLLP EMR in this process.
Latency is from the gateway's log line for the SR's storage (its durable
commit, just before the C-STORE success) to the EMR's ACK of the ORU for the
same accession.  Prints figures; asserts nothing.

    python bench/e2e.py [--patients 200] [--rate 10] [--concurrency 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from _common import BENCH_HEADERS, BENCH_TOKEN, REPO, free_port, machine, percentile, start, start_gateway, stop, wait_port  # noqa: F401
import yaml

from hl7v2.ack import answer
from hl7v2.mllp import MllpReceiver
from simulators.ris import RisOptions, RisSimulator
from simulators.scanner import ScannerOptions, ScannerSimulator

ORTHANC = "/usr/sbin/Orthanc"


class Emr:
    """An MLLP receiver that ACKs every message and notes when, by accession."""

    def __init__(self) -> None:
        self.acked: dict[str, float] = {}  # accession -> time of the ACK
        self.messages = 0
        self._receiver = MllpReceiver(self._ack, nodelay=True, sent=self._acked)
        self.port = self._receiver.port

    def _ack(self, message: bytes) -> bytes:
        self.messages += 1
        return answer(message, "AA", control_id=f"A{self.messages}", timestamp=f"{datetime.now():%Y%m%d%H%M%S}")

    def _acked(self, message: bytes) -> None:
        obr = next((s.split("|") for s in message.decode("utf-8", "replace").split("\r") if s.startswith("OBR")), [])
        self.acked.setdefault(obr[2] if len(obr) > 2 else "", time.time())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0, help="exams started per second")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.patients = 20
    work = Path(tempfile.mkdtemp(prefix="dxa-bench-e2e-"))
    emr = Emr()
    orthanc_port, orthanc_http = free_port(), free_port()
    orthanc_cfg = {
        "Name": "e2e", "StorageDirectory": str(work / "orthanc" / "storage"), "IndexDirectory": str(work / "orthanc" / "index"),
        "DicomAet": "ORTHANC", "DicomPort": orthanc_port, "HttpPort": orthanc_http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "SyncStorageArea": True,
    }
    (work / "orthanc").mkdir()
    (work / "orthanc" / "orthanc.json").write_text(json.dumps(orthanc_cfg))
    orthanc = start([ORTHANC, str(work / "orthanc" / "orthanc.json")], env={"TCP_NODELAY": "1"}, log=work / "orthanc.log")
    wait_port(orthanc_port, orthanc)
    ports = {"dicom": free_port(), "hl7": free_port(), "http": free_port()}
    config = {
        "dicom": {"ae_title": "DXAGW", "host": "127.0.0.1", "port": ports["dicom"]},
        "hl7": {"host": "127.0.0.1", "port": ports["hl7"]},
        "http": {"host": "127.0.0.1", "port": ports["http"]},
        "storage": {"path": str(work / "data"), "min_free_bytes": 0},
        "reports": {"auto_release": True, "settle_seconds": 1},  # the simulator sends a study at once
        "security": {"tokens": [{"name": "bench", "token": BENCH_TOKEN, "roles": ["viewer", "admin", "metrics"]}]},
        "destinations": {
            "pacs": {"type": "dicom", "host": "127.0.0.1", "port": orthanc_port, "ae_title": "ORTHANC", "concurrency": 2},
            "emr": {"type": "hl7", "host": "127.0.0.1", "port": emr.port},
        },
        "routes": [{"match": {"kind": ["image", "sr", "pdf", "dose"]}, "to": ["pacs"]}, {"match": {"kind": "report"}, "to": ["emr"]}],
    }
    (work / "gateway.yaml").write_text(yaml.safe_dump(config))
    gateway = start_gateway(work / "gateway.yaml", ports, work / "gateway.log")
    http = f"http://127.0.0.1:{ports['http']}"
    try:
        print(f"# end-to-end DXA day | {machine()}")
        ris = RisSimulator(RisOptions(port=ports["hl7"], count=args.patients, station_ae="DXA1", seed=3, prefix="E2E")).run()
        print(f"orders: {ris.stats.get('messages')} sent, ACK p50 {ris.stats.get('latency_ms_p50')} ms")
        started = time.time()
        scanner = ScannerSimulator(
            ScannerOptions(vendor="hologic", gateway_port=ports["dicom"], called_ae="DXAGW", ae_title="DXA1", images=3,
                           concurrency=args.concurrency, rate=args.rate, seed=3, timeout=60, commit_timeout=60)
        ).run()
        exams = scanner.stats.get("exams", 0)
        deadline = time.time() + 120
        while time.time() < deadline and len(emr.acked) < exams:
            time.sleep(0.2)
        finished = max(emr.acked.values(), default=time.time())
        # SR storage times from the gateway's log, accessions from the exams API
        stored = {}
        for line in (work / "gateway.log").read_text().splitlines():
            if '"event":"store.stored"' in line and '"kind":"sr"' in line:
                entry = json.loads(line)
                stored[entry["sop_instance_uid"]] = datetime.fromisoformat(entry["ts"]).timestamp()
        with urllib.request.urlopen(urllib.request.Request(f"{http}/api/exams?limit=1000", headers=BENCH_HEADERS), timeout=30) as rsp:
            exam_rows = json.loads(rsp.read())
        latencies = []
        for row in exam_rows:
            t_sr = stored.get(row["sop_instance_uid"])
            t_ack = emr.acked.get(row["accession_number"])
            if t_sr and t_ack:
                latencies.append(t_ack - t_sr)
        def in_orthanc() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{orthanc_http}/statistics", timeout=30) as rsp:
                return json.loads(rsp.read())["CountInstances"]

        deadline = time.time() + 120
        while time.time() < deadline and in_orthanc() < scanner.stats.get("objects", 0):
            time.sleep(0.5)
        pacs_done = time.time()
        in_pacs = in_orthanc()
        with urllib.request.urlopen(urllib.request.Request(f"{http}/api/outbox?state=dead&limit=1000", headers=BENCH_HEADERS), timeout=30) as rsp:
            dead = len(json.loads(rsp.read()))
        span = finished - started
        print(f"offered: {args.rate} exams/s, scanner concurrency {args.concurrency}")
        print(f"exams scanned {exams} ({scanner.stats.get('exams_ok')} ok), objects sent {scanner.stats.get('objects')}, in Orthanc {in_pacs} ({pacs_done - started:.1f} s after the first scan)")
        for check in scanner.failed[:10]:
            print(f"  scanner check failed: {check.name}: {check.detail}")
        print(f"reports (ORU^R01) acknowledged by the EMR: {len(emr.acked)} of {exams}; dead letters {dead}")
        print(f"sustained: {len(emr.acked) / span:.2f} exams/s end to end ({span:.1f} s from the first scan to the last ACK)")
        if latencies:
            print(f"SR C-STORE -> ORU ACK: p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms (n={len(latencies)})")
        print(f"scanner exam time p50 {scanner.stats.get('exam_s_p50')} s, p95 {scanner.stats.get('exam_s_p95')} s")
    finally:
        stop(gateway)
        stop(orthanc)


if __name__ == "__main__":
    main()
