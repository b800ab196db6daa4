"""Dose per exam type in the service KPIs (issue 16 item 5; seed 000 section 11:
DRLs for the examinations undertaken; seed 001 service data)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timezone

from mappings import kpis
from mappings.kpis import DoseFinding, Episode

UTC = timezone.utc


def _scan(day: int, scanner: str, dose: DoseFinding | None) -> Episode:
    at = datetime(2026, 10, day, 10, tzinfo=UTC)
    return Episode("COMPLETED", at.date(), scanner, at, at, scanner, None, None, "normal", 0, dose)


def test_median_and_count_over_drl_per_exam_type():
    episodes = [
        _scan(5, "DXA1", DoseFinding("hip x2+spine", "cGy.cm2", 3.0, False)),
        _scan(6, "DXA1", DoseFinding("hip x2+spine", "cGy.cm2", 5.0, True)),
        _scan(7, "DXA2", DoseFinding("hip x2+spine", "cGy.cm2", 4.0, False)),
        _scan(8, "DXA2", DoseFinding("forearm", "dGy.cm2", 0.2, None)),
        _scan(9, "DXA2", DoseFinding("forearm", "mGy", 0.01, None)),
        _scan(10, "DXA2", None),
    ]
    k = kpis.compute(episodes, date(2026, 10, 1), date(2026, 10, 31), date(2026, 12, 3))
    dose = k["total"]["dose"]
    assert dose["hip x2+spine"] == {"units": "cGy.cm2", "count": 3, "median": 4.0, "over_drl": 1, "not_compared": 0}
    assert dose["forearm [dGy.cm2]"]["not_compared"] == 1 and dose["forearm [mGy]"]["count"] == 1
    assert k["scanners"]["DXA1"]["dose"]["hip x2+spine"]["median"] == 4.0  # (3 + 5) / 2
    assert k["months"]["2026-10"]["dose"]["hip x2+spine"]["count"] == 3


def test_dose_finding_from_the_stored_analysis():
    analysis = {"dose": {"exam_type": "spine", "quantity": "dap", "value": "1.25", "units": "cGy.cm2", "level": "2.0", "over": False}}
    assert kpis.dose_finding(analysis) == DoseFinding("spine", "cGy.cm2", 1.25, False)
    assert kpis.dose_finding({"dose": {"exam_type": "spine", "value": None}}) is None
    assert kpis.dose_finding({}) is None
    assert dataclasses.replace(kpis.dose_finding(analysis), over=None).over is None
