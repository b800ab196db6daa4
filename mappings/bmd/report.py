"""Report text for one exam from a template (DOMAIN.md section 4, UK report content).

The default template has: status, technical validity and limitations, the
results table, the diagnostic category, change since the previous exam,
FRAX, dose and machine identification.  A site passes its own template text
(:class:`string.Template`, ``$name`` placeholders; see :data:`PLACEHOLDERS`);
an unknown placeholder raises :class:`ReportTemplateError`.
"""

from __future__ import annotations

from decimal import Decimal
from string import Template

from mappings.bmd.classify import Classification
from mappings.bmd.compare import Comparison
from mappings.bmd.models import BmdExam, DoseRecord, FraxResult

STATUS_TEXT = {"P": "PRELIMINARY", "F": "FINAL", "C": "CORRECTED"}
_STATUS_ALIASES = {"preliminary": "P", "final": "F", "corrected": "C", "amended": "C"}

DEFAULT_TEMPLATE = """\
DXA BONE DENSITOMETRY REPORT ($status)
Patient: $patient_name   ID: $patient_id   Born: $birth_date   Sex: $sex   Age: $age
Examination: $exam_date $exam_time   Accession: $accession

Technical validity and limitations:
$technical

Results (reference: $reference):
$results_table

Diagnostic category ($score_type-score, lowest site: $lowest_site):
$diagnosis

Change since previous examination:
$comparison

Fracture risk (FRAX, 10-year probability):
$frax

Further investigation:
$prompts

Radiation dose: $dose
Machine: $machine
"""

PLACEHOLDERS = (
    "status", "patient_name", "patient_id", "birth_date", "sex", "age", "exam_date", "exam_time",
    "accession", "technical", "reference", "results_table", "score_type", "lowest_site", "diagnosis",
    "comparison", "frax", "prompts", "dose", "machine",
)  # fmt: skip


class ReportTemplateError(ValueError):
    """A site template names a placeholder the report does not provide."""


def status_code(status: str) -> str:
    """"P", "F" or "C" from a code or a word (preliminary / final / corrected)."""
    s = status.strip()
    code = s.upper() if s.upper() in STATUS_TEXT else _STATUS_ALIASES.get(s.lower())
    if code is None:
        raise ValueError(f"unknown report status {status!r}; expected P, F or C")
    return code


