"""Report text for one exam from a template (docs/domain.md section 4).

The default template has what UK guidance asks of a DXA report: status,
referrer and indication, clinical information (risk factors, fracture
history, height, weight and BMI), technical validity and limitations
(operator's notes, flags), the results table (rows not used for the
diagnosis marked), the diagnostic category and why, the VFA result, change
since the previous exam and the interval, FRAX with and without BMD,
management wording (NOGG, from a site-editable table), further
investigation, the recommended interval to the next scan, dose, machine,
and the reporter's comment, name, role and date.  A site passes its own
template text (:class:`string.Template`, ``$name`` placeholders; see
:data:`PLACEHOLDERS`); an unknown placeholder raises
:class:`ReportTemplateError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from string import Template
from typing import Mapping

from mappings.bmd import classify as cl
from mappings.bmd import models as m
from mappings.bmd.classify import Classification
from mappings.bmd.compare import Comparison
from mappings.bmd.models import BmdExam, DoseRecord, FraxResult
from mappings.clinical_context import ClinicalContext

STATUS_TEXT = {"P": "PRELIMINARY", "F": "FINAL", "C": "CORRECTED"}
_STATUS_ALIASES = {"preliminary": "P", "final": "F", "corrected": "C", "amended": "C"}

DEFAULT_TEMPLATE = """\
DXA BONE DENSITOMETRY REPORT ($status)
Patient: $patient_name   ID: $patient_id   Born: $birth_date   Sex: $sex   Age: $age
Examination: $exam_date $exam_time   Accession: $accession
Referrer: $referrer
Indication: $indication

Clinical information:
$clinical

Technical validity and limitations:
$technical

Results (reference: $reference):
$results_table

Diagnostic category ($score_type-score, lowest site: $lowest_site):
$diagnosis

Vertebral fracture assessment: $vfa

Change since previous examination:
$comparison

Fracture risk (FRAX, 10-year probability):
$frax

Management:
$management

Further investigation:
$prompts

Recommended interval to the next scan: $recommended_interval

Radiation dose: $dose
Machine: $machine

$signature
"""

PLACEHOLDERS = (
    "status", "patient_name", "patient_id", "birth_date", "sex", "age", "exam_date", "exam_time",
    "accession", "technical", "reference", "results_table", "score_type", "lowest_site", "diagnosis",
    "comparison", "frax", "prompts", "dose", "machine", "referrer", "indication", "clinical", "vfa",
    "management", "recommended_interval", "signature", "reporter", "reporter_role", "signed_on",
    "reporter_comment", "height", "weight", "bmi",
)  # fmt: skip

#: NOGG-based management wording per diagnostic category (a site replaces any
#: of them with ``reports.management_file``).  NOGG 2021: treatment decisions
#: rest on FRAX probability with the intervention thresholds; a prior fragility
#: fracture in a postmenopausal woman or a man of 50 or over is a reason to
#: consider treatment without further assessment.
DEFAULT_MANAGEMENT: Mapping[str, str] = {
    cl.NORMAL: "BMD is normal. Base treatment decisions on FRAX and the NOGG intervention thresholds; "
    "lifestyle advice: calcium and vitamin D, weight-bearing exercise, falls prevention.",
    cl.OSTEOPENIA: "Low bone mass. Assess fracture probability with FRAX (with BMD) and treat according to "
    "the NOGG intervention thresholds; lifestyle advice and falls assessment.",
    cl.OSTEOPOROSIS: "Osteoporosis. Consider bone-protective treatment in line with NOGG; check for secondary "
    "causes; ensure adequate calcium and vitamin D.",
    cl.ESTABLISHED: "Established osteoporosis. Bone-protective treatment is recommended (NOGG: a prior fragility "
    "fracture is a reason to treat); refer to the fracture liaison service; check for secondary causes.",
    cl.WITHIN_RANGE: "BMD within the expected range for age. Treatment decisions rest on the clinical context.",
    cl.BELOW_RANGE: "BMD below the expected range for age: investigate secondary causes; osteoporosis is not "
    "diagnosed on BMD alone at this age.",
    cl.INDETERMINATE: "No management advice: no usable result.",
    cl.NO_AGE: "No management advice until the patient's age is confirmed.",
}
DEFAULT_RECOMMENDED_INTERVAL = "not sooner than 2 years, if the result would change management (UK guidance)"


@dataclass(frozen=True, slots=True)
class ReportDetails:
    """What the report says beyond the scan: the order, the clinical context,
    the reporter and the site's wording."""

    referrer: str = ""
    context: ClinicalContext = field(default_factory=ClinicalContext)
    reporter: str = ""
    reporter_role: str = ""
    signed_on: str = ""  # YYYY-MM-DD, the day the reporter signed
    reporter_comment: str = ""  # the reporter's own words on signing
    amendment: str = ""  # what a corrected version changes
    management: Mapping[str, str] = field(default_factory=dict)  # category -> wording (site overrides)
    recommended_interval: str = ""

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


