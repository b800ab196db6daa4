"""Modality Worklist C-FIND: the gateway beside dcmtk wlmscpfs and Orthanc.

One run builds N deterministic scheduled steps (default 100,000: a year of
DXA1..DXA10, ~27 steps per station and day), loads them into each server,
and asks all three the same queries from the same pynetdicom SCU, one
association per query (as a scanner does), timing associate -> release.

    python bench/worklist.py                  # 100,000 items, all three servers
    python bench/worklist.py --quick          # 2,000 items, a smoke run
    python bench/worklist.py --only gateway --repeat 200

It prints figures; it asserts nothing about time.  The result counts must be
equal on every server (they are also compared with the count the generator
expects) -- a mismatch is printed as MISMATCH.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (puts the repo root on sys.path)
from _common import free_port, machine, percentile, start, start_gateway, stop, wait_port, write_gateway_config  # noqa: E402

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification  # noqa: E402

from mappings.worklist import Code, WorklistItem, item_to_dataset  # noqa: E402

WLMSCPFS = "/usr/bin/wlmscpfs"  # absolute: pynetdicom installs Python scripts of the same names
ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_WORKLIST_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"

CLIENT_AE = "DXA3"  # the scanner asking
STATIONS = [f"DXA{n}" for n in range(1, 11)]
FIRST_DAY = date(2026, 1, 5)
DAYS = 365
SEED = 20261124

# Family names with shared prefixes (SMITH/SMITHERS/SMILEY/SMIRNOVA, ...),
# weighted roughly like a Western European/US hospital's list.
FAMILY = [
    ("SMITH", 30), ("SMITHERS", 3), ("SMILEY", 2), ("SMIRNOVA", 2), ("SMALL", 3),
    ("JOHNSON", 22), ("JOHNS", 5), ("JOHNSTON", 6), ("JONES", 20), ("JORDAN", 5),
    ("WILLIAMS", 18), ("WILSON", 14), ("WILKINSON", 5), ("WILLIS", 4),
    ("BROWN", 16), ("BROWNE", 3), ("BROOKS", 6), ("MARTIN", 14), ("MARTINEZ", 10),
    ("MARSHALL", 6), ("MARKS", 3), ("MILLER", 14), ("MILLS", 5), ("MITCHELL", 8),
    ("MOORE", 10), ("MORGAN", 8), ("MORRIS", 7), ("MORRISON", 4), ("TAYLOR", 14),
    ("THOMAS", 12), ("THOMPSON", 11), ("THOMSON", 4), ("ANDERSON", 10), ("ANDREWS", 5),
    ("CLARK", 9), ("CLARKE", 6), ("CLARKSON", 2), ("DAVIS", 12), ("DAVIES", 8),
    ("DAVIDSON", 4), ("EVANS", 8), ("EDWARDS", 7), ("GARCIA", 10), ("GARDNER", 4),
    ("HALL", 8), ("HALLORAN", 2), ("HARRIS", 9), ("HARRISON", 6), ("HUGHES", 7),
    ("JACKSON", 9), ("JACOBS", 4), ("KING", 7), ("KINGSLEY", 2), ("LEE", 9), ("LEWIS", 8),
    ("MULLER", 8), ("MULLER-LANG", 2), ("SCHMIDT", 8), ("SCHMITT", 4), ("SCHNEIDER", 6),
    ("FISCHER", 5), ("WEBER", 5), ("MEYER", 5), ("MEIER", 4), ("WAGNER", 4),
    ("DUBOIS", 5), ("DUPONT", 4), ("DURAND", 4), ("LEROY", 3), ("MOREAU", 3),
    ("ROSSI", 5), ("RUSSO", 4), ("ROBERTS", 7), ("ROBERTSON", 5), ("ROBINSON", 7),
    ("WALKER", 8), ("WALSH", 5), ("WHITE", 8), ("WHITEHEAD", 2), ("YOUNG", 6),
    ("O'BRIEN", 4), ("O'CONNOR", 3), ("VAN DER BERG", 3), ("NGUYEN", 6), ("PATEL", 8),
]
GIVEN_F = ["MARY", "PATRICIA", "LINDA", "BARBARA", "ELIZABETH", "MARGARET", "SUSAN", "DOROTHY", "HELEN",
           "ANNE", "JANE", "JOAN", "CAROL", "RUTH", "SANDRA", "MONIKA", "URSULA", "MARIE", "CHANTAL", "GIULIA"]
GIVEN_M = ["JOHN", "ROBERT", "WILLIAM", "JAMES", "CHARLES", "GEORGE", "THOMAS", "PETER", "HANS", "JEAN", "MARCO"]
PROCEDURES = [
    Code("DXAHS", "99DXAGW", "DXA hip and spine"),
    Code("DXAWB", "99DXAGW", "DXA whole body"),
    Code("DXAFA", "99DXAGW", "DXA forearm"),
    Code("DXAVFA", "99DXAGW", "DXA vertebral fracture assessment"),
]
UID_ROOT = "1.2.826.0.1.3680043.8.498.20261124"


def make_items(n: int, seed: int = SEED) -> list[WorklistItem]:
    """``n`` scheduled steps spread over DAYS days and the 10 stations."""
    rng = random.Random(seed)
    families = [f for f, _ in FAMILY]
    weights = [w for _, w in FAMILY]
    n_patients = max(1, int(n * 0.7))  # some patients come back (follow-up scans)
    patients = []
    for p in range(n_patients):
        female = rng.random() < 0.8
        given = rng.choice(GIVEN_F if female else GIVEN_M)
        dob = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 45))
        patients.append((f"P{p + 1:07d}", f"{rng.choices(families, weights)[0]}^{given}", dob.strftime("%Y%m%d"), "F" if female else "M"))
    items = []
    for i in range(n):
        pid, name, dob, sex = patients[rng.randrange(n_patients)]
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        minutes = 7 * 60 + 30 + 15 * rng.randrange(40)  # 07:30 .. 17:15, every 15 min
        code = PROCEDURES[0] if rng.random() < 0.7 else rng.choice(PROCEDURES[1:])
        items.append(
            WorklistItem(
                patient_id=pid,
                patient_name=name,
                birth_date=dob,
                sex=sex,
                accession_number=f"A{i + 1:09d}",
                requested_procedure_id=f"RP{i + 1:08d}",
                requested_procedure_description=code.meaning,
                requested_procedure_code=code,
                study_instance_uid=f"{UID_ROOT}.{i + 1}",
                referring_physician="REFERRER^RITA",
                placer_order_number=f"PO{i + 1:08d}",
                filler_order_number=f"FO{i + 1:08d}",
                sps_id=f"SPS{i + 1:08d}",
                station_ae=rng.choice(STATIONS),
                station_name="DXA ROOM",
                modality="BMD",
                start_date=day.strftime("%Y%m%d"),
                start_time=f"{minutes // 60:02d}{minutes % 60:02d}00",
                sps_description=code.meaning,
                source="bench",
            )
        )
    return items


# -- the queries ---------------------------------------------------------------


@dataclass
class Query:
    name: str
    description: str
    identifier: Dataset
    expected: int


def _return_keys(patient_name: str = "", station: str = "", date_value: str = "") -> Dataset:
    ds = Dataset()
    ds.PatientName = patient_name
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyInstanceUID = ""
    ds.RequestedProcedureID = ""
    ds.RequestedProcedureDescription = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date_value
    sps.ScheduledProcedureStepStartTime = ""
    sps.Modality = "BMD"
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = ""
    sps.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def make_queries(items: list[WorklistItem]) -> list[Query]:
    # (a) the scanner's own day: a day in the middle of the year that has steps for DXA3
    days = sorted({it.start_date for it in items if it.station_ae == "DXA3"})
    day = days[len(days) // 2]
    station = [it for it in items if it.station_ae == "DXA3" and it.start_date == day]
    # (b) a name prefix over one week (Monday..Sunday around that day)
    d = date(int(day[:4]), int(day[4:6]), int(day[6:]))
    lo, hi = d - timedelta(days=d.weekday()), d - timedelta(days=d.weekday()) + timedelta(days=6)
    lo_s, hi_s = lo.strftime("%Y%m%d"), hi.strftime("%Y%m%d")
    named = [it for it in items if it.patient_name.startswith("SMI") and lo_s <= it.start_date <= hi_s]
    return [
        Query("station-day", f"ScheduledStationAETitle=DXA3, StartDate={day}, Modality=BMD", _return_keys(station="DXA3", date_value=day), len(station)),
        Query("name-week", f'PatientName="SMI*", StartDate={lo_s}-{hi_s}, Modality=BMD, any station', _return_keys(patient_name="SMI*", date_value=f"{lo_s}-{hi_s}"), len(named)),
    ]


# -- the client ----------------------------------------------------------------


def _nodelay(event: evt.Event) -> None:
    # pynetdicom leaves Nagle on; the C-FIND command and identifier go as
    # two small PDUs, the second of which would wait for a delayed ACK.
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        import socket

        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client() -> AE:
    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(Verification)
    ae.acse_timeout = 120
    ae.dimse_timeout = 600
    ae.network_timeout = 600
    return ae


def find_once(ae: AE, port: int, called: str, identifier: Dataset) -> tuple[float, int, str]:
    """One association, one C-FIND, release: (seconds, matches, final status)."""
    t0 = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise RuntimeError(f"association to {called}@{port} not established")
    count, final = 0, "none"
    for status, _ident in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
        if status is None:
            final = "timeout"
            break
        code = status.Status
        if code in (0xFF00, 0xFF01):
            count += 1
        else:
            final = f"0x{code:04X}"
    assoc.release()
    return time.perf_counter() - t0, count, final


def echo_once(ae: AE, port: int, called: str) -> tuple[float, int, str]:
    """One association, one C-ECHO, release: the cost of the association alone."""
    t0 = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise RuntimeError(f"association to {called}@{port} not established")
    status = assoc.send_c_echo()
    assoc.release()
    return time.perf_counter() - t0, 0, f"0x{status.Status:04X}" if status else "timeout"


def echo_ready(ae: AE, port: int, called: str, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            assoc = ae.associate("127.0.0.1", port, ae_title=called)
            if assoc.is_established:
                status = assoc.send_c_echo()
                assoc.release()
                if status and status.Status == 0:
                    return time.perf_counter() - t0
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no C-ECHO answer from {called}@{port}")


# -- the servers -----------------------------------------------------------------


def _write_chunk(args: tuple[str, int, list[WorklistItem]]) -> int:
    folder, first, items = args
    for n, item in enumerate(items, start=first):
        ds = item_to_dataset(item)
        # wlmscpfs (-efr, its default) ignores a file without these two type 2
        # sequences, or with an empty protocol code sequence (dcmwlm wlfsim.cc
        # DatasetIsComplete): add them as a RIS would.
        ds.ReferencedStudySequence = Sequence([])
        ds.ReferencedPatientSequence = Sequence([])
        code = item.requested_procedure_code
        protocol = Dataset()
        protocol.CodeValue, protocol.CodingSchemeDesignator, protocol.CodeMeaning = code.value, code.scheme, code.meaning
        ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = Sequence([protocol])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
        meta.MediaStorageSOPInstanceUID = item.study_instance_uid + ".1"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        with open(os.path.join(folder, f"item{n:07d}.wl"), "wb") as fh:
            fh.write(buf.getvalue())
    return len(items)


def write_worklist_files(folder: Path, items: list[WorklistItem]) -> None:
    """One .wl (DICOM Part 10, written by pydicom) per item, plus wlmscpfs' lockfile."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()  # wlmscpfs locks DIR/<called AE>/lockfile while it reads
    step = 2000
    chunks = [(str(folder), i, items[i : i + step]) for i in range(0, len(items), step)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sum(pool.map(_write_chunk, chunks))


class Server:
    name = ""
    called = ""
    port = 0
    guarantees = ""
    setup: dict[str, float]

    def __init__(self) -> None:
        self.setup = {}
        self.proc = None
        self.version = ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class GatewayServer(Server):
    name = "gateway"
    called = "DXAGW"
    guarantees = "SQLite WAL, synchronous=FULL (items committed before serving)"

    def __init__(self, work: Path, items: list[WorklistItem], log_level: str) -> None:
        super().__init__()
        from gateway.store import open_store

        data = work / "gateway-data"
        t0 = time.perf_counter()
        store = open_store(str(data))
        store.add_worklist_items(items, sender="bench", actor="bench")
        store.close()
        self.setup["store.add_worklist_items (one transaction)"] = time.perf_counter() - t0
        self.setup["database size MB"] = sum(f.stat().st_size for f in data.iterdir()) / 1e6
        config = work / "gateway.yaml"
        ports = write_gateway_config(config, data, ae_title=self.called, log_level=log_level)
        self.port = ports["dicom"]
        t0 = time.perf_counter()
        self.proc = start_gateway(config, ports, work / "gateway.log")
        self.setup["process start to /readyz"] = time.perf_counter() - t0
        try:
            from importlib.metadata import version

            self.version = "dxa-gateway " + version("dxa-gateway")
        except Exception:
            self.version = "dxa-gateway (source)"


class WlmscpfsServer(Server):
    name = "wlmscpfs"
    called = "WLMSCPFS"
    guarantees = "reads every .wl file per query; no store of its own (files written by us)"

    def __init__(self, work: Path, wl_root: Path, files_seconds: float) -> None:
        super().__init__()
        import subprocess

        self.version = subprocess.run([WLMSCPFS, "--version"], capture_output=True, text=True).stdout.splitlines()[0].strip("$ ")
        self.setup["write .wl files (pydicom, shared with Orthanc)"] = files_seconds
        self.port = free_port()
        t0 = time.perf_counter()
        # TCP_NODELAY=1: the Debian build leaves Nagle on otherwise (docs/architecture.md, Pitfalls).
        self.proc = start([WLMSCPFS, "-dfp", str(wl_root), str(self.port)], env={"TCP_NODELAY": "1"}, log=work / "wlmscpfs.log")
        wait_port(self.port, self.proc)
        self.setup["process start to listening"] = time.perf_counter() - t0


class OrthancServer(Server):
    name = "orthanc"
    called = "ORTHANC"
    guarantees = "sample ModalityWorklists plugin: reads every .wl file per query"

    def __init__(self, work: Path, wl_folder: Path, files_seconds: float) -> None:
        super().__init__()
        import subprocess

        self.version = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True).stdout.splitlines()[0].replace(ORTHANC, "Orthanc").strip()
        self.setup["write .wl files (pydicom, shared with wlmscpfs)"] = files_seconds
        self.port = free_port()
        http_port = free_port()
        root = work / "orthanc"
        root.mkdir()
        config = {
            "Name": "bench",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "Plugins": [ORTHANC_WORKLIST_PLUGIN],
            "Worklists": {"Enable": True, "Database": str(wl_folder), "FilterIssuerAet": False, "LimitAnswers": 0},
            "DicomAet": self.called,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowFindWorklist": True,
            "DicomModalities": {"scanner": {"AET": CLIENT_AE, "Host": "127.0.0.1", "Port": 104, "AllowFindWorklist": True}},
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SyncStorageArea": True,
        }
        (root / "orthanc.json").write_text(json.dumps(config, indent=2))
        t0 = time.perf_counter()
        # Debian links Orthanc to the same dcmtk: without TCP_NODELAY=1 each association pays ~40 ms of delayed ACK.
        self.proc = start([ORTHANC, str(root / "orthanc.json")], env={"TCP_NODELAY": "1"}, log=work / "orthanc.log")
        wait_port(self.port, self.proc)
        self.setup["process start to listening"] = time.perf_counter() - t0


