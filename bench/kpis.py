"""Service KPIs: how long the store read and the computation take for a year.

Builds a store with N orders (default 20,000: a busy DXA service's year on
two scanners), each with an MPPS, one object, a parsed exam, a released
report and its delivered outbox row (written with SQL, not through the
daemon), then times ``service_episodes()`` (the read), ``kpis.compute``
(one year, per month and scanner) and the three histograms (what a /metrics
scrape does when its one-minute cache has expired).

    python bench/kpis.py            # 20,000 orders
    python bench/kpis.py --orders 100000

It prints figures; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from gateway.store import open_store  # noqa: E402
from mappings import kpis  # noqa: E402
from mappings.worklist import WorklistItem  # noqa: E402

CATEGORIES = ("normal", "osteopenia", "osteoporosis")


def build(store, n: int, rng: random.Random) -> None:
    start = date.today() - timedelta(days=365)
    now = datetime.now(timezone.utc).isoformat()
    with store._transaction() as conn:
        for i in range(n):
            d = start + timedelta(days=i * 365 // n)
            study = f"2.25.{i + 1}"
            station = f"DXA{1 + i % 2}"
            item = WorklistItem(patient_id=f"P{i}", station_ae=station, start_date=d.strftime("%Y%m%d"), start_time="100000",
                                study_instance_uid=study, accession_number=f"A{i}", status="COMPLETED",
                                referred_at=(d - timedelta(days=rng.randint(5, 60))).strftime("%Y%m%d") + "090000")  # fmt: skip
            cols = store._columns(item)
            cols.update(sender="bench", created_at=now, updated_at=now)
            item_id = conn.execute(f"INSERT INTO worklist_items ({', '.join(cols)}) VALUES ({', '.join(':' + k for k in cols)})", cols).lastrowid
            attrs = orjson.dumps({"00400244": {"vr": "DA", "Value": [d.strftime("%Y%m%d")]}, "00400245": {"vr": "TM", "Value": ["100000"]}})
            conn.execute(
                "INSERT INTO mpps (sop_instance_uid, status, calling_ae, worklist_item_id, study_uid, accession, created_at, updated_at, attributes)"
                " VALUES (?, 'COMPLETED', ?, ?, ?, ?, ?, ?, ?)", (f"1.2.{i}", station, item_id, study, f"A{i}", now, now, attrs))  # fmt: skip
            inst = conn.execute(
                "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_uid, series_uid, patient_id, accession, modality, manufacturer,"
                " kind, transfer_syntax, size, sha256, path, calling_ae, received_at) VALUES (?, '1.2.840.10008.5.1.4.1.1.88.22', ?, ?, ?, ?,"
                " 'SR', 'HOLOGIC', 'sr', '1.2.840.10008.1.2.1', 1000, '', '', ?, ?)", (f"1.3.{i}", study, f"1.4.{i}", f"P{i}", f"A{i}", station, now),
            ).lastrowid  # fmt: skip
            analysis = orjson.dumps({"classification": {"category": rng.choice(CATEGORIES), "prompts": [] if rng.random() < 0.9 else ["x"]}})
            exam = conn.execute(
                "INSERT INTO exams (instance_id, sop_instance_uid, study_uid, patient_id, accession, exam_date, state, analysis, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'parsed', ?, ?, ?)", (inst, f"1.3.{i}", study, f"P{i}", f"A{i}", d.strftime("%Y%m%d"), analysis, now, now),
            ).lastrowid  # fmt: skip
            released = datetime(d.year, d.month, d.day, 16, tzinfo=timezone.utc) + timedelta(days=rng.randint(0, 10))
            report = conn.execute("INSERT INTO reports (exam_id, status, text, reporter, released_at) VALUES (?, 'F', '', 'r', ?)", (exam, released.isoformat())).lastrowid
            conn.execute(
                "INSERT INTO outbox (destination, kind, ref_table, ref_id, order_key, state, next_attempt_at, created_at, updated_at, delivered_at)"
                " VALUES ('ris', 'report', 'reports', ?, ?, 'done', ?, ?, ?, ?)", (report, study, now, now, now, (released + timedelta(seconds=2)).isoformat()),
            )  # fmt: skip


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds (CPU: this process; the machine may be shared)."""
    wall, cpu, value = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp)
        t0 = time.perf_counter()
        build(store, args.orders, random.Random(1))
        print(f"built {args.orders} orders in {time.perf_counter() - t0:.1f} s")
        read = timed(store.service_episodes, args.repeat)
        episodes = read[2]
        today = date.today()
        compute = timed(lambda: kpis.compute(episodes, today - timedelta(days=365), today, today), args.repeat)
        figures = compute[2]
        hist = timed(lambda: [kpis.histogram(v) for v in kpis.intervals(episodes).values()], args.repeat)
        store.close()
    for label, (wall, cpu, _) in (
        ("service_episodes (the store read)", read),
        (f"kpis.compute (a year, {len(figures['months'])} months, {len(figures['scanners'])} scanners)", compute),
        ("the three histograms (a /metrics scrape after its cache expires, plus the read)", hist),
    ):
        print(f"{label}: median {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU over {args.repeat}")
    print(f"episodes {len(episodes)}, referral to scan median {figures['total']['referral_to_scan']['median_days']} days")


if __name__ == "__main__":
    main()
