"""Soak: many short associations and bare TCP probes, RSS sampled.

pynetdicom SCPs have leaked memory in long runs (pynetdicom #669, #328,
#912), TCP health checks from load balancers included.  This runs rounds of
(a bare TCP connect/close, a C-ECHO, an MWL C-FIND, a C-STORE of a small
image, an HL7 order) against the gateway and prints its RSS after each
block, so growth shows; then its open descriptors, and its CPU while eight
associations are held open idle.  It prints figures; it asserts nothing.

    python bench/soak.py [--rounds 2000] [--block 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

from _common import REPO, free_port, start_gateway, stop, write_gateway_config  # noqa: F401
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, SecondaryCaptureImageStorage, Verification

from tests.dicom_data import secondary_capture
from tests.hl7_messages import orm
from tests.support import MllpClient


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, port: int, ae: AE, seconds: float = 3.0) -> None:
    """The gateway's CPU while scanners hold associations open and send nothing."""
    for n in (0, 8):
        held = [ae.associate("127.0.0.1", port, ae_title="DXAGW") for _ in range(n)]
        time.sleep(0.5)
        before = cpu_seconds(pid)
        time.sleep(seconds)
        used = (cpu_seconds(pid) - before) / seconds
        print(f"{n} idle associations held open: gateway CPU {used:.1%} of a core")
        for assoc in held:
            assoc.release()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2000)
    p.add_argument("--block", type=int, default=200)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dxa-soak-"))
    ports = write_gateway_config(work / "gateway.yaml", work / "data")
    text = (work / "gateway.yaml").read_text().replace("storage: {path:", "storage: {min_free_bytes: 0, path:")
    (work / "gateway.yaml").write_text(text)
    proc = start_gateway(work / "gateway.yaml", ports, work / "gateway.log")
    image = work / "img.dcm"
    secondary_capture(image, pixels=128 * 128)
    ae = AE(ae_title="DXA1")
    for cx in (Verification, ModalityWorklistInformationFind):
        ae.add_requested_context(cx)
    ae.add_requested_context(SecondaryCaptureImageStorage, "1.2.840.10008.1.2.1")
    mllp = MllpClient(ports["hl7"])
    query = Dataset()
    query.PatientName = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = "SOAK"  # the orders below are for DXA1: matches stay constant
    query.ScheduledProcedureStepSequence = [sps]
    print(f"# soak: {args.rounds} rounds of probe + echo + find + store + HL7; RSS of the gateway (pid {proc.pid})")
    base = rss_mb(proc.pid)
    print(f"rounds {0:6d}  rss {base:7.1f} MB")
    started = time.monotonic()
    try:
        for n in range(1, args.rounds + 1):
            with socket.create_connection(("127.0.0.1", ports["dicom"]), timeout=5):
                pass  # a load balancer's TCP health check
            assoc = ae.associate("127.0.0.1", ports["dicom"], ae_title="DXAGW")
            if not assoc.is_established:
                state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
                print(f"round {n}: association {state}; see {work / 'gateway.log'}")
                break
            assoc.send_c_echo()
            list(assoc.send_c_find(query, ModalityWorklistInformationFind))
            ds = secondary_capture(image, pixels=128 * 128, seed=n)
            assoc.send_c_store(ds)
            assoc.release()
            mllp.send(orm(f"SOAK{n}", placer=f"S{n}", filler=f"S{n}", accession=f"S{n}"))
            if n % args.block == 0:
                print(f"rounds {n:6d}  rss {rss_mb(proc.pid):7.1f} MB  ({n / (time.monotonic() - started):.1f} rounds/s)")
        time.sleep(2)
        end = rss_mb(proc.pid)
        print(f"\nbaseline {base:.1f} MB, after {args.rounds} rounds {end:.1f} MB, growth {end - base:+.1f} MB")
        print(f"open file descriptors at the end: {len(list(Path(f'/proc/{proc.pid}/fd').iterdir()))}")
        idle_cpu(proc.pid, ports["dicom"], ae)
    finally:
        mllp.close()
        stop(proc)


if __name__ == "__main__":
    main()
