"""Crash campaign: kill -9 the gateway at a random moment under mixed load, N times.

Load, from threads in this process: HL7 orders over MLLP, scanner exams
(MPPS N-CREATE, two report images and a Hologic BMD SR by C-STORE, MPPS
COMPLETED), and a reporter signing exams through the API.  The gateway
routes images and SRs to Orthanc (a real PACS, SyncStorageArea on) and
reports (ORU^R01) to an MLLP EMR in this process.  Each cycle: start the
gateway on the same data folder, load it, SIGKILL the daemon at a random
moment, then check, from the store:

- nothing acknowledged is missing (HL7 AA, C-STORE and MPPS success, a
  signature's 201) and ``PRAGMA integrity_check`` is ``ok``;
- whether the SR worker outlived its parent (counted, then killed).

After the last cycle the gateway runs until its outbox drains, then:
every acknowledged object is in Orthanc and every signed report reached
the EMR (at least once; duplicates counted from Orthanc's "Already
stored" and the EMR's MSH-10s), and acknowledged BMD SRs without an exam
are counted (a known loss: the exam hand-off comes after the ACK).  Prints figures; asserts
nothing.

    python bench/crash.py [--cycles 100] [--seed 1] [--min-run 1] [--max-run 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from _common import BENCH_HEADERS as HEADERS, BENCH_TOKEN as TOKEN, REPO, free_port, machine, percentile, start, start_gateway, stop, wait_port  # noqa: F401
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from hl7v2.ack import answer
from hl7v2.er7 import msh_field
from hl7v2.mllp import MllpReceiver
from mappings.instances import kind_of
from simulators import datasets
from tests.hl7_messages import orm
from tests.scu import mpps_create_dataset, mpps_final

ORTHANC = "/usr/sbin/Orthanc"


class Emr:
    """An MLLP receiver that ACKs every message; keeps each message's MSH-10 and text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.control_ids: Counter[str] = Counter()
        self.texts: list[str] = []
        self._receiver = MllpReceiver(self._ack, sent=self._acked)
        self.port = self._receiver.port

    def _ack(self, message: bytes) -> bytes:
        return answer(message, "AA", control_id=f"A{msh_field(message, 10)}", timestamp="20260101000000")

    def _acked(self, message: bytes) -> None:
        with self.lock:  # counted once ACKed: the gateway may still miss the ACK (a duplicate follows)
            self.control_ids[msh_field(message, 10)] += 1
            self.texts.append(message.decode("utf-8", "replace"))


