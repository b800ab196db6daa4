"""Service KPIs of a DXA service (docs/domain.md section 1 item 6, service
data): referrals, did-not-attend and
cancellations, waiting times (referral to scan), time to report, report to
delivered, the WHO category mix, prompts for further investigation and the
dose per exam type against its reference level (docs/domain.md section 5), per
month and per scanner.

Pure: the gateway turns store rows into :class:`Episode` values (aware
datetimes in local time) and passes "today".
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from dataclasses import dataclass
from datetime import date, datetime

# Worklist statuses (mappings.worklist), repeated here as plain strings.
_SCHEDULED, _CANCELLED, _DISCONTINUED, _HELD = "SCHEDULED", "CANCELLED", "DISCONTINUED", "HELD"

DAY = 86400.0
# Histogram buckets (seconds) for the waits: 1 h to 13 weeks; 6 weeks is the
# NHS diagnostic waiting-time standard (DM01).
WAIT_BUCKETS = tuple(h * 3600.0 for h in (1, 4, 8, 24, 48, 72, 168, 336, 504, 1008, 2184))
INTERVALS = ("referral_to_scan", "scan_to_report", "report_to_delivered")
ALL = "all"


@dataclass(frozen=True, slots=True)
class DoseFinding:
    """An exam's dose as checked against the DRLs (mappings/bmd/drl.py DoseCheck)."""

    exam_type: str
    units: str
    value: float
    over: bool | None  # None: not compared (no level for its scans, unknown units)


@dataclass(frozen=True, slots=True)
class Episode:
    """One order's way through the service, or one scan without an order."""

    status: str  # worklist status; "" for a scan that had no order
    scheduled_date: date | None
    station: str  # the scheduled station AE
    referred_at: datetime | None
    scanned_at: datetime | None  # MPPS start, else the first object's arrival
    scanner: str  # the AE that performed it (MPPS or C-STORE calling AE)
    reported_at: datetime | None  # first report released
    delivered_at: datetime | None  # that report confirmed by its last destination
    category: str = ""  # diagnostic category (mappings.bmd.classify), "" when none
    prompts: int = 0  # prompts for further investigation in the analysis
    dose: DoseFinding | None = None  # the exam's dose against its reference level

    @property
    def day(self) -> date | None:
        """The day the episode counts for: its scan, else its scheduled day."""
        return self.scanned_at.date() if self.scanned_at else self.scheduled_date

    @property
    def where(self) -> str:
        return self.scanner or self.station or "unknown"

    def waits(self) -> tuple[float | None, float | None, float | None]:
        """Seconds for each of INTERVALS; None when a step is missing or out of order."""
        return (_seconds(self.referred_at, self.scanned_at), _seconds(self.scanned_at, self.reported_at), _seconds(self.reported_at, self.delivered_at))


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    seconds = (b - a).total_seconds()
    return seconds if seconds >= 0 else None


def findings(analysis: dict | None) -> tuple[str, int]:
    """(diagnostic category, prompts for further investigation) of a stored
    exam analysis: the classification's prompts (low Z-score, fragility
    fracture) and, as in the report (mappings.bmd.report), one for a
    significant BMD loss since the previous exam."""
    analysis = analysis or {}
    classification = analysis.get("classification") or {}
    prompts = len(classification.get("prompts") or ())
    changes = (analysis.get("comparison") or {}).get("changes") or ()
    if any(c.get("significant") and str(c.get("change_g_cm2", "")).startswith("-") for c in changes):
        prompts += 1
    return classification.get("category") or "", prompts


def dose_finding(analysis: dict | None) -> DoseFinding | None:
    """The dose check of a stored exam analysis (``analysis["dose"]``), or None."""
    d = (analysis or {}).get("dose") or {}
    if not d or d.get("value") is None:
        return None
    try:
        value = float(d["value"])
    except (TypeError, ValueError):
        return None
    return DoseFinding(str(d.get("exam_type") or "unknown"), str(d.get("units") or ""), value, d.get("over"))


def _doses(findings: list[DoseFinding]) -> dict:
    """Dose per exam type (docs/domain.md section 5): count, median in the level's
    units, how many over their DRL and how many not compared; a type seen in
    several units gets one entry per units, ``"<type> [<units>]"``."""
    groups: dict[tuple[str, str], list[DoseFinding]] = {}
    for f in findings:
        groups.setdefault((f.exam_type, f.units), []).append(f)
    types = [t for t, _ in groups]
    out = {}
    for (kind, units), fs in sorted(groups.items()):
        v = sorted(f.value for f in fs)
        n = len(v)
        median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
        key = kind if types.count(kind) == 1 else f"{kind} [{units}]"
        out[key] = {
            "units": units, "count": n, "median": round(median, 6),
            "over_drl": sum(1 for f in fs if f.over), "not_compared": sum(1 for f in fs if f.over is None),
        }  # fmt: skip
    return out


