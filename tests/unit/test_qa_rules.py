"""Scanner QA rules (mappings/qa.py).

Source: seed 001 "Quality assurance" (QA checks daily before patients, at
least three times a week; operators act when a scanner fails a QA check);
the control rules are Westgard's multi-rule Shewhart chart (Clin Chem
1981;27:493: a value beyond the control limit, here the phantom tolerance
of 1.5 % of the baseline mean; the "6x" run of six on one side of the mean)
and Page's CUSUM (Biometrika 1954) with k = 0.5 SD, h = 5 SD, deviations
clipped at 3 SD (Lucas and Crosier's robust CUSUM, 1982).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from mappings import qa
from mappings.bmd.models import BmdExam, RegionResult

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
BASE = [1.000, 1.002, 0.998, 1.001, 0.999, 1.000, 1.003, 0.997, 1.001, 0.999]  # mean 1.000, SD ~0.0019


def series(values: list[float]) -> list[qa.QaScan]:
    return [qa.QaScan(T0 + timedelta(days=i), v) for i, v in enumerate(values)]


def run(values: list[float], now: datetime | None = None, **kw) -> qa.QaSummary:
    s = series(values)
    settings = dict(baseline_scans=10, tolerance_percent=1.5, overdue_days=3, **kw)
    return qa.evaluate(s, now or (s[-1].at + timedelta(hours=1) if s else T0), **settings)


def test_fewer_than_baseline_scans_is_baseline():
    s = run(BASE[:9])
    assert s.status == "baseline" and s.baseline_mean is None and not s.checks


def test_baseline_mean_and_sd_from_the_first_scans_only():
    s = run([*BASE, 1.004])
    assert round(s.baseline_mean, 6) == 1.0
    assert 0.0017 < s.baseline_sd < 0.0021
    assert s.status == "ok" and s.last_deviation_percent == 0.4


def test_three_percent_low_fails_on_tolerance():
    s = run([*BASE, 0.970])
    assert s.status == "fail" and "tolerance" in s.last_rules and s.last_deviation_percent == -3.0


def test_within_tolerance_either_side_passes():
    assert run([*BASE, 1.0149]).status == "ok"
    assert run([*BASE, 0.9851]).status == "ok"
    assert run([*BASE, 1.0151]).status == "fail"


def test_six_in_a_row_on_one_side_fails_on_the_run_rule():
    """Westgard 6x: five above the mean pass, the sixth fails, one below clears it."""
    above = [1.0005] * 5
    assert run([*BASE, *above]).status == "ok"
    s = run([*BASE, *above, 1.0005])
    assert s.status == "fail" and s.last_rules == ("run",)
    assert run([*BASE, *above, 1.0005, 0.9995]).status == "ok"


def test_a_slow_drift_within_tolerance_signals_on_the_cusum():
    """-0.5 % a scan (about 2.6 SD): inside 1.5 %, alternating side so no run; the CUSUM signals."""
    drift = [0.995, 1.0005, 0.995, 0.995]
    checks = run([*BASE, *drift]).checks
    assert all("tolerance" not in c.rules and "run" not in c.rules for c in checks)
    assert "cusum" in checks[-1].rules and not any("cusum" in c.rules for c in checks[:-1])
    assert run([*BASE, *drift]).status == "fail"
    # restarted after the signal: one scan on the mean passes
    assert run([*BASE, *drift, 1.000]).status == "ok"


def test_no_scan_for_overdue_days_is_overdue_and_fail_stays_fail():
    values = [*BASE, 1.001]
    last = T0 + timedelta(days=10)
    assert run(values, now=last + timedelta(days=2, hours=23)).status == "ok"
    assert run(values, now=last + timedelta(days=3, hours=1)).status == "overdue"
    assert run([*BASE, 0.97], now=last + timedelta(days=30)).status == "fail"
    assert run(BASE[:4], now=T0 + timedelta(days=30)).status == "overdue"


def test_one_scan_near_the_tolerance_does_not_signal_the_cusum_alone():
    s = run([*BASE, 0.986])
    assert s.status == "ok" and s.checks[-1].cusum_low == 2.5


def test_identical_baseline_values_do_not_break_the_cusum():
    s = run([1.0] * 10 + [1.0005])
    assert s.status == "ok" and s.baseline_sd == 0.0


def test_phantom_patient_id_globs():
    globs = ["PHANTOM*", "QA*"]
    assert qa.is_phantom("PHANTOM1", globs) and qa.is_phantom("QA-SPINE", globs)
    assert not qa.is_phantom("PAT-QA1", globs) and not qa.is_phantom("", globs) and not qa.is_phantom("phantom1", globs)


def _region(site: str, bmd: str | None) -> RegionResult:
    return RegionResult(site, None, Decimal(bmd) if bmd else None)


def test_phantom_bmd_is_the_spine_total_else_the_only_bmd():
    exam = BmdExam(patient_id="PHANTOM1", regions=(_region("L1", "0.9"), _region("L2-L4", "1.01"), _region("L1-L4", "1.002")))
    assert qa.phantom_bmd(exam) == ("L1-L4", Decimal("1.002"))
    assert qa.phantom_bmd(BmdExam(patient_id="QA", regions=(_region("forearm_total", "0.55"),))) == ("forearm_total", Decimal("0.55"))
    assert qa.phantom_bmd(BmdExam(patient_id="QA", regions=(_region("neck", "0.5"), _region("total_hip", "0.6")))) is None


def test_scan_time_from_study_date_and_time():
    assert qa.scan_time("20261203", "081500.123") == datetime(2026, 12, 3, 8, 15)
    assert qa.scan_time("20261203", "") == datetime(2026, 12, 3)
    assert qa.scan_time("", "0815") is None
