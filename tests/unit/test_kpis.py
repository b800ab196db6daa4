"""mappings.kpis: the service data a DXA service records.

Source: seed 001 "Monitoring and reporting service data": number of
referrals, DNA and cancellation rates, waiting times for scans and time to
issue of report, proportion of patients in WHO diagnostic categories,
proportion requiring onward referral (here: prompts for further investigation).
"""

from __future__ import annotations

import csv
import io
import math
from datetime import date, datetime, timedelta, timezone

from mappings import kpis
from mappings.kpis import Episode

UTC = timezone.utc
TODAY = date(2026, 12, 3)


def at(day: int, hour: int = 10, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def scanned(day, scanner, referred_days, category, *, prompts=0, report_hours=None, deliver_minutes=None, month=10):
    scan = at(day, month=month)
    report = scan + timedelta(hours=report_hours) if report_hours is not None else None
    delivered = report + timedelta(minutes=deliver_minutes) if report and deliver_minutes is not None else None
    return Episode("COMPLETED", scan.date(), scanner, scan - timedelta(days=referred_days), scan, scanner, report, delivered, category, prompts)


def not_scanned(day, status, month=10):
    return Episode(status, date(2026, month, day), "DXA1", at(1, month=month), None, "", None, None)


EPISODES = [
    scanned(5, "DXA1", 10, "normal", report_hours=24, deliver_minutes=1),
    scanned(6, "DXA1", 20, "osteopenia", report_hours=48, deliver_minutes=3),
    scanned(7, "DXA2", 30, "osteoporosis", prompts=1, report_hours=72, deliver_minutes=2),
    scanned(8, "DXA2", 40, "osteopenia", prompts=2, report_hours=None),
    not_scanned(9, "SCHEDULED"),  # did not attend
    not_scanned(12, "CANCELLED"),
    not_scanned(13, "HELD"),
    scanned(3, "DXA1", 5, "normal", month=11, report_hours=2, deliver_minutes=1),
    not_scanned(30, "SCHEDULED", month=12),  # not yet due: neither DNA nor outside the range
    Episode("", None, "", None, at(20), "DXA1", None, None, "osteopenia"),  # unscheduled scan
]


def test_month_and_scanner_figures():
    k = kpis.compute(EPISODES, date(2026, 10, 1), date(2026, 10, 31), TODAY)
    t = k["total"]
    assert (t["referrals"], t["scanned"], t["unscheduled_scans"]) == (7, 5, 1)
    assert (t["did_not_attend"], t["cancelled"], t["held"]) == (1, 1, 1)
    assert t["did_not_attend_percent"] == 20.0  # 1 of 4 attended + 1 DNA
    assert t["who_categories"] == {"normal": 1, "osteopenia": 3, "osteoporosis": 1}
    assert t["who_categories_percent"]["osteopenia"] == 60.0
    assert (t["further_investigation_prompted"], t["further_investigation_percent"]) == (2, 40.0)
    # waits: 10, 20, 30, 40 days (the cancelled/held/DNA have no scan)
    assert t["referral_to_scan"] == {"count": 4, "median_days": 25.0, "p90_days": 40.0, "mean_days": 25.0, "median_seconds": 25 * 86400.0}
    assert t["scan_to_report"]["count"] == 3 and t["scan_to_report"]["median_days"] == 2.0
    assert t["report_to_delivered"]["median_seconds"] == 120.0
    assert (t["reported"], t["delivered"]) == (3, 3)
    assert set(k["months"]) == {"2026-10"}
    assert k["scanners"]["DXA2"]["scanned"] == 2
    assert k["scanners"]["DXA2"]["referral_to_scan"]["median_days"] == 35.0


def test_dna_needs_the_day_to_have_ended():
    """Seed 001: DNA is scheduled and not scanned; an appointment later today is not one yet."""
    later_today = not_scanned(3, "SCHEDULED", month=12)
    k = kpis.compute([later_today], date(2026, 12, 1), date(2026, 12, 31), TODAY)
    assert k["total"]["did_not_attend"] == 0
    k = kpis.compute([later_today], date(2026, 12, 1), date(2026, 12, 31), date(2026, 12, 4))
    assert k["total"]["did_not_attend"] == 1


def test_per_month_rows_and_csv():
    k = kpis.compute(EPISODES, date(2026, 10, 1), date(2026, 11, 30), TODAY)
    assert list(k["months"]) == ["2026-10", "2026-11"]
    assert k["months"]["2026-11"]["referral_to_scan"]["median_days"] == 5.0
    rows = list(csv.DictReader(io.StringIO(kpis.to_csv(k, ("normal", "osteopenia", "osteoporosis")))))
    assert [(r["month"], r["scanner"]) for r in rows] == [("all", "all"), ("2026-10", "all"), ("2026-11", "all"), ("all", "DXA1"), ("all", "DXA2")]
    assert rows[0]["referrals"] == "8" and rows[0]["who_osteopenia"] == "3"
    assert rows[2]["did_not_attend_percent"] == "0.0"
    assert rows[1]["report_to_delivered_median_seconds"] == "120.0"


def test_histogram_buckets_are_cumulative():
    values = kpis.intervals(EPISODES)["referral_to_scan"]
    buckets, total = kpis.histogram(values)
    assert buckets[-1] == (math.inf, len(values)) == (math.inf, 5)
    counts = [n for _, n in buckets]
    assert counts == sorted(counts)
    assert dict(buckets)[7 * 86400.0] == 1  # only the 5-day wait is within a week
    assert total == sum(values)


def test_findings_count_the_reports_prompts():
    """The report prompts further investigation for a low Z-score or a fragility
    fracture (classification) and for a significant loss since the previous exam
    (ISCD: change beyond the least significant change)."""
    assert kpis.findings(None) == ("", 0)
    analysis = {"classification": {"category": "osteopenia", "prompts": ["Z-score -2.0 or below: ..."]}}
    assert kpis.findings(analysis) == ("osteopenia", 1)
    loss = {"changes": [{"significant": True, "change_g_cm2": "-0.050"}, {"significant": False, "change_g_cm2": "-0.011"}]}
    assert kpis.findings({**analysis, "comparison": loss}) == ("osteopenia", 2)
    gain = {"changes": [{"significant": True, "change_g_cm2": "0.050"}]}
    assert kpis.findings({**analysis, "comparison": gain}) == ("osteopenia", 1)
