"""Scale-out: 1 and 2 gateway replicas on PostgreSQL beside 1 on SQLite, in one run.

Each setup gets a fresh store: SQLite in its own folder, or a fresh database
on one throwaway PostgreSQL cluster (tests/postgres.py, durable: fsync and
synchronous_commit on, as SQLite's synchronous=FULL) that both replicas of
the two-replica setup share, with one shared spool folder.  Then, with the
load spread round-robin over the replicas:

- HL7: M new orders (bench/hl7_ingest.py ``orm``) over C MLLP connections,
  each waiting for its ACK: orders acknowledged AA per second, ACK p99;
- C-STORE: the same objects (bench/ingest.py ``make_objects``: 2 MB
  secondary captures and BMD SRs) from S dcmtk storescu processes:
  objects acknowledged per second;
- MWL: Q threads, each asking R scanner queries (station and day over the
  orders just loaded; bench/worklist.py ``find_once``, one association per
  query): p50/p99 of associate -> C-FIND -> release, and queries/s.  The
  number of matches is checked against the orders sent (MISMATCH if not).

    python bench/scale.py                    # 2000 orders, 80 objects, 4 x 50 queries
    python bench/scale.py --quick            # a smoke run

Prints a table; asserts nothing about time.  Replicas and client share the
machine's cores: on a small machine two replicas compete with each other and
with the client, so read the 2-replica row as "what sharing one database
costs or gains here", not as a cluster's capacity.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (puts the repo root on sys.path)
from _common import machine, percentile, start_gateway, write_gateway_config  # noqa: E402

import yaml  # noqa: E402

import hl7_ingest  # noqa: E402
import ingest  # noqa: E402
import worklist  # noqa: E402
from tests.postgres import start_cluster  # noqa: E402

SETUPS = [("sqlite", 1), ("postgresql", 1), ("postgresql", 2)]
QUERY_STATION = "DXA3"


def start_replicas(work: Path, name: str, replicas: int, database: str) -> list[dict]:
    """``replicas`` gateways on one store (``database`` "" = SQLite) and one spool folder; their ports."""
    data = work / name / "data"
    out = []
    for r in range(replicas):
        run = work / name / f"replica{r}"
        run.mkdir(parents=True)
        config = run / "gateway.yaml"
        ports = write_gateway_config(config, data, log_level="WARNING")
        cfg = yaml.safe_load(config.read_text())
        cfg["storage"]["min_free_bytes"] = 0
        if database:
            cfg["storage"]["database"] = database
        config.write_text(yaml.safe_dump(cfg))
        proc = start_gateway(config, ports, run / "gateway.log")
        out.append({**ports, "proc": proc})
    return out



def run_all(threads: list[threading.Thread]) -> float:
    """Start ``threads``, wait for all of them; the wall-clock seconds they took."""
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0

def hl7_phase(ports: list[int], messages: list[bytes], connections: int) -> dict:
    """``connections`` MLLP clients (hl7_ingest.send_all), spread over ``ports``."""
    shares = [messages[i::connections] for i in range(connections)]
    lat: list[list[float]] = [[] for _ in shares]
    codes: list[dict] = [{} for _ in shares]
    errors: list[str] = []
    threads = [threading.Thread(target=hl7_ingest.send_all, args=(ports[i % len(ports)], s, lat[i], codes[i], errors)) for i, s in enumerate(shares)]
    wall = run_all(threads)
    latencies = [x for part in lat for x in part]
    acked = sum(c.get("AA", 0) for c in codes)
    return {"rate": acked / wall, "acked": acked, "p99": percentile(latencies, 99) * 1e3 if latencies else float("nan"), "errors": errors}


def store_phase(ports: list[int], files: list[Path], processes: int) -> dict:
    """``processes`` storescu processes (ingest.send), spread over ``ports``; one thread per replica."""
    per = [files[i :: len(ports)] for i in range(len(ports))]
    results: list[tuple[float, int]] = [(0.0, 0)] * len(ports)

    def one(i: int) -> None:
        results[i] = ingest.send(SimpleNamespace(aet="DXAGW", port=ports[i]), per[i], max(1, processes // len(ports)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ports))]
    wall = run_all(threads)
    failures = sum(f for _, f in results)
    return {"rate": len(files) / wall, "mb_s": sum(f.stat().st_size for f in files) / 1e6 / wall, "failures": failures}


def mwl_phase(ports: list[int], days: list[str], expected: dict[str, int], threads_n: int, repeat: int) -> dict:
    """``threads_n`` scanners, each ``repeat`` queries (worklist.find_once), round-robin over ports and days."""
    times: list[float] = []
    wrong: list[str] = []
    lock = threading.Lock()

    def scanner(k: int) -> None:
        ae = worklist.make_client()
        for j in range(repeat):
            day = days[(k + j) % len(days)]
            port = ports[(k + j) % len(ports)]
            seconds, count, final = worklist.find_once(ae, port, "DXAGW", worklist._return_keys(station=QUERY_STATION, date_value=day))
            with lock:
                times.append(seconds)
                if count != expected[day] or final != "0x0000":
                    wrong.append(f"{day}: {count} matches (expected {expected[day]}), status {final}")

    threads = [threading.Thread(target=scanner, args=(k,)) for k in range(threads_n)]
    wall = run_all(threads)
    return {"p50": percentile(times, 50) * 1e3, "p99": percentile(times, 99) * 1e3, "rate": len(times) / wall, "wrong": wrong}


def day_of(n: int) -> str:
    """The SPS start date hl7_ingest.orm gives order ``n``."""
    return f"202612{1 + n % 28:02d}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--connections", type=int, default=4, help="MLLP connections (default 4)")
    p.add_argument("--objects", type=int, default=60, help="2 MB secondary captures (default 60), plus half as many BMD SRs")
    p.add_argument("--storescu", type=int, default=4, help="storescu processes (default 4)")
    p.add_argument("--scanners", type=int, default=4, help="concurrent MWL clients (default 4)")
    p.add_argument("--queries", type=int, default=50, help="queries per MWL client (default 50)")
    p.add_argument("--quick", action="store_true", help="300 orders, 10 objects, 4 x 10 queries")
    p.add_argument("--only", action="append", choices=[f"{s}-{r}" for s, r in SETUPS], help="run only this setup (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    if args.quick:
        args.orders, args.objects, args.queries = 300, 10, 10

    work = Path(tempfile.mkdtemp(prefix="dxa-bench-scale-"))
    cluster = None
    running: list[dict] = []
    rows = []
    try:
        print(f"# scale-out benchmark | {machine()}")
        files = ingest.make_objects(work / "objects", args.objects, args.objects // 2, 0)
        mb = sum(f.stat().st_size for f in files) / 1e6
        cluster = start_cluster(durable=True)
        version = subprocess.run([str(cluster.bin / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
        print(f"# {version}, throwaway cluster, fsync and synchronous_commit on; SQLite WAL synchronous=FULL")
        print(f"# load: {args.orders} orders over {args.connections} MLLP connections; {len(files)} objects ({mb:.0f} MB) from "
              f"{args.storescu} storescu; MWL {args.scanners} scanners x {args.queries} queries (station {QUERY_STATION} and one day)")
        print("# each load spread round-robin over the replicas; store, spool and clients on this one machine\n")
        for n_setup, (store, replicas) in enumerate(SETUPS):
            name = f"{store}-{replicas}"
            if args.only and name not in args.only:
                continue
            database = cluster.database() if store == "postgresql" else ""
            running = start_replicas(work, name, replicas, database)
            ports = {k: [r[k] for r in running] for k in ("hl7", "dicom")}
            hl7_phase(ports["hl7"], [hl7_ingest.orm(f"W{n_setup}", n) for n in range(20)], len(running))  # warm-up, counted in the expectation
            tag = f"S{n_setup}"
            h = hl7_phase(ports["hl7"], [hl7_ingest.orm(tag, n) for n in range(args.orders)], args.connections)
            s = store_phase(ports["dicom"], files, args.storescu)
            expected: dict[str, int] = {}
            for n in [*range(20), *range(args.orders)]:
                if hl7_ingest.STATIONS[n % len(hl7_ingest.STATIONS)] == QUERY_STATION:
                    expected[day_of(n)] = expected.get(day_of(n), 0) + 1
            days = sorted(expected)
            m = mwl_phase(ports["dicom"], days, expected, args.scanners, args.queries)
            notes = []
            if h["acked"] != args.orders or h["errors"]:
                notes.append(f"HL7: {h['acked']} of {args.orders} AA {'; '.join(h['errors'][:2])}")
            if s["failures"]:
                notes.append(f"C-STORE: {s['failures']} storescu failed")
            if m["wrong"]:
                notes.append(f"MWL MISMATCH: {m['wrong'][0]} (+{len(m['wrong']) - 1})")
            rows.append((store, replicas, h, s, m, notes))
            print(f"  {name}: {h['rate']:.0f} orders/s, {s['rate']:.1f} objects/s, MWL p99 {m['p99']:.0f} ms" + (f"  [{'; '.join(notes)}]" if notes else ""))
            for r in running:
                _common.stop(r["proc"])
            running = []
        print()
        print(f"{'store':<11s} {'replicas':>8s} {'HL7 orders/s':>12s} {'ACK p99 ms':>10s} {'C-STORE obj/s':>13s} {'MB/s':>6s} {'MWL p50 ms':>10s} {'MWL p99 ms':>10s} {'MWL q/s':>8s}  notes")
        for store, replicas, h, s, m, notes in rows:
            print(f"{store:<11s} {replicas:>8d} {h['rate']:>12.0f} {h['p99']:>10.1f} {s['rate']:>13.1f} {s['mb_s']:>6.1f} {m['p50']:>10.1f} {m['p99']:>10.1f} {m['rate']:>8.1f}  {'; '.join(notes) or 'ok'}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for r in running:
            _common.stop(r["proc"])
        _common.stop_all()
        if cluster is not None:
            cluster.stop()
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
