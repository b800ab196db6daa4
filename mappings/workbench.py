"""What the reporting workbench's pages show, from exam rows (README "The
reporting workbench").  Pure: no I/O; the clock is an argument.

The queue is the exams awaiting a report, oldest first, with how long each
has waited; the site table says for each region whether the diagnosis used
it and, when not, why (ISCD Official Positions: Ward's area and the
trochanter never decide; excluded vertebrae are left out of the lumbar total).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable

STATUS_TEXT = {"P": "awaiting report", "F": "final", "C": "corrected"}


@dataclass(frozen=True, slots=True)
class QueueFilter:
    scanner: str = ""  # part of the scanner's manufacturer, model or serial (any case)
    date: str = ""  # the exam date, YYYYMMDD
    status: str = "P"  # P (awaiting), F, C, or "" for all
    flags: str = ""  # "": any; "yes": only exams with flags; "no": only those without

    @classmethod
    def from_query(cls, q: dict[str, str]) -> "QueueFilter":
        status = q.get("status", "P")
        flags = q.get("flags", "")
        return cls(
            scanner=q.get("scanner", "").strip()[:64],
            date="".join(c for c in q.get("date", "") if c.isdigit())[:8],
            status=status if status in ("P", "F", "C", "") else "P",
            flags=flags if flags in ("yes", "no") else "",
        )


@dataclass(frozen=True, slots=True)
class QueueEntry:
    exam_id: int
    patient_id: str
    patient_name: str
    exam_date: str  # YYYY-MM-DD
    accession: str
    scanner: str
    status: str
    category: str
    flags: tuple[str, ...]
    waited: str
    created_at: str


@dataclass(frozen=True, slots=True)
class SiteRow:
    name: str
    bmd: str
    t_score: str
    z_score: str
    use: str  # lowest, used, in <spine>, excluded, not used
    why: str  # for a row not used: the reason


def scanner_label(exam: dict | None) -> str:
    d = (exam or {}).get("device") or {}
    label = " ".join(x for x in (d.get("manufacturer", ""), d.get("model", "")) if x)
    return f"{label} ({d['serial']})" if d.get("serial") else (label or "unknown scanner")


def display_date(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if len(da) == 8 and da.isdigit() else da


def display_name(pn: str) -> str:
    """A DICOM PN (Family^Given^Middle) as "Family, Given Middle"."""
    parts = [p for p in pn.split("=")[0].split("^")]
    family, given = (parts[0] if parts else ""), " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else family or given


def waited(since_iso: str, now: datetime) -> str:
    """How long since ``since_iso`` (ISO 8601 with offset): "3 d 4 h", "2 h 05 min", "12 min"."""
    try:
        since = datetime.fromisoformat(since_iso)
    except (TypeError, ValueError):
        return "-"
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    minutes = max(0, int((now - since).total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins:02d} min"
    return f"{mins} min"


def exam_flags(exam: dict | None, analysis: dict | None) -> tuple[str, ...]:
    """The reader's and the classifier's flags, each once."""
    flags = list((exam or {}).get("flags") or ()) + list(((analysis or {}).get("classification") or {}).get("flags") or ())
    return tuple(dict.fromkeys(str(f) for f in flags))


def queue(rows: Iterable[Any], f: QueueFilter, now: datetime) -> list[QueueEntry]:
    """Exam rows (``gateway.store.exams.ExamRow``) as queue entries: parsed
    exams matching the filter, oldest first."""
    out = []
    for r in rows:
        if r.state != "parsed":
            continue
        status = r.report_status or "P"
        if f.status and status != f.status:
            continue
        if f.date and r.exam_date != f.date:
            continue
        scanner = scanner_label(r.exam)
        if f.scanner and f.scanner.lower() not in scanner.lower():
            continue
        flags = exam_flags(r.exam, r.analysis)
        if (f.flags == "yes" and not flags) or (f.flags == "no" and flags):
            continue
        c = (r.analysis or {}).get("classification") or {}
        out.append(
            QueueEntry(
                exam_id=r.id, patient_id=r.patient_id, patient_name=display_name((r.exam or {}).get("patient_name", "")),
                exam_date=display_date(r.exam_date), accession=r.accession, scanner=scanner, status=STATUS_TEXT.get(status, status),
                category=c.get("category_text", ""), flags=flags, waited=waited(r.created_at, now), created_at=r.created_at,
            )
        )
    out.sort(key=lambda e: (e.created_at, e.exam_id))
    return out


def _v(value: Decimal | None) -> str:
    return "-" if value is None else str(value)


def site_rows(exam: Any, classification: Any, uses: Iterable[str]) -> list[SiteRow]:
    """The per-site table of a ``BmdExam`` with the classifier's use of each row."""
    excluded_vertebrae = set(classification.excluded_vertebrae) if classification is not None else set()
    rows = []
    for r, use in zip(exam.regions, uses):
        why = ""
        if use == "excluded":
            if r.excluded:
                why = "excluded at the scanner"
            elif r.site in excluded_vertebrae:  # the classifier's own words (mappings/bmd/classify.py)
                said = [x for x in (classification.flags if classification is not None else ()) if x.startswith(r.site + " ")]
                why = said[0] if said else "vertebra excluded from the lumbar total"
            why = "; ".join([why, *r.flags]) if r.flags else why
        elif use == "not used":
            why = "; ".join(r.flags) or "not a diagnostic site for this classification"
        elif use.startswith("in "):
            why = f"counted in the lumbar total {use[3:]}"
        rows.append(SiteRow(r.name, _v(r.bmd), _v(r.t_score), _v(r.z_score), use, why))
    return rows


