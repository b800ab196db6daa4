"""HL7 ORM^O01 intake over MLLP: orders acknowledged per second, ACK latency.

Starts the gateway on an empty store (pinned to one core with ``taskset``),
then sends M new orders (ORC-1 NW) over one connection, each waiting for its
ACK before the next, and again M other orders over K concurrent connections.
The gateway acknowledges (AA) only after the SQLite commit with
synchronous=FULL, so every ACK counted here is an fsynced order.

    python bench/hl7_ingest.py                       # 3000 orders, 1 and 4 connections
    python bench/hl7_ingest.py --orders 500 --connections 8
    python bench/hl7_ingest.py --quick

It prints figures; it asserts nothing about time.  The goal it is read
against: at least 300 orders/s acknowledged on one core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (puts the repo root on sys.path)
from _common import BENCH_HEADERS, machine, percentile, start_gateway, write_gateway_config  # noqa: E402

from hl7v2.ack import read_msa  # noqa: E402
from hl7v2.er7 import msh_field  # noqa: E402
from hl7v2.mllp import MllpClient  # noqa: E402
from tests.hl7_messages import msh, pid, segment  # noqa: E402

STATIONS = [f"DXA{n}" for n in range(1, 11)]
FAMILY = ["SMITH", "JOHNSON", "MULLER", "DUBOIS", "ROSSI", "NGUYEN", "PATEL", "O'BRIEN", "GARCIA", "JONES"]
GIVEN = ["MARY", "ANNE", "JANE", "MONIKA", "CHANTAL", "GIULIA", "JOHN", "PETER"]


def orm(run: str, n: int) -> bytes:
    """ORM^O01 NW number ``n``: unique MSH-10, placer, filler, accession, RP and SPS ids."""
    key = f"{run}{n:07d}"
    day = 1 + n % 28
    start = f"202612{day:02d}{8 + n % 9:02d}{(n % 4) * 15:02d}00"
    segs = [
        msh(f"MSG{key}", "ORM^O01", "2.3.1"),
        pid(f"P{key}", f"{FAMILY[n % len(FAMILY)]}^{GIVEN[n % len(GIVEN)]}", f"19{40 + n % 40}0{1 + n % 9}1{n % 10}", "F" if n % 5 else "M"),
        segment("PV1", {1: "1", 2: "O", 8: "D123^Referrer^Rita"}),
        segment("ORC", {1: "NW", 2: f"PO{key}", 3: f"FO{key}", 7: f"^^^{start}", 12: "D456^Orderer^Olga"}),
        segment(
            "OBR",
            {
                1: "1", 2: f"PO{key}", 3: f"FO{key}", 4: "DXAHS^DXA hip and spine^L",
                18: f"A{key}", 19: f"RP{key}", 20: f"SPS{key}", 21: STATIONS[n % len(STATIONS)], 24: "BMD", 27: f"^^^{start}",
            },
        ),
    ]
    return ("\r".join(segs) + "\r").encode()


def send_all(port: int, messages: list[bytes], latencies: list[float], codes: dict, errors: list) -> None:
    client = MllpClient("127.0.0.1", port, timeout=60)
    try:
        for message in messages:
            control_id = msh_field(message, 10)
            t0 = time.perf_counter()
            ack = client.request(message)
            latencies.append(time.perf_counter() - t0)
            code, acked_id, _ = read_msa(ack)
            if not code:
                code = "no MSA"
            elif acked_id != control_id:
                code = "MSA-2 mismatch"
            codes[code] = codes.get(code, 0) + 1
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        errors.append(repr(exc))
    finally:
        client.close()


def phase(port: int, messages: list[bytes], connections: int) -> dict:
    shares = [messages[i::connections] for i in range(connections)]
    lat: list[list[float]] = [[] for _ in shares]
    codes: list[dict] = [{} for _ in shares]
    errors: list[str] = []
    threads = [threading.Thread(target=send_all, args=(port, s, l, c, errors)) for s, l, c in zip(shares, lat, codes)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies = [x for part in lat for x in part]
    total: dict[str, int] = {}
    for c in codes:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return {
        "connections": connections,
        "sent": len(messages),
        "acked": total.get("AA", 0),
        "codes": total,
        "errors": errors,
        "wall": wall,
        "rate": total.get("AA", 0) / wall,
        "p50": percentile(latencies, 50) * 1e3 if latencies else float("nan"),
        "p99": percentile(latencies, 99) * 1e3 if latencies else float("nan"),
        "max": max(latencies) * 1e3 if latencies else float("nan"),
    }


def metric(http_port: int, name: str) -> dict[str, float]:
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{http_port}/metrics", headers=BENCH_HEADERS), timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def cpu_seconds(pid_: int) -> float:
    """user+system CPU seconds of a process and its threads (from /proc)."""
    fields = Path(f"/proc/{pid_}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fsync_probe(folder: Path, n: int = 200) -> tuple[float, float]:
    """p50/p99 ms of write(4 KiB)+fsync on the store's file system: the floor under each ACK."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return percentile(times, 50) * 1e3, percentile(times, 99) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=3000, help="orders per phase (default 3000)")
    p.add_argument("--connections", type=int, default=4, help="concurrent connections in the second phase (default 4)")
    p.add_argument("--warmup", type=int, default=50, help="orders sent first, not counted (default 50)")
    p.add_argument("--cpu", default="0", help="taskset -c for the gateway (default 0); 'none' to not pin")
    p.add_argument("--client-cpu", default="auto", help="CPUs for this client (default: the others); 'none' to not pin")
    p.add_argument("--data-dir", default=None, help="parent directory for the gateway's store (default: system temp)")
    p.add_argument("--gateway-log-level", default="INFO", help="the gateway's logging.level (default INFO, as shipped)")
    p.add_argument("--quick", action="store_true", help="300 orders per phase: a smoke run")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = p.parse_args()
    if args.quick:
        args.orders, args.warmup = min(args.orders, 300), 10
    cpu = None if args.cpu == "none" else args.cpu

    if args.client_cpu != "none" and cpu is not None:
        gateway_cpus = {int(c) for c in cpu.split(",") if c.isdigit()}
        others = (set(range(os.cpu_count() or 1)) - gateway_cpus) if args.client_cpu == "auto" else {int(c) for c in args.client_cpu.split(",")}
        if others:
            os.sched_setaffinity(0, others)

    work = Path(tempfile.mkdtemp(prefix="dxa-bench-hl7-", dir=args.data_dir))
    data = work / "data"
    fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout.splitlines()[-1].split()
    print(f"# HL7 ORM^O01 intake benchmark | {machine()}")
    print(f"# store {data} on {fs[0]} ({fs[1]}); SQLite WAL synchronous=FULL: ACK after the fsynced commit")
    f50, f99 = fsync_probe(work)
    print(f"# fsync of 4 KiB on that file system: p50 {f50:.2f} ms, p99 {f99:.2f} ms")
    print(f"# gateway pinned with: taskset -c {cpu}" if cpu is not None else "# gateway not pinned")
    print(f"# client (this process) on CPUs {sorted(os.sched_getaffinity(0))}; gateway logging.level {args.gateway_log_level}")
    proc = None
    try:
        config = work / "gateway.yaml"
        ports = write_gateway_config(config, data, log_level=args.gateway_log_level)
        t0 = time.perf_counter()
        proc = start_gateway(config, ports, work / "gateway.log", cpu=cpu)
        print(f"gateway ready in {time.perf_counter() - t0:.2f} s (empty store)")

        phase(ports["hl7"], [orm("W", n) for n in range(args.warmup)], 1)
        print()
        print(f"{'connections':>11s} {'orders':>7s} {'AA':>6s} {'wall s':>7s} {'orders/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>7s} {'gw CPU s':>8s}  other")
        results = []
        for tag, connections in (("S", 1), ("C", args.connections)):
            messages = [orm(tag, n) for n in range(args.orders)]
            cpu0 = cpu_seconds(proc.pid)
            r = phase(ports["hl7"], messages, connections)
            r["cpu"] = cpu_seconds(proc.pid) - cpu0
            results.append(r)
            other = {k: v for k, v in r["codes"].items() if k != "AA"}
            print(
                f"{r['connections']:>11d} {r['sent']:>7d} {r['acked']:>6d} {r['wall']:>7.2f} {r['rate']:>9.1f} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['max']:>7.1f} {r['cpu']:>8.2f}"
                f"  {other or ''}{' errors: ' + '; '.join(r['errors'][:3]) if r['errors'] else ''}"
            )
        items = metric(ports["http"], "dxagw_worklist_items")
        stored = sum(v for k, v in items.items() if "SCHEDULED" in k)
        expected = args.warmup + sum(r["acked"] for r in results)
        print()
        print(f"stored SCHEDULED items (from /metrics): {stored:.0f}; orders acknowledged AA incl. warm-up: {expected}"
              + ("" if stored == expected else "  MISMATCH"))
        print(f"goal: >= 300 orders/s acknowledged on one core -> 1 connection {results[0]['rate']:.0f}/s, "
              f"{results[1]['connections']} connections {results[1]['rate']:.0f}/s")
    except Exception:
        if not _common.interrupted:
            raise
        print("\ninterrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if proc is not None:
            _common.stop(proc)
        _common.stop_all()
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