class Acked:
    """What the gateway acknowledged, across all cycles (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.orders: set[str] = set()  # accession
        self.instances: dict[str, str] = {}  # SOP Instance UID -> kind
        self.mpps: set[str] = set()
        self.signed: dict[int, str] = {}  # exam id -> accession

    def add(self, what: str, key, value=None) -> None:
        with self.lock:
            target = getattr(self, what)
            if isinstance(target, set):
                target.add(key)
            else:
                target[key] = value


def order_load(port: int, stop_at: threading.Event, acked: Acked, prefix: str) -> None:
    from tests.support import MllpClient

    n = 0
    try:
        mllp = MllpClient(port, timeout=10)
        while not stop_at.is_set():
            n += 1
            accession = f"{prefix}O{n}"
            ack = mllp.send(orm(f"{prefix}M{n}", placer=accession, filler=accession, accession=accession, patient_id=f"{prefix}P{n}"))
            if "|AA|" in ack.split("\r")[1] + "|":
                acked.add("orders", accession)
    except (OSError, ConnectionError, IndexError):
        return


def exam_header(rng: random.Random, accession: str, patient_id: str) -> Dataset:
    h = Dataset()
    h.SpecificCharacterSet = "ISO_IR 192"
    h.PatientID = patient_id
    h.PatientName = "Crash^Test"
    h.PatientBirthDate = "19550101"
    h.PatientSex = "F"
    h.StudyInstanceUID = datasets.seeded_uid(rng)
    h.AccessionNumber = accession
    h.StudyDate, h.StudyTime = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    return h


def scanner_load(port: int, stop_at: threading.Event, acked: Acked, prefix: str, seed: int) -> None:
    """Exams until stopped: MPPS, two images, a BMD SR, MPPS COMPLETED, one association each."""
    rng = random.Random(seed)
    n = 0
    while not stop_at.is_set():
        n += 1
        header = exam_header(rng, f"{prefix}A{n}", f"{prefix}P{n}")
        objects = [datasets.build_report_image("hologic", header, rng, index=i, station_ae="DXA1") for i in range(2)]
        objects.append(datasets.build_bmd_sr("hologic", header, rng))
        ae = AE(ae_title="DXA1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
        ae.add_requested_context(ModalityPerformedProcedureStep)
        for ds in objects:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        try:
            assoc = ae.associate("127.0.0.1", port, ae_title="DXAGW")
        except Exception:
            return
        if not assoc.is_established:
            return
        try:
            uid = generate_uid()
            status, _ = assoc.send_n_create(mpps_create_dataset(study_uid=header.StudyInstanceUID, patient_id=header.PatientID), ModalityPerformedProcedureStep, uid)
            if status and status.Status == 0x0000:
                acked.add("mpps", uid)
            for ds in objects:
                status = assoc.send_c_store(ds)
                if not status or status.Status != 0x0000:
                    return
                acked.add("instances", str(ds.SOPInstanceUID), kind_of(str(ds.SOPClassUID)))
            assoc.send_n_set(mpps_final(), ModalityPerformedProcedureStep, uid)
            assoc.release()
        except Exception:
            assoc.abort()
            return


def signer_load(http: str, stop_at: threading.Event, acked: Acked) -> None:
    """A reporter signing every parsed, unsigned exam."""
    while not stop_at.is_set():
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{http}/api/exams?state=parsed&limit=1000", headers=HEADERS), timeout=10) as rsp:
                rows = json.loads(rsp.read())
            for row in rows:
                if stop_at.is_set():
                    return
                if row.get("report_status") in ("F", "C"):
                    continue
                req = urllib.request.Request(f"{http}/api/exams/{row['id']}/sign", data=b"{}", method="POST", headers={**HEADERS, "Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=10) as rsp:
                        if rsp.status == 201:
                            acked.add("signed", row["id"], row.get("accession_number") or row.get("accession") or "")
                except urllib.error.HTTPError:
                    pass
        except (OSError, ValueError):
            return
        stop_at.wait(0.3)


def check_store(db_path: Path, acked: Acked) -> dict:
    """Missing acknowledged rows and the integrity check, read with the daemon dead."""
    db = sqlite3.connect(db_path)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        orders = {r[0] for r in db.execute("SELECT accession FROM worklist_items")}
        instances = {r[0] for r in db.execute("SELECT sop_instance_uid FROM instances")}
        mpps = {r[0] for r in db.execute("SELECT sop_instance_uid FROM mpps")}
        signed = {r[0] for r in db.execute("SELECT id FROM exams WHERE report_status IN ('F', 'C')")}
        # one exam per study (README "BMD results"): an SR is read when its study has an exam
        study_of = dict(db.execute("SELECT sop_instance_uid, study_uid FROM instances").fetchall())
        exam_studies = {r[0] for r in db.execute("SELECT study_uid FROM exams")}
    finally:
        db.close()
    with acked.lock:
        return {
            "integrity": integrity,
            "orders": len(acked.orders - orders),
            "instances": len(set(acked.instances) - instances),
            "mpps": len(acked.mpps - mpps),
            "signed": len(set(acked.signed) - signed),
            "sr_without_exam": sum(1 for uid, kind in acked.instances.items() if kind == "sr" and study_of.get(uid) not in exam_studies),
        }


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the process group.

    A worker that exited after its parent was killed is a zombie until init
    reaps it, which can take seconds in a container; it is not running."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # proc(5): state, ppid, pgrp
            return True
    return False


def orthanc_sop_uids(http_port: int) -> set[str]:
    body = json.dumps({"Level": "Instance", "Query": {}, "Expand": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/tools/find", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=60) as rsp:
        return {row["MainDicomTags"]["SOPInstanceUID"] for row in json.loads(rsp.read())}


def pending_rows(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'in_flight')").fetchone()[0]
    finally:
        db.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-run", type=float, default=1.0, help="shortest load before the kill, seconds")
    p.add_argument("--max-run", type=float, default=5.0, help="longest load before the kill, seconds")
    p.add_argument("--scanners", type=int, default=2)
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="dxa-bench-crash-"))
    emr = Emr()
    orthanc_port, orthanc_http = free_port(), free_port()
    (work / "orthanc").mkdir()
    (work / "orthanc" / "orthanc.json").write_text(json.dumps({
        "Name": "crash", "StorageDirectory": str(work / "orthanc" / "storage"), "IndexDirectory": str(work / "orthanc" / "index"),
        "DicomAet": "ORTHANC", "DicomPort": orthanc_port, "HttpPort": orthanc_http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "SyncStorageArea": True,
    }))
    orthanc_log = work / "orthanc.log"
    orthanc = start([ORTHANC, "--verbose", str(work / "orthanc" / "orthanc.json")], env={"TCP_NODELAY": "1"}, log=orthanc_log)
    wait_port(orthanc_port, orthanc)
    ports = {"dicom": free_port(), "hl7": free_port(), "http": free_port()}
    config = {
        "dicom": {"ae_title": "DXAGW", "host": "127.0.0.1", "port": ports["dicom"]},
        "hl7": {"host": "127.0.0.1", "port": ports["hl7"]},
        "http": {"host": "127.0.0.1", "port": ports["http"]},
        "storage": {"path": str(work / "data"), "min_free_bytes": 0},
        "reports": {"settle_seconds": 1},  # each scanner sends its study at once
        "security": {"tokens": [{"name": "crash", "token": TOKEN, "roles": ["viewer", "reporter"], "display_name": "Dr Crash"}]},
        "destinations": {
            "pacs": {"type": "dicom", "host": "127.0.0.1", "port": orthanc_port, "ae_title": "ORTHANC", "retry_base": 0.5, "retry_cap": 5},
            "emr": {"type": "hl7", "host": "127.0.0.1", "port": emr.port, "retry_base": 0.5, "retry_cap": 5},
        },
        "routes": [{"match": {"kind": ["image", "sr"]}, "to": ["pacs"]}, {"match": {"kind": "report"}, "to": ["emr"]}],
    }
    (work / "gateway.yaml").write_text(yaml.safe_dump(config))
    db_path = work / "data" / "gateway.sqlite3"
    http = f"http://127.0.0.1:{ports['http']}"
    acked = Acked()
    totals: Counter[str] = Counter()
    integrity_failures = orphans = 0
    restart_s: list[float] = []
    kill_at: list[float] = []
    print(f"# crash campaign: {args.cycles} cycles of kill -9 under load | {machine()}")
    gateway = None
    try:
        for cycle in range(args.cycles):
            t0 = time.monotonic()
            gateway = start_gateway(work / "gateway.yaml", ports, work / "gateway.log")
            restart_s.append(time.monotonic() - t0)
            stop_at = threading.Event()
            prefix = f"C{cycle}"
            threads = [threading.Thread(target=order_load, args=(ports["hl7"], stop_at, acked, prefix), daemon=True)]
            threads += [
                threading.Thread(target=scanner_load, args=(ports["dicom"], stop_at, acked, f"{prefix}S{i}", args.seed * 1000 + cycle * 10 + i), daemon=True)
                for i in range(args.scanners)
            ]
            threads.append(threading.Thread(target=signer_load, args=(http, stop_at, acked), daemon=True))
            for t in threads:
                t.start()
            delay = rng.uniform(args.min_run, args.max_run)
            kill_at.append(delay)
            time.sleep(delay)
            os.kill(gateway.pid, signal.SIGKILL)  # the daemon only, as a crash would
            gateway.wait()
            stop_at.set()
            for t in threads:
                t.join(30)
            time.sleep(0.5)
            if group_alive(gateway.pid):  # its SR worker outlived it
                orphans += 1
            stop(gateway, grace=0)  # SIGKILLs what is left of the group
            gateway = None
            result = check_store(db_path, acked)
            if result["integrity"] != "ok":
                integrity_failures += 1
            for key in ("orders", "instances", "mpps", "signed"):
                totals[f"missing_{key}"] = max(totals[f"missing_{key}"], result[key])
            totals["sr_without_exam"] = result["sr_without_exam"]
            with acked.lock:
                line = f"orders {len(acked.orders)} instances {len(acked.instances)} mpps {len(acked.mpps)} signed {len(acked.signed)}"
            print(f"cycle {cycle + 1:3d}: killed after {delay:.2f} s | acked so far: {line} | missing now: "
                  f"{sum(result[k] for k in ('orders', 'instances', 'mpps', 'signed'))} | integrity {result['integrity']}"
                  f" | SRs without exam {result['sr_without_exam']}")
        # let the last restart deliver everything
        t0 = time.monotonic()
        gateway = start_gateway(work / "gateway.yaml", ports, work / "gateway.log")
        restart_s.append(time.monotonic() - t0)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and pending_rows(db_path):
            time.sleep(1)
        drained = time.monotonic() - t0
        left = pending_rows(db_path)
        db = sqlite3.connect(db_path)
        dead = db.execute("SELECT destination, COUNT(*) FROM outbox WHERE state = 'dead' GROUP BY destination").fetchall()
        routed = db.execute("SELECT COUNT(*) FROM outbox WHERE destination = 'pacs'").fetchone()[0]
        signed_accessions = {r[0]: r[1] for r in db.execute("SELECT id, accession FROM exams WHERE report_status IN ('F', 'C')")}
        db.close()
        in_pacs = orthanc_sop_uids(orthanc_http)
        with acked.lock:
            acked_uids = set(acked.instances)
            signed = dict(acked.signed)
        pacs_missing = len(acked_uids - in_pacs)
        pacs_duplicates = orthanc_log.read_text(errors="replace").count("Already stored")
        with emr.lock:
            texts = list(emr.texts)
            emr_dupes = sum(n - 1 for n in emr.control_ids.values() if n > 1)
            emr_messages = sum(emr.control_ids.values())
        emr_missing = sum(1 for exam_id in signed if not any(signed_accessions.get(exam_id, "\0") in t for t in texts))
        final = check_store(db_path, acked)
        print()
        print(f"cycles {args.cycles}, kill after p50 {percentile(kill_at, 50):.2f} s (uniform {args.min_run}-{args.max_run} s), "
              f"restart to ready p50 {percentile(restart_s, 50):.2f} s, max {max(restart_s):.2f} s")
        print(f"acknowledged: {len(acked.orders)} orders (AA), {len(acked_uids)} instances (C-STORE success), "
              f"{len(acked.mpps)} MPPS (N-CREATE success), {len(signed)} signatures (201)")
        print(f"acknowledged but missing after a crash (worst cycle): orders {totals['missing_orders']}, instances {totals['missing_instances']}, "
              f"MPPS {totals['missing_mpps']}, signatures {totals['missing_signed']}; at the end: "
              f"{sum(final[k] for k in ('orders', 'instances', 'mpps', 'signed'))}")
        print(f"PRAGMA integrity_check failures: {integrity_failures} of {args.cycles}")
        print(f"acknowledged BMD SRs that never became an exam: {final['sr_without_exam']} of {sum(1 for k in acked.instances.values() if k == 'sr')}")
        print(f"cycles where the SR worker outlived the killed daemon: {orphans} of {args.cycles}")
        print(f"outbox drained in {drained:.1f} s after the last restart, {left} rows still pending; dead letters {dict(dead) or 0}")
        print(f"PACS (Orthanc): {len(acked_uids) - pacs_missing} of {len(acked_uids)} acknowledged instances present, "
              f"{pacs_missing} missing; {routed} outbox rows; duplicates received (Orthanc 'Already stored') {pacs_duplicates}")
        print(f"EMR: {emr_messages} ORU^R01 received for {len(signed)} signed reports, {emr_missing} signed reports never arrived, "
              f"{emr_dupes} duplicates (same MSH-10)")
    finally:
        if gateway is not None:
            stop(gateway)
        stop(orthanc)


if __name__ == "__main__":
    main()
