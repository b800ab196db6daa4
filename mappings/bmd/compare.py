"""Serial comparison of two exams by BMD (docs/domain.md section 4, ISCD).

A change is significant only beyond the least significant change (LSC =
2.77 x precision error at 95% confidence) for that site and scanner.
Defaults are the ISCD minimum acceptable precision figures (5.3% spine,
5.0% total hip, 6.9% femoral neck); a site's own LSC in g/cm2 overrides
them, per scanner (serial number or model) or for all scanners.  Only exams
from the same scanner model, or models declared cross-calibrated, are
compared; BMD is compared, never T-scores.  A different serial number of
the same model is a different scanner: it needs cross-calibration too.
A change equal to the LSC is significant ("equals or exceeds", ISCD).
The interval since the previous exam is reported and checked against the
UK minimum of two years, unless the reporter asked for an earlier scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, Mapping

from mappings.bmd import models as m
from mappings.bmd.models import BmdExam, RegionResult

SPINE_TOTALS = "spine"  # key for any lumbar spine total in LSC tables
DEFAULT_LSC_PERCENT: Mapping[str, Decimal] = {
    SPINE_TOTALS: Decimal("5.3"),
    m.TOTAL_HIP: Decimal("5.0"),
    m.NECK: Decimal("6.9"),
}
COMPARED_SITES = (m.NECK, m.TOTAL_HIP, m.RADIUS_33, m.TOTAL_BODY, m.TOTAL_BODY_LESS_HEAD)
MIN_INTERVAL_YEARS = 2  # UK guidance (docs/domain.md section 4): repeat DXA not sooner than two years


@dataclass(frozen=True, slots=True)
class LscTable:
    """LSC per site: absolute g/cm2 (by scanner, then any) before the percent defaults.

    Site keys are site names, with ``"spine"`` standing for any lumbar total.
    ``per_scanner`` is keyed by device serial number or model name.
    """

    percent: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_LSC_PERCENT))
    absolute: Mapping[str, Decimal] = field(default_factory=dict)
    per_scanner: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)

    def lookup(self, site: str, exam: BmdExam) -> tuple[Decimal | None, Decimal | None]:
        """(absolute g/cm2, percent) LSC for ``site`` on ``exam``'s scanner."""
        key = SPINE_TOTALS if len(m.spine_vertebrae(site)) > 1 else site
        for scanner in (exam.device.serial, exam.device.model):
            table = self.per_scanner.get(scanner) if scanner else None
            if table:
                for k in (site, key):
                    if k in table:
                        return Decimal(table[k]), None
        for k in (site, key):
            if k in self.absolute:
                return Decimal(self.absolute[k]), None
        pct = self.percent.get(site, self.percent.get(key))
        return None, (Decimal(pct) if pct is not None else None)


