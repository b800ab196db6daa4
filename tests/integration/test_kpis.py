"""Service KPIs for a simulated month, against the real daemon.

Orders arrive over MLLP with chosen referral times (ORC-9); the scanner
simulator, its clock set back (``scan_at``), takes each day's worklist, sends
MPPS, images, the BMD SR and the dose SR; reports are released at once and
delivered to an HL7 peer.  Source: seed 001 "Monitoring and reporting service
data" (referrals, DNA and cancellations, wait to scan, time to report, WHO
categories, onward referral).
"""

from __future__ import annotations

import csv
import io
import urllib.request
from calendar import monthrange
from datetime import date, datetime, timedelta

import orjson
import pytest

from simulators.scanner import ScannerOptions, ScannerSimulator
from tests.hl7_messages import orm
from tests.mllp_peer import MllpPeer
from tests.orthanc import wait_for
from tests.support import MllpClient, ack_fields, start_daemon

# A month that has ended: the one before last.
_last_month = date.today().replace(day=1) - timedelta(days=1)
MONTH_START = (_last_month.replace(day=1) - timedelta(days=1)).replace(day=1)
MONTH_END = MONTH_START.replace(day=monthrange(MONTH_START.year, MONTH_START.month)[1])
MONTH = f"{MONTH_START.year:04d}-{MONTH_START.month:02d}"


def day(n: int) -> date:
    return MONTH_START.replace(day=n)


# (accession, day of the month, station, days from referral to the appointment)
SCANNED = [("KA1", 3, "DXA1", 10), ("KA2", 4, "DXA1", 20), ("KA3", 5, "DXA1", 30), ("KA4", 6, "DXA2", 12), ("KA5", 7, "DXA2", 14)]
DNA = ("KA6", 8, "DXA1", 9)
CANCELLED = ("KA7", 8, "DXA2", 9)


def set_field(message: str, seg_id: str, n: int, value: str) -> str:
    segs = message.split("\r")
    for i, seg in enumerate(segs):
        if seg.startswith(seg_id + "|"):
            fields = seg.split("|")
            fields += [""] * (n + 1 - len(fields))
            fields[n] = value
            segs[i] = "|".join(fields)
    return "\r".join(segs)


def order(accession: str, n: int, station: str, waited: int, control: str = "NW") -> str:
    when = day(n)
    referred = datetime(when.year, when.month, when.day, 9) - timedelta(days=waited)
    msg = orm(f"K-{accession}-{control}", control=control, placer=f"P{accession}", filler=f"F{accession}", accession=accession,
              station=station, start=when.strftime("%Y%m%d") + "100000", patient_id=f"PK{accession}")  # fmt: skip
    return set_field(msg, "ORC", 9, referred.strftime("%Y%m%d%H%M%S"))


def expected_wait_days(n: int, waited: int) -> float:
    """Scan at 10:00 local on the day, referral at 09:00 ``waited`` days before."""
    when = day(n)
    scan = datetime(when.year, when.month, when.day, 10).astimezone()
    referred = (datetime(when.year, when.month, when.day, 9) - timedelta(days=waited)).astimezone()
    return (scan - referred).total_seconds() / 86400


def get(daemon, path: str, accept: str = "application/json"):
    req = urllib.request.Request(daemon.http + path, headers={"Accept": accept})
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
    try:
        mllp = MllpClient(d.hl7_port)
        for o in (*SCANNED, DNA, CANCELLED):
            assert ack_fields(mllp.send(order(*o)))["MSA"][1] == "AA"
        assert ack_fields(mllp.send(order(*CANCELLED, control="CA")))["MSA"][1] == "AA"
        mllp.close()
        for i, (accession, n, station, _) in enumerate(SCANNED):
            stamp = day(n).strftime("%Y%m%d")
            sim = ScannerSimulator(ScannerOptions(gateway_port=d.dicom_port, ae_title=station, date=stamp, scan_at=stamp + "100000", images=1, seed=100 + i))
            report = sim.run()
            assert [e.header.AccessionNumber for e in sim.exams] == [accession], report
            assert all(e.ok for e in sim.exams), report
        yield d
    finally:
        d.stop()


def kpis(daemon) -> dict:
    return orjson.loads(get(daemon, f"/api/kpis?from={MONTH_START}&to={MONTH_END}")[1])


def delivered_all(daemon):
    k = kpis(daemon)
    return k if k["total"]["delivered"] == len(SCANNED) else None


def test_a_simulated_month(month):
    k = wait_for(lambda: delivered_all(month), 60)
    assert k is not None, kpis(month)
    t = k["total"]
    assert list(k["months"]) == [MONTH]
    assert (t["referrals"], t["scanned"], t["unscheduled_scans"]) == (7, 5, 0)
    assert (t["did_not_attend"], t["cancelled"], t["held"]) == (1, 1, 0)
    assert t["did_not_attend_percent"] == round(100 / 6, 1)
    waits = sorted(expected_wait_days(n, w) for _, n, _, w in SCANNED)
    assert t["referral_to_scan"]["count"] == 5
    assert t["referral_to_scan"]["median_days"] == round(waits[2], 3)
    assert t["referral_to_scan"]["p90_days"] == round(waits[4], 3)
    # the reports were released today, a month or more after the scans
    assert t["scan_to_report"]["count"] == 5 and t["scan_to_report"]["median_days"] > 20
    assert t["report_to_delivered"]["count"] == 5 and t["reported"] == 5
    # every exam has a diagnostic category, and the mix adds up
    assert sum(t["who_categories"].values()) == 5
    assert t["further_investigation_prompted"] <= 5
    s = k["scanners"]
    assert (s["DXA1"]["scanned"], s["DXA1"]["did_not_attend"]) == (3, 1)
    assert (s["DXA2"]["scanned"], s["DXA2"]["cancelled"]) == (2, 1)
    assert s["DXA2"]["referral_to_scan"]["median_days"] == round(sum(expected_wait_days(n, w) for _, n, st, w in SCANNED if st == "DXA2") / 2, 3)


def test_the_month_as_csv_and_outside_it_nothing(month):
    assert wait_for(lambda: delivered_all(month), 60)
    kind, body = get(month, f"/api/kpis?from={MONTH_START}&to={MONTH_END}", accept="text/csv")
    assert kind == "text/csv"
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["month"], r["scanner"]) for r in rows] == [("all", "all"), (MONTH, "all"), ("all", "DXA1"), ("all", "DXA2")]
    assert rows[0]["referrals"] == "7" and rows[0]["did_not_attend"] == "1" and rows[2]["scanned"] == "3"
    after = orjson.loads(get(month, f"/api/kpis?from={MONTH_END + timedelta(days=1)}&to={MONTH_END + timedelta(days=20)}")[1])
    assert after["total"]["referrals"] == 0 and after["months"] == {}
    with pytest.raises(urllib.error.HTTPError) as bad:
        get(month, "/api/kpis?from=2026-13-01")
    assert bad.value.code == 400


def test_wait_histograms_in_metrics(month):
    assert wait_for(lambda: delivered_all(month), 60)
    text = get(month, "/metrics", accept="text/plain")[1].decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("dxagw_referral_to_scan_seconds"))
    assert float(lines["dxagw_referral_to_scan_seconds_count"]) == 5
    two_weeks = [w for w in (expected_wait_days(n, w) for _, n, _, w in SCANNED) if w <= 14]
    assert float(lines['dxagw_referral_to_scan_seconds_bucket{le="1.2096e+06"}']) == len(two_weeks)
    assert "dxagw_scan_to_report_seconds_count 5.0" in text