def person(pn: str) -> str:
    """A DICOM/HL7 person name (Family^Given^Middle^Prefix^Suffix) as read aloud."""
    parts = (pn.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (p.strip() for p in parts)
    return " ".join(x for x in (prefix, given, middle, family, suffix) if x)


def _v(value: Decimal | None) -> str:
    return "-" if value is None else str(value)


def _bullets(lines) -> str:
    lines = [x for x in lines if x]
    return "\n".join(f"- {x}" for x in lines) if lines else "- None."


def row_use(exam: BmdExam, c: Classification | None) -> list[str]:
    """Per region: how the diagnosis used it -- "lowest", "used", "in <spine total>",
    "excluded" or "not used" (ISCD: Ward's, trochanter, excluded vertebrae never decide)."""
    if c is None:
        return ["excluded" if r.excluded else "" for r in exam.regions]
    spine_vs = m.spine_vertebrae(c.spine.site) if c.spine is not None and c.used(c.spine) else frozenset()
    marks = []
    for r in exam.regions:
        if c.lowest is not None and r == c.lowest:
            marks.append("lowest")
        elif c.used(r):
            marks.append("used")
        elif r.excluded or r.site in c.excluded_vertebrae:
            marks.append("excluded")
        elif r.site in m.VERTEBRAE and int(r.site[1]) in spine_vs and r.repeat in (0, c.spine.repeat):  # type: ignore[union-attr]
            marks.append(f"in {c.spine.site}")  # type: ignore[union-attr]
        else:
            marks.append("not used")
    return marks


def results_table(exam: BmdExam, classification: Classification | None = None) -> str:
    """A fixed-width table of every region, values exactly as reported, with
    the use the diagnosis made of each row."""
    rows = [("Region", "BMD g/cm2", "T-score", "Z-score", "Diagnosis")]
    for r, use in zip(exam.regions, row_use(exam, classification)):
        rows.append((r.name, _v(r.bmd), _v(r.t_score), _v(r.z_score), use))
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
    interval = f"\n{comp.interval_note}" if comp.interval_note else ""
    if not comp.comparable:
        return f"Previous examination {_date(comp.previous_date)}: {comp.reason}.{interval}"
    lines = [f"Since {_date(comp.previous_date)}:" + interval]
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


def _clinical(ctx: ClinicalContext, sex: str) -> list[str]:
    lines = []
    if ctx.fracture_history:
        lines.append("Fracture history: " + "; ".join(ctx.fracture_history) + ".")
    elif ctx.fragility_fracture is not None:
        lines.append("Fragility fracture: " + ("yes." if ctx.fragility_fracture else "none reported."))
    if ctx.vertebral_fracture:
        lines.append("Vertebral fracture reported.")
    if ctx.risk_factors:
        lines.append("Risk factors: " + "; ".join(ctx.risk_factors) + ".")
    elif ctx.glucocorticoids is not None:
        lines.append("Glucocorticoids: " + ("yes." if ctx.glucocorticoids else "no."))
    if ctx.hyperparathyroidism:
        lines.append("Hyperparathyroidism.")
    if ctx.forearm_indicated:
        lines.append("Forearm measurement requested.")
    if ctx.over_table_limit:
        lines.append("Weight over the scanner table limit.")
    if ctx.menopausal is not None and sex == "F":
        lines.append("Postmenopausal." if ctx.menopausal else "Premenopausal.")
    body = []
    if ctx.height_cm is not None:
        body.append(f"height {ctx.height_cm} cm")
    if ctx.weight_kg is not None:
        body.append(f"weight {ctx.weight_kg} kg")
    if ctx.bmi is not None:
        body.append(f"BMI {ctx.bmi} kg/m2")
    if body:
        lines.append(body[0][0].upper() + ", ".join(body)[1:] + ".")
    return lines or ["None provided with the request."]


def _vfa(exam: BmdExam, ctx: ClinicalContext) -> str:
    if ctx.vfa_result:
        return ctx.vfa_result
    return "images acquired; result not recorded." if exam.has_vfa else "not performed."


def _signature(d: ReportDetails) -> str:
    lines = []
    if d.amendment.strip():
        lines.append(f"Amendment: {d.amendment.strip()}")
    if d.reporter_comment.strip():
        lines.append(f"Reporter's comment: {d.reporter_comment.strip()}")
    if d.reporter.strip():
        who = d.reporter.strip() + (f", {d.reporter_role.strip()}" if d.reporter_role.strip() else "")
        lines.append(f"Reported by: {who}" + (f", {d.signed_on}" if d.signed_on else ""))
    else:
        lines.append("Not yet reported: preliminary results for review.")
    return "\n".join(lines)


def report_values(
    exam: BmdExam,
    classification: Classification,
    comparison: Comparison | None = None,
    *,
    status: str = "P",
    technical_notes: tuple[str, ...] = (),
    details: ReportDetails | None = None,
) -> dict[str, str]:
    """The placeholder values of a report."""
    c = classification
    dt = details or ReportDetails()
    ctx = dt.context
    technical = list(technical_notes) + [f"Operator: {n}" for n in ctx.technical_notes] + list(c.flags)
    if c.excluded_vertebrae and not any("excluded" in t for t in technical):
        technical.append(f"Vertebrae excluded: {', '.join(c.excluded_vertebrae)}.")
    if comparison is not None and comparison.interval_short:
        technical.append(comparison.interval_note)
    if not technical:
        technical.append("No technical limitations recorded.")
    d = exam.device
    prompts = list(c.prompts)
    if comparison is not None and comparison.significant_loss:
        prompts.append("Significant BMD loss since the previous examination: consider investigation if unexplained.")
    management = {**DEFAULT_MANAGEMENT, **dict(dt.management)}
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
        "referrer": person(dt.referrer) or "not stated",
        "indication": ctx.indication or "not stated",
        "clinical": _bullets(_clinical(ctx, (exam.patient_sex or "").upper()[:1])),
        "technical": _bullets(technical),
        "reference": " ".join(x for x in (exam.reference_database, exam.reference_population) if x) or "not stated",
        "results_table": results_table(exam, c),
        "score_type": c.score_type or "no",
        "lowest_site": c.lowest.name if c.lowest else "none",
        "diagnosis": _diagnosis(c),
        "vfa": _vfa(exam, ctx),
        "comparison": _comparison(comparison),
        "frax": _frax(exam.frax),
        "management": management.get(c.category, ""),
        "prompts": _bullets(prompts),
        "recommended_interval": dt.recommended_interval or DEFAULT_RECOMMENDED_INTERVAL,
        "dose": _dose(exam.dose),
        "machine": " ".join(x for x in (d.manufacturer, d.model) if x)
        + (f", serial {d.serial}" if d.serial else "")
        + (f", software {d.software}" if d.software else ""),
        "signature": _signature(dt),
        "reporter": dt.reporter,
        "reporter_role": dt.reporter_role,
        "signed_on": dt.signed_on,
        "reporter_comment": dt.reporter_comment,
        "height": "-" if ctx.height_cm is None else f"{ctx.height_cm} cm",
        "weight": "-" if ctx.weight_kg is None else f"{ctx.weight_kg} kg",
        "bmi": "-" if ctx.bmi is None else f"{ctx.bmi} kg/m2",
    }


def render_report(
    exam: BmdExam,
    classification: Classification,
    comparison: Comparison | None = None,
    *,
    status: str = "P",
    template: str | None = None,
    technical_notes: tuple[str, ...] = (),
    details: ReportDetails | None = None,
) -> str:
    """The report text; ``template`` is a site's own text with ``$placeholders``."""
    values = report_values(exam, classification, comparison, status=status, technical_notes=technical_notes, details=details)
    text = template if template is not None else DEFAULT_TEMPLATE
    if details is not None and details.reporter and not any(f"{p}{n}" in text for p in ("$", "${") for n in ("signature", "reporter")):
        text = text.rstrip("\n") + "\n\n$signature\n"  # IR(ME)R: a signed report always names its reporter
    try:
        return Template(text).substitute(values)
    except KeyError as exc:
        raise ReportTemplateError(f"unknown placeholder ${exc.args[0]} in report template") from None
    except ValueError as exc:
        raise ReportTemplateError(f"bad report template: {exc}") from None
