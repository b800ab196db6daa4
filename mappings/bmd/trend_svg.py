"""BMD per site over time, as a stand-alone SVG (the reporting workbench's trend).

Pure: exams in, SVG text out (no clock, no I/O, no script, no external
asset).  One panel per site the current exam measured and the serial
comparison uses (lumbar spine totals, femoral neck, total hip, 33% radius,
total body; mappings/bmd/compare.py ``COMPARED_SITES``), each with its own
BMD axis, because the sites' values differ by more than their changes.

The least significant change (LSC = 2.77 x precision error, ISCD; the
gateway's ``reports.lsc_*`` settings as :class:`~mappings.bmd.compare.LscTable`
looks them up for the current exam's scanner) is drawn as a band of
+/- LSC around the *baseline*: the earliest exam comparable with the current
one (same scanner, or cross-calibrated).  A point outside the band has
changed significantly since the baseline; the report text itself states the
change since the previous exam.  A percent LSC becomes g/cm2 at the
baseline's BMD.  Exams from a scanner the current one is not comparable
with are drawn hollow and never serve as baseline (ISCD: compare only the
same or cross-calibrated scanners).

Accessible: ``role="img"``, ``<title>`` and ``<desc>`` (which lists every
value in words), axis labels, and a text label on every point.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

from mappings.bmd import models as m
from mappings.bmd.compare import COMPARED_SITES, LscTable, compare_exams
from mappings.bmd.models import BmdExam

WIDTH = 640
PANEL_HEIGHT = 190
TOP = 48  # room for the title
LEFT, RIGHT = 70, 24  # plot margins inside a panel
PANEL_TOP, PANEL_BOTTOM = 28, 44


@dataclass(frozen=True, slots=True)
class TrendPoint:
    exam_date: str  # DA
    bmd: Decimal  # g/cm2
    comparable: bool = True  # with the current exam (same or cross-calibrated scanner)
    current: bool = False


@dataclass(frozen=True, slots=True)
class TrendSite:
    site: str
    laterality: str | None
    name: str
    points: tuple[TrendPoint, ...]  # oldest first
    lsc: Decimal | None = None  # g/cm2 (absolute, or the percent at the baseline's BMD)
    lsc_source: str = ""  # "g/cm2" or "5.3%": how the LSC was given

    @property
    def baseline(self) -> TrendPoint | None:
        return next((p for p in self.points if p.comparable), None)


def _trended(exam: BmdExam):
    return [
        r for r in exam.regions
        if r.bmd is not None and not r.excluded and (r.site in COMPARED_SITES or len(m.spine_vertebrae(r.site)) > 1)
    ]  # fmt: skip


def trend_sites(
    current: BmdExam, earlier: Iterable[BmdExam], *, lsc: LscTable = LscTable(), cross_calibrated: Iterable[Iterable[str]] = ()
) -> tuple[TrendSite, ...]:
    """The series to draw: the current exam's trended sites, with every earlier
    exam's BMD at the same site (and side), oldest first."""
    groups = [tuple(g) for g in cross_calibrated]
    before = sorted((e for e in earlier if e.exam_date and e.exam_date < (current.exam_date or "99999999")), key=lambda e: e.exam_date)
    comparable = {id(e): compare_exams(current, e, lsc=lsc, cross_calibrated=groups).comparable for e in before}
    out = []
    for r in _trended(current):
        points = []
        for e in before:
            prev = e.region(r.site, r.laterality)
            if prev is not None and prev.bmd is not None and not prev.excluded:
                points.append(TrendPoint(e.exam_date, prev.bmd, comparable[id(e)]))
        points.append(TrendPoint(current.exam_date, r.bmd, True, True))  # type: ignore[arg-type]
        lsc_abs, lsc_pct = lsc.lookup(r.site, current)
        site = TrendSite(r.site, r.laterality, r.name, tuple(points))
        base = site.baseline
        if lsc_abs is not None:
            site = TrendSite(r.site, r.laterality, r.name, tuple(points), lsc_abs, "g/cm2")
        elif lsc_pct is not None and base is not None:
            value = (base.bmd * lsc_pct / 100).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
            site = TrendSite(r.site, r.laterality, r.name, tuple(points), value, f"{lsc_pct}%")
        out.append(site)
    return tuple(out)


def _day(da: str) -> int:
    try:
        return date(int(da[:4]), int(da[4:6]), int(da[6:8])).toordinal()
    except (ValueError, IndexError):
        return 0


