"""Serial comparison of two exams by BMD (DOMAIN.md section 4, ISCD).

A change is significant only beyond the least significant change (LSC =
2.77 x precision error at 95% confidence) for that site and scanner.
Defaults are the ISCD minimum acceptable precision figures (5.3% spine,
5.0% total hip, 6.9% femoral neck); a site's own LSC in g/cm2 overrides
them, per scanner (serial number or model) or for all scanners.  Only exams
from the same scanner model, or models declared cross-calibrated, are
compared; BMD is compared, never T-scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
COMPARED_SITES = (m.NECK, m.TOTAL_HIP, m.RADIUS_33, m.TOTAL_BODY)


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

    @property
    def significant_loss(self) -> bool:
        return any(c.significant and c.change < 0 for c in self.changes)


def _same_scanner(a: BmdExam, b: BmdExam, cross_calibrated: Iterable[Iterable[str]]) -> bool:
    ma, mb = a.device.model.strip().lower(), b.device.model.strip().lower()
    if ma and ma == mb and a.device.manufacturer.strip().lower() == b.device.manufacturer.strip().lower():
        return True
    for group in cross_calibrated:
        names = {str(x).strip().lower() for x in group}
        if {ma, mb} <= names or {a.device.serial.lower(), b.device.serial.lower()} <= names:
            return True
    return False


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
) -> Comparison:
    """Per-site BMD change from ``previous`` to ``current``.

    ``cross_calibrated`` lists groups of model names (or serials) whose
    results may be compared with each other.
    """
    if not _same_scanner(current, previous, cross_calibrated):
        return Comparison(
            False,
            f"not comparable: different scanners ({previous.device.manufacturer} {previous.device.model} "
            f"then {current.device.manufacturer} {current.device.model}) without cross-calibration",
            previous.exam_date,
        )
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
            significant: bool | None = abs(delta) > lsc_abs
        elif lsc_pct is not None:
            significant = abs(pct) > lsc_pct
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
        return Comparison(False, "not comparable: no site measured on both exams", previous.exam_date)
    return Comparison(True, "same scanner model" if current.device.model == previous.device.model else "cross-calibrated scanners", previous.exam_date, tuple(changes))
