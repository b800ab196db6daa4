"""C-STORE ingest: the gateway beside dcmtk storescp and Orthanc.

The same DXA objects (2 MB secondary captures, BMD SRs, 30 MB multi-frame
images) are sent by dcmtk storescu processes (1, 4 and 8 at once) to each
receiver in turn; every measurement starts a fresh receiver with an empty
store, so no receiver sees a duplicate.  Then the gateway's peak RSS while
it receives one 500 MB object.  Prints figures; asserts nothing.

    python bench/ingest.py [--repeat 3] [--quick] [--only gateway|storescp|orthanc]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, free_port, machine, start, start_gateway, stop, wait_port, write_gateway_config  # noqa: F401
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mappings.bmd.samples import build_bmd_sr

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ORTHANC = "/usr/sbin/Orthanc"
DCMTK_ENV = {"TCP_NODELAY": "1"}  # Debian's dcmtk leaves Nagle on otherwise


def image(path: Path, *, rows: int, cols: int, frames: int, rgb: bool, seed: int, study: str) -> None:
    rng = np.random.default_rng(seed)
    ds = Dataset()
    sop_class = "1.2.840.10008.5.1.4.1.1.7" if frames == 1 else "1.2.840.10008.5.1.4.1.1.7.2"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.Manufacturer = "BENCH1", "Bench^Patient", "OT", "HOLOGIC"
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    size = rows * cols * ds.SamplesPerPixel * frames
    # smooth-ish content (not incompressible noise), as a report image is
    base = rng.integers(0, 255, size=rows * cols * ds.SamplesPerPixel, dtype=np.uint8)
    ds.PixelData = np.tile(base, frames)[:size].tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_objects(folder: Path, n_sc: int, n_sr: int, n_mf: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    rng = random.Random(7)
    for i in range(n_sc):
        study = generate_uid()
        f = folder / f"sc{i}.dcm"
        image(f, rows=816, cols=816, frames=1, rgb=True, seed=i, study=study)  # ~2 MB
        files.append(f)
        if i < n_sr:
            header = Dataset()
            header.PatientID, header.PatientName, header.PatientBirthDate, header.PatientSex = "BENCH1", "Bench^Patient", "19550101", "F"
            header.StudyInstanceUID, header.AccessionNumber, header.StudyDate, header.StudyTime = study, f"B{i}", "20261124", "100000"
            sr = build_bmd_sr("hologic" if i % 2 else "ge", header, rng)
            f = folder / f"sr{i}.dcm"
            sr.save_as(f, enforce_file_format=True)
            files.append(f)
    for i in range(n_mf):
        f = folder / f"mf{i}.dcm"
        image(f, rows=1024, cols=1024, frames=30, rgb=False, seed=100 + i, study=generate_uid())  # ~30 MB
        files.append(f)
    return files


# -- receivers ---------------------------------------------------------------------


class Receiver:
    name = ""
    guarantee = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.proc = None
        self.port = 0
        self.aet = "RECEIVER"
        self.pid = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class Gateway(Receiver):
    name = "gateway"
    guarantee = "fsync file + folder, SQLite commit (synchronous=FULL) before success"

    def start(self) -> None:
        run = self.work / f"gw-{time.monotonic_ns()}"
        run.mkdir(parents=True)
        ports = write_gateway_config(run / "gateway.yaml", run / "data", log_level="WARNING")
        text = (run / "gateway.yaml").read_text().replace("storage: {path:", "storage: {min_free_bytes: 0, path:")
        (run / "gateway.yaml").write_text(text)
        self.proc = start_gateway(run / "gateway.yaml", ports, run / "gateway.log")
        self.port, self.aet, self.pid = ports["dicom"], "DXAGW", self.proc.pid


class Storescp(Receiver):
    name = "storescp"
    guarantee = "writes files, no fsync (dcmtk has no option for it)"

    def start(self) -> None:
        run = self.work / f"scp-{time.monotonic_ns()}"
        run.mkdir(parents=True)
        self.port = free_port()
        self.proc = start([STORESCP, "--fork", "-od", str(run), "-aet", "STORESCP", str(self.port)], env=DCMTK_ENV, log=run / "storescp.log")
        wait_port(self.port, self.proc)
        self.aet = "STORESCP"


class Orthanc(Receiver):
    name = "orthanc"
    guarantee = "SyncStorageArea (fsync of each file) and its SQLite index"

    def start(self) -> None:
        run = self.work / f"orthanc-{time.monotonic_ns()}"
        run.mkdir(parents=True)
        self.port, http = free_port(), free_port()
        config = {
            "Name": "bench", "StorageDirectory": str(run / "storage"), "IndexDirectory": str(run / "index"),
            "DicomAet": "ORTHANC", "DicomPort": self.port, "HttpPort": http, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "SyncStorageArea": True,
            "StorageCompression": False, "ConcurrentJobs": 2,
        }
        (run / "orthanc.json").write_text(json.dumps(config))
        self.proc = start([ORTHANC, str(run / "orthanc.json")], env=DCMTK_ENV, log=run / "orthanc.log")
        wait_port(self.port, self.proc)
        wait_port(http, self.proc)
        self.aet = "ORTHANC"


# -- measurement -------------------------------------------------------------------


def send(receiver: Receiver, files: list[Path], concurrency: int) -> tuple[float, int]:
    """Wall seconds for ``concurrency`` storescu processes to send ``files``; failures."""
    shares = [files[i::concurrency] for i in range(concurrency)]
    env = {**os.environ, **DCMTK_ENV}
    started = time.perf_counter()
    procs = [
        subprocess.Popen([STORESCU, "-aet", "BENCH", "-aec", receiver.aet, "127.0.0.1", str(receiver.port), *map(str, share)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for share in shares if share
    ]
    failures = 0
    for p in procs:
        _, err = p.communicate()
        failures += p.returncode != 0
    return time.perf_counter() - started, failures


def rss_during_big_object(work: Path, size_mb: int) -> None:
    big = work / "big.dcm"
    frames = size_mb
    image(big, rows=1024, cols=1024, frames=frames, rgb=False, seed=1, study=generate_uid())
    gw = Gateway(work)
    gw.start()
    status = Path(f"/proc/{gw.pid}/status")

    def rss() -> float:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    time.sleep(1.0)
    base = rss()
    peak = base
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, rss())
            except OSError:
                return
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    seconds, failures = send(gw, [big], 1)
    done.set()
    t.join()
    print(f"\n## peak RSS while the gateway receives one {big.stat().st_size / 1e6:.0f} MB object")
    print(f"  baseline {base:.1f} MB, peak {peak:.1f} MB, growth {peak - base:+.1f} MB; transfer {seconds:.1f} s, {'ok' if not failures else 'FAILED'}")
    gw.stop()
    big.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="few small objects, one repetition, a 100 MB big object")
    p.add_argument("--only", action="append", choices=["gateway", "storescp", "orthanc"])
    p.add_argument("--big-mb", type=int, default=500)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dxa-bench-ingest-"))
    try:
        counts = (4, 4, 1) if args.quick else (24, 24, 4)
        repeat = 1 if args.quick else args.repeat
        files = make_objects(work / "objects", *counts)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"# C-STORE ingest benchmark | {machine()}")
        print(f"objects: {counts[0]} x 2 MB secondary capture, {counts[1]} BMD SRs, {counts[2]} x 30 MB multi-frame = {len(files)} objects, {total_mb:.0f} MB")
        print(f"client: dcmtk storescu processes (TCP_NODELAY=1), the objects split between them; each figure the median of {repeat}, a fresh receiver each time\n")
        receivers = [cls(work) for cls in (Gateway, Storescp, Orthanc) if not args.only or cls.name in args.only]
        results: dict[tuple[str, int], float] = {}
        for conc in (1, 4, 8):
            for r in receivers:
                times = []
                for _ in range(repeat):
                    r.start()
                    seconds, failures = send(r, files, conc)
                    r.stop()
                    if failures:
                        print(f"  {r.name}: {failures} storescu process(es) failed at concurrency {conc}")
                    times.append(seconds)
                med = statistics.median(times)
                results[(r.name, conc)] = med
                print(f"  {r.name:9s} x{conc}: {len(files) / med:7.1f} objects/s  {total_mb / med:7.1f} MB/s  (median {med:.2f} s)")
            print()
        print("## ratios (objects/s, gateway / peer)")
        for conc in (1, 4, 8):
            g = results.get(("gateway", conc))
            parts = [f"x{conc}:"]
            for peer in ("storescp", "orthanc"):
                if g and (peer, conc) in results:
                    parts.append(f"vs {peer} {results[(peer, conc)] / g:.2f}")
            print("  " + "  ".join(parts))
        print("\nwhat each guarantees on success:")
        for r in receivers:
            print(f"  {r.name}: {r.guarantee}")
        if not args.only or "gateway" in args.only:
            rss_during_big_object(work, 100 if args.quick else args.big_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