def context_rows(ctx: Any, sex: str = "") -> list[tuple[str, str]]:
    """The clinical context as (label, value) lines; "not stated" where nothing was given."""

    def yes_no(v: bool | None) -> str:
        return "not stated" if v is None else ("yes" if v else "no")

    meno = "not stated" if ctx.menopausal is None else ("postmenopausal" if ctx.menopausal else "premenopausal")
    rows = []
    if sex.upper()[:1] != "M":
        rows.append(("Menopausal status", meno))
    rows += [
        ("Fragility fracture", yes_no(ctx.fragility_fracture)),
        ("Vertebral fracture", yes_no(ctx.vertebral_fracture)),
        ("Fracture history", "; ".join(ctx.fracture_history) or "not stated"),
        ("Glucocorticoids", yes_no(ctx.glucocorticoids)),
        ("Other risk factors and medication", "; ".join(ctx.risk_factors) or "not stated"),
        ("Height", f"{ctx.height_cm} cm" if ctx.height_cm is not None else "not stated"),
        ("Weight", f"{ctx.weight_kg} kg" if ctx.weight_kg is not None else "not stated"),
        ("BMI", f"{ctx.bmi} kg/m2" if ctx.bmi is not None else "not known"),
    ]
    return rows


def lines(text: str) -> list[str]:
    """A textarea's non-empty lines."""
    return [x.strip() for x in (text or "").splitlines() if x.strip()]


def context_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The radiographer's form as a ``PUT /api/exams/{id}/context`` body:
    only what was filled in; yes/no selects as booleans, textareas as lists."""
    out: dict[str, Any] = {}
    for key in ("menopausal", "fragility_fracture", "vertebral_fracture", "glucocorticoids", "hyperparathyroidism", "over_table_limit"):
        value = form.get(key, "")
        if value in ("yes", "no"):
            out[key] = value == "yes"
    for key in ("height_cm", "weight_kg"):
        value = form.get(key, "").strip()
        if value:
            out[key] = value
    for key in ("indication", "vfa_result"):
        value = form.get(key, "").strip()
        if value:
            out[key] = value
    for key in ("technical_notes", "fracture_history", "risk_factors"):
        got = lines(form.get(key, ""))
        if got:
            out[key] = got
    return out