def _date(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if len(da) >= 8 and da[:8].isdigit() else da


def _time(tm: str) -> str:
    return f"{tm[:2]}:{tm[2:4]}" if len(tm) >= 4 and tm[:4].isdigit() else tm


def _v(value: Decimal | None) -> str:
    return "-" if value is None else str(value)


def _bullets(lines) -> str:
    lines = [x for x in lines if x]
    return "\n".join(f"- {x}" for x in lines) if lines else "- None."


def results_table(exam: BmdExam) -> str:
    """A fixed-width table of every region, values exactly as reported."""
    rows = [("Region", "BMD g/cm2", "T-score", "Z-score", "")]
    for r in exam.regions:
        rows.append((r.name, _v(r.bmd), _v(r.t_score), _v(r.z_score), "excluded" if r.excluded else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _diagnosis(c: Classification) -> str:
    lines = [c.category_text + "."]
    if c.lowest is not None:
        lines.append(f"Lowest {c.score_type}-score {c.lowest_score} at {c.lowest.name}.")
    return "\n".join(lines + list(c.notes))


def _comparison(comp: Comparison | None) -> str:
    if comp is None:
        return "No previous examination available."
    if not comp.comparable:
        return f"Previous examination {_date(comp.previous_date)}: {comp.reason}."
    lines = [f"Since {_date(comp.previous_date)}:"]
    for ch in comp.changes:
        sign = "+" if ch.change >= 0 else ""
        lsc = f"LSC {ch.lsc} g/cm2" if ch.lsc is not None else (f"LSC {ch.lsc_percent}%" if ch.lsc_percent is not None else "no LSC set")
        lines.append(f"- {ch.name}: {ch.previous_bmd} -> {ch.current_bmd} g/cm2 ({sign}{ch.change} g/cm2, {sign}{ch.change_percent}%; {lsc}): {ch.direction}.")
    return "\n".join(lines)


def _frax(f: FraxResult | None) -> str:
    if f is None:
        return "Not provided by the scanner."
    parts = []
    if f.major_with_bmd is not None or f.hip_with_bmd is not None:
        parts.append(f"With BMD: major osteoporotic {_v(f.major_with_bmd)}%, hip {_v(f.hip_with_bmd)}%.")
    if f.major_without_bmd is not None or f.hip_without_bmd is not None:
        parts.append(f"Without BMD: major osteoporotic {_v(f.major_without_bmd)}%, hip {_v(f.hip_without_bmd)}%.")
    return "\n".join(parts) or "Not provided by the scanner."


def _dose(d: DoseRecord | None) -> str:
    if d is None:
        return "not recorded"
    parts = []
    if d.dap is not None:
        parts.append(f"DAP {d.dap} {d.dap_units}".rstrip())
    if d.entrance_dose is not None:
        parts.append(f"entrance dose {d.entrance_dose} {d.entrance_dose_units}".rstrip())
    if d.dose_rp_total is not None:
        parts.append(f"dose (RP) {d.dose_rp_total} {d.dose_rp_units}".rstrip())
    return ", ".join(parts) + (f" (from {d.source})" if d.source else "") if parts else "not recorded"


def report_values(
    exam: BmdExam,
    classification: Classification,
    comparison: Comparison | None = None,
    *,
    status: str = "P",
    technical_notes: tuple[str, ...] = (),
) -> dict[str, str]:
    """The placeholder values of a report."""
    c = classification
    technical = list(technical_notes) + list(c.flags)
    if c.excluded_vertebrae and not any("excluded" in t for t in technical):
        technical.append(f"Vertebrae excluded: {', '.join(c.excluded_vertebrae)}.")
    if not technical:
        technical.append("No technical limitations recorded.")
    d = exam.device
    prompts = list(c.prompts)
    if comparison is not None and comparison.significant_loss:
        prompts.append("Significant BMD loss since the previous examination: consider investigation if unexplained.")
    return {
        "status": STATUS_TEXT[status_code(status)],
        "patient_name": exam.patient_name.replace("^", " ").strip(),
        "patient_id": exam.patient_id,
        "birth_date": _date(exam.patient_birth_date),
        "sex": exam.patient_sex or "-",
        "age": "-" if exam.patient_age is None else str(exam.patient_age),
        "exam_date": _date(exam.exam_date),
        "exam_time": _time(exam.exam_time),
        "accession": exam.accession_number,
        "technical": _bullets(technical),
        "reference": " ".join(x for x in (exam.reference_database, exam.reference_population) if x) or "not stated",
        "results_table": results_table(exam),
        "score_type": c.score_type,
        "lowest_site": c.lowest.name if c.lowest else "none",
        "diagnosis": _diagnosis(c),
        "comparison": _comparison(comparison),
        "frax": _frax(exam.frax),
        "prompts": _bullets(prompts),
        "dose": _dose(exam.dose),
        "machine": " ".join(x for x in (d.manufacturer, d.model) if x)
        + (f", serial {d.serial}" if d.serial else "")
        + (f", software {d.software}" if d.software else ""),
    }


def render_report(
    exam: BmdExam,
    classification: Classification,
    comparison: Comparison | None = None,
    *,
    status: str = "P",
    template: str | None = None,
    technical_notes: tuple[str, ...] = (),
) -> str:
    """The report text; ``template`` is a site's own text with ``$placeholders``."""
    values = report_values(exam, classification, comparison, status=status, technical_notes=technical_notes)
    try:
        return Template(template if template is not None else DEFAULT_TEMPLATE).substitute(values)
    except KeyError as exc:
        raise ReportTemplateError(f"unknown placeholder ${exc.args[0]} in report template") from None
    except ValueError as exc:
        raise ReportTemplateError(f"bad report template: {exc}") from None