def _summary(values: list[float]) -> dict:
    """Count, median, 90th percentile (nearest rank) and mean, in days (and the
    median in seconds, for the short waits such as report to delivered)."""
    if not values:
        return {"count": 0, "median_days": None, "p90_days": None, "mean_days": None, "median_seconds": None}
    v = sorted(values)
    n = len(v)
    median = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    p90 = v[max(0, math.ceil(0.9 * n) - 1)]
    return {
        "count": n,
        "median_days": round(median / DAY, 3),
        "p90_days": round(p90 / DAY, 3),
        "mean_days": round(sum(v) / n / DAY, 3),
        "median_seconds": round(median, 1),
    }


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _group(episodes: list[Episode], waits: list[tuple], today: date) -> dict:
    ordered = [e for e in episodes if e.status]
    scanned = [e for e in episodes if e.scanned_at is not None]
    # Did not attend: scheduled for a day that has ended, and no scan.
    dna = [e for e in ordered if e.scanned_at is None and e.status == _SCHEDULED and e.scheduled_date and e.scheduled_date < today]
    cancelled = [e for e in ordered if e.scanned_at is None and e.status in (_CANCELLED, _DISCONTINUED)]
    held = [e for e in ordered if e.status == _HELD]
    categorised = [e for e in scanned if e.category]
    categories: dict[str, int] = {}
    for e in categorised:
        categories[e.category] = categories.get(e.category, 0) + 1
    prompted = [e for e in categorised if e.prompts]
    attended_orders = sum(1 for e in ordered if e.scanned_at is not None)
    out = {
        "referrals": len(ordered),
        "scanned": len(scanned),
        "unscheduled_scans": len(scanned) - attended_orders,
        "did_not_attend": len(dna),
        "did_not_attend_percent": _percent(len(dna), attended_orders + len(dna)),
        "cancelled": len(cancelled),
        "cancelled_percent": _percent(len(cancelled), len(ordered)),
        "held": len(held),
        "reported": sum(1 for e in scanned if e.reported_at is not None),
        "delivered": sum(1 for e in scanned if e.delivered_at is not None),
        "who_categories": dict(sorted(categories.items())),
        "who_categories_percent": {k: _percent(n, len(categorised)) for k, n in sorted(categories.items())},
        "further_investigation_prompted": len(prompted),
        "further_investigation_percent": _percent(len(prompted), len(categorised)),
        "dose": _doses([e.dose for e in scanned if e.dose is not None]),
    }
    for i, name in enumerate(INTERVALS):
        out[name] = _summary([w[i] for w in waits if w[i] is not None])
    return out


def _month(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def compute(episodes: list[Episode], date_from: date, date_to: date, today: date) -> dict:
    """The KPIs of the episodes whose day falls in [date_from, date_to]:
    the whole range, each month and each scanner."""
    chosen = [(e, e.waits()) for e in episodes if e.day is not None and date_from <= e.day <= date_to]
    months: dict[str, list] = {}
    scanners: dict[str, list] = {}
    for pair in chosen:
        months.setdefault(_month(pair[0].day), []).append(pair)
        scanners.setdefault(pair[0].where, []).append(pair)

    def group(pairs: list) -> dict:
        return _group([e for e, _ in pairs], [w for _, w in pairs], today)

    return {
        "from": date_from.isoformat(),
        "to": date_to.isoformat(),
        "total": group(chosen),
        "months": {m: group(ps) for m, ps in sorted(months.items())},
        "scanners": {s: group(ps) for s, ps in sorted(scanners.items())},
    }


_CSV_FIELDS = (
    "referrals", "scanned", "unscheduled_scans", "did_not_attend", "did_not_attend_percent", "cancelled",
    "cancelled_percent", "held", "reported", "delivered", "further_investigation_prompted", "further_investigation_percent",
)  # fmt: skip


def to_csv(kpis: dict, categories: tuple[str, ...]) -> str:
    """One row for the whole range, one per month, one per scanner."""
    header = ["month", "scanner", *_CSV_FIELDS]
    for name in INTERVALS:
        header += [f"{name}_count", f"{name}_median_days", f"{name}_p90_days", f"{name}_median_seconds"]
    header += [f"who_{c}" for c in categories]
    rows = [(ALL, ALL, kpis["total"])]
    rows += [(m, ALL, g) for m, g in kpis["months"].items()]
    rows += [(ALL, s, g) for s, g in kpis["scanners"].items()]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180
    writer.writerow(header)
    for month, scanner, g in rows:
        line = [month, scanner, *("" if g[f] is None else g[f] for f in _CSV_FIELDS)]
        for name in INTERVALS:
            s = g[name]
            line += [s["count"], *("" if s[f] is None else s[f] for f in ("median_days", "p90_days", "median_seconds"))]
        line += [g["who_categories"].get(c, 0) for c in categories]
        writer.writerow(line)
    return buf.getvalue()


def histogram(values: list[float], buckets: tuple[float, ...] = WAIT_BUCKETS) -> tuple[list[tuple[float, int]], float]:
    """Cumulative Prometheus buckets (upper bound, count) ending with +inf, and the sum."""
    ordered = sorted(values)
    out = [(float(le), bisect.bisect_right(ordered, le)) for le in buckets]
    out.append((math.inf, len(values)))
    return out, float(sum(values))


def intervals(episodes: list[Episode]) -> dict[str, list[float]]:
    """Every episode's waits, by interval name (for the /metrics histograms)."""
    waits = [e.waits() for e in episodes]
    return {name: [w[i] for w in waits if w[i] is not None] for i, name in enumerate(INTERVALS)}
