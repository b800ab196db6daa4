"""Scanner QA from phantom scans: baseline, control rules, status (pure).

The service guidance (README "Running a DXA service", QA): a phantom is
scanned daily before patients, at least three times a week, and the
operators act when a scanner fails its QA check.

Each scanner (Device Serial Number) has a series of phantom BMD values.  The
first ``baseline_scans`` give the baseline mean and SD; each later scan is
checked by

* ``tolerance``: beyond +/- ``tolerance_percent`` of the baseline mean (the
  manufacturers' phantom control limit, 1.5 % for Hologic's spine phantom);
* ``run``: ``RUN_LENGTH`` (6) consecutive scans on one side of the mean --
  Westgard's "6x" rule (Westgard JO et al., Clin Chem 1981;27:493, a
  multi-rule Shewhart chart), a shift too small for the tolerance;
* ``cusum``: a two-sided tabular CUSUM of the standardised deviations with
  reference value k = 0.5 SD and decision interval h = 5 SD (Page,
  Biometrika 1954;41:100; Montgomery, Introduction to Statistical Quality
  Control, 9.1), for a slow drift; each deviation is clipped at 3 SD
  (Lucas and Crosier's robust CUSUM, Commun Stat Theory Methods
  1982;11:2669) so one scan within tolerance never signals alone; restarted
  after it signals.

Status of a scanner: ``baseline`` (fewer scans than ``baseline_scans``),
``fail`` (its last scan broke a rule), ``overdue`` (no scan for
``overdue_days``), else ``ok``.
"""

from __future__ import annotations

import fnmatch
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from mappings.bmd.models import SPINE_TOTAL, BmdExam, spine_vertebrae

RUN_LENGTH = 6  # Westgard 6x
CUSUM_K = 0.5  # reference value, in SD
CUSUM_H = 5.0  # decision interval, in SD
CUSUM_CLIP = 3.0  # robust CUSUM: |z| counted up to this
MIN_SD_PERCENT = 0.1  # SD floor, % of the mean: identical baseline values still give a finite z

BASELINE, OK, FAIL, OVERDUE = "baseline", "ok", "fail", "overdue"
STATUSES = (BASELINE, OK, FAIL, OVERDUE)


def is_phantom(patient_id: str, globs: list[str] | tuple[str, ...]) -> bool:
    """Whether ``patient_id`` matches one of the phantom Patient ID globs (case-sensitive)."""
    pid = (patient_id or "").strip()
    return bool(pid) and any(fnmatch.fnmatchcase(pid, g) for g in globs)


def phantom_bmd(exam: BmdExam) -> tuple[str, Decimal] | None:
    """The phantom's one BMD: the spine total with the most vertebrae, else
    the only region with a BMD; None when neither is there."""
    with_bmd = [r for r in exam.regions if r.bmd is not None and not r.excluded]
    spine = [r for r in with_bmd if len(spine_vertebrae(r.site)) > 1 or r.site == SPINE_TOTAL]
    if spine:
        best = max(spine, key=lambda r: (len(spine_vertebrae(r.site)), r.site == SPINE_TOTAL))
        return best.site, best.bmd
    if len(with_bmd) == 1:
        return with_bmd[0].site, with_bmd[0].bmd
    return None


def scan_time(exam_date: str, exam_time: str) -> datetime | None:
    """Study Date (DA) and Time (TM) as a naive datetime; None without a date."""
    d, t = (exam_date or "").strip(), (exam_time or "").strip().split(".")[0].replace(":", "")
    try:
        day = datetime.strptime(d, "%Y%m%d")
    except ValueError:
        return None
    t = (t + "000000")[:6] if t.isdigit() else "000000"
    try:
        return day.replace(hour=int(t[:2]), minute=int(t[2:4]), second=int(t[4:6]))
    except ValueError:
        return day


@dataclass(frozen=True, slots=True)
class QaScan:
    """One phantom scan: when (scan time, aware), and its BMD."""

    at: datetime
    bmd: float


@dataclass(frozen=True, slots=True)
class ScanCheck:
    """A post-baseline scan checked against the baseline."""

    at: datetime
    bmd: float
    deviation_percent: float
    rules: tuple[str, ...]  # the rules it broke (empty: passed)
    cusum_high: float
    cusum_low: float

    @property
    def passed(self) -> bool:
        return not self.rules


@dataclass(frozen=True, slots=True)
class QaSummary:
    status: str
    scans: int
    baseline_mean: float | None
    baseline_sd: float | None
    last: QaScan | None
    last_deviation_percent: float | None
    last_rules: tuple[str, ...]
    checks: tuple[ScanCheck, ...]


def evaluate(
    scans: list[QaScan], now: datetime, *, baseline_scans: int, tolerance_percent: float, overdue_days: float
) -> QaSummary:
    """The scanner's QA status and every post-baseline check (scans in time order)."""
    scans = sorted(scans, key=lambda s: s.at)
    last = scans[-1] if scans else None
    overdue = last is None or now - last.at > timedelta(days=overdue_days)
    if len(scans) < baseline_scans or baseline_scans < 1:
        return QaSummary(OVERDUE if overdue and last else BASELINE, len(scans), None, None, last, None, (), ())
    base = [s.bmd for s in scans[:baseline_scans]]
    mean = statistics.fmean(base)
    sd = statistics.stdev(base) if len(base) > 1 else 0.0
    sd_used = max(sd, abs(mean) * MIN_SD_PERCENT / 100) or 1e-9
    checks: list[ScanCheck] = []
    hi = lo = 0.0
    run, side = 0, 0
    for s in scans[baseline_scans:]:
        dev = (s.bmd - mean) / mean * 100 if mean else 0.0
        rules = []
        if abs(dev) > tolerance_percent:
            rules.append("tolerance")
        this_side = (s.bmd > mean) - (s.bmd < mean)
        run = run + 1 if this_side and this_side == side else (1 if this_side else 0)
        side = this_side
        if run >= RUN_LENGTH:
            rules.append("run")
        z = max(-CUSUM_CLIP, min(CUSUM_CLIP, (s.bmd - mean) / sd_used))
        hi, lo = max(0.0, hi + z - CUSUM_K), max(0.0, lo - z - CUSUM_K)
        signalled = hi > CUSUM_H or lo > CUSUM_H
        if signalled:
            rules.append("cusum")
        checks.append(ScanCheck(s.at, s.bmd, round(dev, 3), tuple(rules), round(hi, 3), round(lo, 3)))
        if signalled:
            hi = lo = 0.0
    final = checks[-1] if checks else None
    if final is not None and not final.passed:
        status = FAIL
    elif overdue:
        status = OVERDUE
    else:
        status = OK
    return QaSummary(
        status, len(scans), mean, sd, last, final.deviation_percent if final else None,
        final.rules if final else (), tuple(checks),
    )
