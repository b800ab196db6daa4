"""Service KPIs for a simulated month, against the real daemon.

The RIS simulator books each day's orders over MLLP, the referral back-dated
(``referred_days``: ORC-9); the scanner simulator, its clock set back
(``scan_at``), takes each day's worklist, sends
MPPS, images, the BMD SR and the dose SR; reports are released at once and
delivered to an HL7 peer.  Source: seed 001 "Monitoring and reporting service
data" (referrals, DNA and cancellations, wait to scan, time to report, WHO
categories, onward referral).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import urllib.request
from calendar import monthrange
from datetime import date, datetime, timedelta

import orjson
import pytest

from simulators.ris import RisOptions, RisSimulator
from simulators.scanner import ScannerOptions, ScannerSimulator
from tests.mllp_peer import MllpPeer
from tests.orthanc import wait_for
from tests.support import start_daemon

# A month that has ended: the one before last.
_last_month = date.today().replace(day=1) - timedelta(days=1)
MONTH_START = (_last_month.replace(day=1) - timedelta(days=1)).replace(day=1)
MONTH_END = MONTH_START.replace(day=monthrange(MONTH_START.year, MONTH_START.month)[1])
MONTH = f"{MONTH_START.year:04d}-{MONTH_START.month:02d}"


def day(n: int) -> date:
    return MONTH_START.replace(day=n)


# (day of the month, station, days from referral to the appointment, fate)
PLAN = [
    (3, "DXA1", 10, "scanned"), (4, "DXA1", 20, "scanned"), (5, "DXA1", 30, "scanned"),
    (6, "DXA2", 12, "scanned"), (7, "DXA2", 14, "scanned"), (8, "DXA1", 9, "dna"), (8, "DXA2", 9, "cancelled"),
]  # fmt: skip


def expected_wait_days(n: int, waited: int) -> float:
    """Scan at 10:00 local on the day, referral at 09:00 ``waited`` days before (dxa-sim ris --referred)."""
    when = day(n)
    scan = datetime(when.year, when.month, when.day, 10).astimezone()
    referred = (datetime(when.year, when.month, when.day, 9) - timedelta(days=waited)).astimezone()
    return (scan - referred).total_seconds() / 86400


def median_p90(values: list[float]) -> tuple[float, float]:
    v = sorted(values)
    return round(statistics.median(v), 3), round(v[math.ceil(0.9 * len(v)) - 1], 3)


def get(daemon, path: str, accept: str = "application/json"):
    req = urllib.request.Request(daemon.http + path, headers={"Accept": accept, **daemon.headers})
    with urllib.request.urlopen(req, timeout=20) as rsp:
        return rsp.headers.get_content_type(), rsp.read()


@pytest.fixture(scope="module")
def ris_peer():
    peer = MllpPeer(default="AA")
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def month(tmp_path_factory, ris_peer):
    """The daemon after a simulated month (orders, scans, reports, deliveries)."""
    tmp = tmp_path_factory.mktemp("kpis")
    d = start_daemon(
        tmp,
        {
            "storage": {"min_free_bytes": 0},
            "reports": {"auto_release": True},
            "destinations": {"ris": {"type": "hl7", "host": "127.0.0.1", "port": ris_peer.port, "retry_base": 0.3}},
            "routes": [{"match": {"kind": "report"}, "to": ["ris"]}],
        },
    )
    steps: dict[str, list[tuple[int, str, int]]] = {"scanned": [], "dna": [], "cancelled": []}
    try:
        for i, (n, station, waited, fate) in enumerate(PLAN):
            stamp = day(n).strftime("%Y%m%d")
            ris = RisSimulator(RisOptions(port=d.hl7_port, day=stamp, station_ae=station, referred_days=waited, seed=10 + i, prefix=f"KP{i}", cancel=fate == "cancelled"))
            assert ris.run().ok, ris.report()
            accessions = sorted(s.accession for s in ris.orders[0].steps)
            steps[fate] += [(n, station, waited)] * len(accessions)
            if fate == "scanned":
                sim = ScannerSimulator(ScannerOptions(gateway_port=d.dicom_port, ae_title=station, date=stamp, scan_at=stamp + "100000", images=1, seed=100 + i))
                report = sim.run()
                assert sorted(e.header.AccessionNumber for e in sim.exams) == accessions, report
                assert all(e.ok for e in sim.exams), report
        d.steps = steps
        yield d
    finally:
        d.stop()


def kpis(daemon) -> dict:
    return orjson.loads(get(daemon, f"/api/kpis?from={MONTH_START}&to={MONTH_END}")[1])


def delivered_all(daemon):
    k = kpis(daemon)
    return k if k["total"]["delivered"] == len(daemon.steps["scanned"]) else None


def test_a_simulated_month(month):
    """The RIS simulator books a month (referrals back-dated with --referred),
    the scanner simulator scans each day (clock set back with --at)."""
    k = wait_for(lambda: delivered_all(month), 90)
    assert k is not None, kpis(month)
    t = k["total"]
    scanned, dna, cancelled = (month.steps[f] for f in ("scanned", "dna", "cancelled"))
    assert list(k["months"]) == [MONTH]
    assert (t["referrals"], t["scanned"], t["unscheduled_scans"]) == (len(scanned) + len(dna) + len(cancelled), len(scanned), 0)
    assert (t["did_not_attend"], t["cancelled"], t["held"]) == (len(dna), len(cancelled), 0)
    assert t["did_not_attend_percent"] == round(100 * len(dna) / (len(scanned) + len(dna)), 1)
    median, p90 = median_p90([expected_wait_days(n, w) for n, _, w in scanned])
    assert t["referral_to_scan"]["count"] == len(scanned)
    assert (t["referral_to_scan"]["median_days"], t["referral_to_scan"]["p90_days"]) == (median, p90)
    # the reports were released today, a month or more after the scans
    assert t["scan_to_report"]["count"] == len(scanned) and t["scan_to_report"]["median_days"] > 20
    assert t["report_to_delivered"]["count"] == len(scanned) == t["reported"]
    # every exam has a diagnostic category, and the mix adds up
    assert sum(t["who_categories"].values()) == len(scanned)
    assert 0 <= t["further_investigation_prompted"] <= len(scanned)
    for station in ("DXA1", "DXA2"):
        g = k["scanners"][station]
        mine = [(n, w) for n, st, w in scanned if st == station]
        assert (g["scanned"], g["did_not_attend"], g["cancelled"]) == (
            len(mine), sum(1 for _, st, _ in dna if st == station), sum(1 for _, st, _ in cancelled if st == station))
        assert g["referral_to_scan"]["median_days"] == median_p90([expected_wait_days(n, w) for n, w in mine])[0]


def test_the_month_as_csv_and_outside_it_nothing(month):
    assert wait_for(lambda: delivered_all(month), 90)
    kind, body = get(month, f"/api/kpis?from={MONTH_START}&to={MONTH_END}", accept="text/csv")
    assert kind == "text/csv"
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["month"], r["scanner"]) for r in rows] == [("all", "all"), (MONTH, "all"), ("all", "DXA1"), ("all", "DXA2")]
    total = kpis(month)["total"]
    assert rows[0]["referrals"] == str(total["referrals"]) and rows[0]["did_not_attend"] == str(len(month.steps["dna"]))
    assert rows[2]["scanned"] == str(sum(1 for _, st, _ in month.steps["scanned"] if st == "DXA1"))
    after = orjson.loads(get(month, f"/api/kpis?from={MONTH_END + timedelta(days=1)}&to={MONTH_END + timedelta(days=20)}")[1])
    assert after["total"]["referrals"] == 0 and after["months"] == {}
    with pytest.raises(urllib.error.HTTPError) as bad:
        get(month, "/api/kpis?from=2026-13-01")
    assert bad.value.code == 400


def test_wait_histograms_in_metrics(month):
    assert wait_for(lambda: delivered_all(month), 90)
    text = get(month, "/metrics", accept="text/plain")[1].decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("dxagw_referral_to_scan_seconds"))
    scanned = month.steps["scanned"]
    assert float(lines["dxagw_referral_to_scan_seconds_count"]) == len(scanned)
    two_weeks = [w for w in (expected_wait_days(n, w) for n, _, w in scanned) if w <= 14]
    assert float(lines['dxagw_referral_to_scan_seconds_bucket{le="1.2096e+06"}']) == len(two_weeks)
    assert f"dxagw_scan_to_report_seconds_count {float(len(scanned))}" in text