@dataclass(frozen=True, slots=True)
class SiteChange:
    """BMD change at one site between two exams."""

    site: str
    laterality: str | None
    previous_bmd: Decimal
    current_bmd: Decimal
    change: Decimal  # g/cm2, current - previous
    change_percent: Decimal  # rounded to 0.1
    lsc: Decimal | None  # g/cm2 when given, else None
    lsc_percent: Decimal | None
    significant: bool | None  # None: no LSC known for the site

    @property
    def name(self) -> str:
        return m.site_name(self.site, self.laterality)

    @property
    def direction(self) -> str:
        if not self.significant:
            return "no significant change" if self.significant is False else "change of unknown significance"
        return "significant increase" if self.change > 0 else "significant decrease"


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of comparing two exams."""

    comparable: bool
    reason: str
    previous_date: str = ""
    changes: tuple[SiteChange, ...] = ()
    interval_days: int | None = None  # from the previous exam to this one
    interval_note: str = ""  # the interval, and whether it is short of the minimum
    interval_short: bool = False  # under the minimum and not requested

    @property
    def significant_loss(self) -> bool:
        return any(c.significant and c.change < 0 for c in self.changes)


def _same_scanner(a: BmdExam, b: BmdExam, cross_calibrated: Iterable[Iterable[str]]) -> tuple[bool, str]:
    """(comparable, why): the same machine, or scanners declared cross-calibrated.

    Same model and manufacturer with different serial numbers is two
    machines (ISCD: cross-calibrate when a scanner is replaced or added).
    Without serial numbers on both exams the model decides.
    """
    ma, mb = a.device.model.strip().lower(), b.device.model.strip().lower()
    sa, sb = a.device.serial.strip().lower(), b.device.serial.strip().lower()
    same_model = bool(ma) and ma == mb and a.device.manufacturer.strip().lower() == b.device.manufacturer.strip().lower()
    for group in cross_calibrated:
        names = {str(x).strip().lower() for x in group}
        if (sa and sb and {sa, sb} <= names) or (ma and mb and {ma, mb} <= names):
            return True, "cross-calibrated scanners"
    if same_model and sa and sb:
        if sa == sb:
            return True, "same scanner"
        return False, f"not comparable: another {a.device.model} (serial {b.device.serial}, then {a.device.serial}) without cross-calibration"
    if same_model:
        return True, "same scanner model (serial number not recorded on both exams)"
    return False, (
        f"not comparable: different scanners ({b.device.manufacturer} {b.device.model} "
        f"then {a.device.manufacturer} {a.device.model}) without cross-calibration"
    )


def _days(earlier: str, later: str) -> int | None:
    try:
        d0 = date(int(earlier[:4]), int(earlier[4:6]), int(earlier[6:8]))
        d1 = date(int(later[:4]), int(later[4:6]), int(later[6:8]))
    except (ValueError, IndexError):
        return None
    return (d1 - d0).days


def interval(previous_date: str, current_date: str, *, requested: bool = False, minimum_years: int = MIN_INTERVAL_YEARS) -> tuple[int | None, str, bool]:
    """(days, note, short): the interval since the previous exam and whether it
    is under the UK minimum (two years, docs/domain.md section 4) without the reporter's request."""
    days = _days(previous_date, current_date)
    if days is None:
        return None, "Interval since the previous examination unknown (date missing).", False
    years, months = divmod(round(days / 30.4375), 12)
    span = f"{years} year{'s' if years != 1 else ''} {months} month{'s' if months != 1 else ''}" if years else f"{months} month{'s' if months != 1 else ''}"
    try:
        due = date(int(previous_date[:4]) + minimum_years, int(previous_date[4:6]), min(int(previous_date[6:8]), 28))
        short = date(int(current_date[:4]), int(current_date[4:6]), int(current_date[6:8])) < due
    except ValueError:
        short = days < minimum_years * 365
    if not short:
        return days, f"Interval since the previous examination: {span}.", False
    if requested:
        return days, f"Interval since the previous examination: {span}, under {minimum_years} years, at the reporter's request.", False
    return days, (
        f"Interval since the previous examination: {span}, under the {minimum_years}-year minimum (UK guidance): "
        "changes may not exceed the LSC; confirm the early scan was requested."
    ), True


def _comparable_sites(exam: BmdExam) -> dict[tuple[str, str | None], RegionResult]:
    return {
        r.key: r
        for r in exam.regions
        if r.bmd is not None and not r.excluded and (r.site in COMPARED_SITES or len(m.spine_vertebrae(r.site)) > 1)
    }


def compare_exams(
    current: BmdExam,
    previous: BmdExam,
    *,
    lsc: LscTable = LscTable(),
    cross_calibrated: Iterable[Iterable[str]] = (),
    early_repeat_requested: bool = False,
) -> Comparison:
    """Per-site BMD change from ``previous`` to ``current``.

    ``cross_calibrated`` lists groups of model names (or serials) whose
    results may be compared with each other; ``early_repeat_requested``
    says the reporter asked for a scan before the two-year minimum.
    """
    days, note, short = interval(previous.exam_date, current.exam_date, requested=early_repeat_requested)
    timing = dict(interval_days=days, interval_note=note, interval_short=short)
    ok, why = _same_scanner(current, previous, cross_calibrated)
    if not ok:
        return Comparison(False, why, previous.exam_date, **timing)
    before, now = _comparable_sites(previous), _comparable_sites(current)
    changes = []
    for key, cur in now.items():
        prev = before.get(key)
        if prev is None:
            continue
        assert cur.bmd is not None and prev.bmd is not None
        delta = cur.bmd - prev.bmd
        pct = delta * 100 / prev.bmd if prev.bmd else Decimal(0)
        lsc_abs, lsc_pct = lsc.lookup(cur.site, current)
        if lsc_abs is not None:
            significant: bool | None = abs(delta) >= lsc_abs  # "equals or exceeds" (ISCD)
        elif lsc_pct is not None:
            significant = abs(pct) >= lsc_pct
        else:
            significant = None
        changes.append(
            SiteChange(
                site=cur.site,
                laterality=cur.laterality,
                previous_bmd=prev.bmd,
                current_bmd=cur.bmd,
                change=delta,
                change_percent=pct.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP),
                lsc=lsc_abs,
                lsc_percent=lsc_pct,
                significant=significant,
            )
        )
    if not changes:
        return Comparison(False, "not comparable: no site measured on both exams", previous.exam_date, **timing)
    return Comparison(True, why, previous.exam_date, tuple(changes), **timing)