def _iso(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if len(da) >= 8 else da


def _f(x: float) -> str:
    """Coordinates with one decimal, no exponent: the same input, the same text."""
    return f"{x:.1f}"


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def _panel(site: TrendSite, top: float) -> tuple[list[str], str]:
    """(SVG elements, words for <desc>) of one site's panel."""
    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = top + PANEL_TOP, top + PANEL_HEIGHT - PANEL_BOTTOM  # plot area, y0 at the top
    base = site.baseline
    values = [float(p.bmd) for p in site.points]
    if base is not None and site.lsc is not None:
        values += [float(base.bmd - site.lsc), float(base.bmd + site.lsc)]
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.15, 0.02)
    lo, hi = lo - pad, hi + pad
    days = [_day(p.exam_date) for p in site.points]
    d_lo, d_hi = min(days), max(days)

    def x(day: int) -> float:
        return (x0 + x1) / 2 if d_hi == d_lo else x0 + (day - d_lo) * (x1 - x0) / (d_hi - d_lo)

    def y(v: float) -> float:
        return y1 - (v - lo) * (y1 - y0) / (hi - lo)

    title_id = f"site-{site.site}-{site.laterality or 'n'}".replace(",", "_")
    out = [f'<g id={quoteattr(title_id)}>']
    out.append(f'<text x="{x0}" y="{_f(top + 18)}" font-size="14" font-weight="bold">{escape(site.name)}</text>')
    out.append(f'<rect x="{x0}" y="{_f(y0)}" width="{x1 - x0}" height="{_f(y1 - y0)}" fill="none" stroke="#888888" stroke-width="1"/>')
    words = [f"{site.name}:"]
    if base is not None and site.lsc is not None:
        band_hi, band_lo = y(float(base.bmd + site.lsc)), y(float(base.bmd - site.lsc))
        out.append(
            f'<rect class="lsc-band" x="{x0}" y="{_f(band_hi)}" width="{x1 - x0}" height="{_f(band_lo - band_hi)}" fill="#cfe3f7" fill-opacity="0.7">'
            f"<title>Least significant change: {escape(str(base.bmd))} +/- {escape(str(site.lsc))} g/cm2 around the baseline of {_iso(base.exam_date)}</title></rect>"
        )
        out.append(f'<line class="baseline" x1="{x0}" x2="{x1}" y1="{_f(y(float(base.bmd)))}" y2="{_f(y(float(base.bmd)))}" stroke="#4a78a8" stroke-dasharray="4 3"/>')
        src = f" ({site.lsc_source})" if site.lsc_source and site.lsc_source != "g/cm2" else ""
        words.append(f"baseline {_iso(base.exam_date)} {base.bmd} g/cm2, least significant change +/- {site.lsc} g/cm2{src};")
    else:
        words.append("no least significant change set for this site;")
    # axes: BMD ticks on the left, exam dates below
    for v in _ticks(lo, hi):
        yy = _f(y(v))
        out.append(f'<line x1="{x0 - 4}" x2="{x0}" y1="{yy}" y2="{yy}" stroke="#444444"/>')
        out.append(f'<text x="{x0 - 6}" y="{yy}" font-size="10" text-anchor="end" dominant-baseline="middle">{v:.3f}</text>')
    out.append(
        f'<text class="axis-label" x="{_f(x0 - 52)}" y="{_f((y0 + y1) / 2)}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 {_f(x0 - 52)} {_f((y0 + y1) / 2)})">BMD (g/cm²)</text>'
    )
    out.append(f'<text class="axis-label" x="{_f((x0 + x1) / 2)}" y="{_f(y1 + 34)}" font-size="11" text-anchor="middle">Exam date</text>')
    pts = " ".join(f"{_f(x(d))},{_f(y(float(p.bmd)))}" for d, p in zip(days, site.points))
    if len(site.points) > 1:
        out.append(f'<polyline points="{pts}" fill="none" stroke="#1f3b5a" stroke-width="1.5"/>')
    for d, p in zip(days, site.points):
        px, py = _f(x(d)), _f(y(float(p.bmd)))
        outside = base is not None and site.lsc is not None and p.comparable and abs(p.bmd - base.bmd) >= site.lsc
        fill = "#ffffff" if not p.comparable else ("#c0392b" if outside else "#1f3b5a")
        r = 5 if p.current else 4
        note = "" if p.comparable else ", other scanner: not comparable"
        sig = ", outside the LSC band" if outside else ""
        label = f"{_iso(p.exam_date)}: {p.bmd} g/cm2{note}{sig}"
        out.append(f'<circle cx="{px}" cy="{py}" r="{r}" fill="{fill}" stroke="#1f3b5a" stroke-width="1.5"><title>{escape(label)}</title></circle>')
        out.append(f'<text x="{px}" y="{_f(y(float(p.bmd)) - 9)}" font-size="10" text-anchor="middle">{escape(str(p.bmd))}</text>')
        out.append(f'<text x="{px}" y="{_f(y1 + 16)}" font-size="10" text-anchor="middle">{_iso(p.exam_date)}</text>')
        words.append(label + ";")
    out.append("</g>")
    return out, " ".join(words)


def trend_svg(sites: Sequence[TrendSite], *, title: str = "BMD trend") -> str:
    """The SVG document: a panel per site, or a one-line notice when there is nothing to plot."""
    height = TOP + max(1, len(sites)) * PANEL_HEIGHT
    body: list[str] = []
    descs: list[str] = []
    for i, site in enumerate(sites):
        elements, words = _panel(site, TOP + i * PANEL_HEIGHT)
        body += elements
        descs.append(words)
    if not sites:
        body.append(f'<text x="{LEFT}" y="{TOP + 40}" font-size="13">No BMD results to plot.</text>')
        descs.append("No BMD results to plot.")
    desc = (
        "Bone mineral density per site over time, this exam and the earlier ones in the store. "
        "Shaded band: the least significant change around the baseline (the earliest comparable exam). "
        + " ".join(descs)
    )
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-labelledby="trend-title trend-desc" font-family="sans-serif">'
        f'<title id="trend-title">{escape(title)}</title><desc id="trend-desc">{escape(desc)}</desc>'
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>'
        f'<text x="{LEFT}" y="28" font-size="16" font-weight="bold">{escape(title)}</text>'
    )
    return head + "".join(body) + "</svg>\n"