# -- the run ---------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000, help="scheduled steps (default 100000)")
    p.add_argument("--repeat", type=int, default=50, help="timed queries per server and query (default 50)")
    p.add_argument("--slow-repeat", type=int, default=10, help="timed queries for a server whose warm-up query took over --slow-threshold (default 10)")
    p.add_argument("--slow-threshold", type=float, default=0.5, help="seconds (default 0.5)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2000 items, 10 repeats: a smoke run")
    p.add_argument("--only", choices=["gateway", "wlmscpfs", "orthanc"], action="append", help="run only this server (repeatable)")
    p.add_argument("--gateway-log-level", default="INFO", help="the gateway's logging.level (default INFO, as shipped)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = p.parse_args()
    if args.quick:
        args.items, args.repeat, args.slow_repeat = min(args.items, 2000), 10, 3
    which = args.only or ["gateway", "wlmscpfs", "orthanc"]

    work = Path(tempfile.mkdtemp(prefix="dxa-bench-wl-"))
    print(f"# worklist C-FIND benchmark | {machine()}")
    print(f"# work dir {work}")
    servers: list[Server] = []
    try:
        t0 = time.perf_counter()
        items = make_items(args.items)
        print(f"items: {len(items)} scheduled steps, {DAYS} days x {len(STATIONS)} stations (seed {SEED}), generated in {time.perf_counter() - t0:.1f} s")
        queries = make_queries(items)

        files_seconds = 0.0
        wl_root = work / "worklists"
        wl_folder = wl_root / WlmscpfsServer.called  # wlmscpfs serves DIR/<called AE title>/
        if "wlmscpfs" in which or "orthanc" in which:
            t0 = time.perf_counter()
            write_worklist_files(wl_folder, items)
            files_seconds = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in wl_folder.iterdir())
            print(f".wl files: {len(items)} files, {size / 1e6:.1f} MB, written in {files_seconds:.1f} s ({os.cpu_count()} processes)")

        if "gateway" in which:
            servers.append(GatewayServer(work, items, args.gateway_log_level))
        if "wlmscpfs" in which:
            servers.append(WlmscpfsServer(work, wl_root, files_seconds))
        if "orthanc" in which:
            servers.append(OrthancServer(work, wl_folder, files_seconds))

        ae = make_client()
        print()
        print("## servers and setup")
        for s in servers:
            s.setup["first C-ECHO answered after"] = echo_ready(ae, s.port, s.called)
            print(f"- {s.name}: {s.version}; {s.guarantees}")
            for k, v in s.setup.items():
                print(f"    {k}: {v:.2f}" + ("" if "MB" in k else " s"))

        results: dict[tuple[str, str], dict] = {}
        print()
        print("## baseline: associate -> C-ECHO -> release (the association alone)")
        for s in servers:
            for _ in range(max(1, args.warmup)):
                echo_once(ae, s.port, s.called)
            times = [echo_once(ae, s.port, s.called)[0] for _ in range(args.repeat)]
            print(f"  {s.name:9s} n={len(times):3d}  p50 {percentile(times, 50) * 1e3:9.1f} ms  p99 {percentile(times, 99) * 1e3:9.1f} ms")
        for q in queries:
            print()
            print(f"## query {q.name}: {q.description}  (generator expects {q.expected} matches)")
            for s in servers:
                warm = []
                for _ in range(max(1, args.warmup)):
                    seconds, count, final = find_once(ae, s.port, s.called, q.identifier)
                    warm.append(seconds)
                n = args.repeat if warm[-1] < args.slow_threshold else min(args.repeat, args.slow_repeat)
                times, counts, finals = [], set(), set()
                for _ in range(n):
                    seconds, count, final = find_once(ae, s.port, s.called, q.identifier)
                    times.append(seconds)
                    counts.add(count)
                    finals.add(final)
                r = {
                    "n": n,
                    "p50": percentile(times, 50) * 1e3,
                    "p99": percentile(times, 99) * 1e3,
                    "mean": statistics.fmean(times) * 1e3,
                    "first": warm[0] * 1e3,
                    "counts": sorted(counts),
                    "status": sorted(finals),
                }
                results[(q.name, s.name)] = r
                ok = "ok" if r["counts"] == [q.expected] and r["status"] == ["0x0000"] else "MISMATCH"
                print(
                    f"  {s.name:9s} n={n:3d}  p50 {r['p50']:9.1f} ms  p99 {r['p99']:9.1f} ms  mean {r['mean']:9.1f} ms"
                    f"  first {r['first']:9.1f} ms  matches {','.join(map(str, r['counts']))} status {','.join(r['status'])}  {ok}"
                )

        names = [s.name for s in servers]
        if "gateway" in names and len(names) > 1:
            print()
            print("## ratios (peer p50 / gateway p50: how many times faster the gateway answers)")
            for q in queries:
                g = results[(q.name, "gateway")]
                parts = []
                for peer in names:
                    if peer == "gateway":
                        continue
                    r = results[(q.name, peer)]
                    parts.append(f"vs {peer}: p50 x{r['p50'] / g['p50']:.1f}, p99 x{r['p99'] / g['p99']:.1f}")
                print(f"  {q.name:12s} " + "; ".join(parts))
        print()
        print("notes: one association per query (associate -> C-FIND -> release), client pynetdicom with TCP_NODELAY;")
        print("       wlmscpfs and Orthanc (Debian dcmtk) run with TCP_NODELAY=1; servers run side by side, queried one at a time.")
    except Exception:
        if not _common.interrupted:
            raise
        print("\ninterrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for s in servers:
            s.stop()
        _common.stop_all()
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
