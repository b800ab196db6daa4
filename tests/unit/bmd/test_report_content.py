"""Issue 14 defect 9 (and the report side of 1, 3, 7): what a DXA report says."""

import dataclasses
from decimal import Decimal as D

from mappings.bmd import classify as cl
from mappings.bmd.report import ReportDetails, render_report, row_use
from mappings.clinical_context import ClinicalContext
from tests.unit.bmd.pipeline import exam_and_report

CONTEXT = ClinicalContext(
    fragility_fracture=True,
    fracture_history=("Left wrist, fall from standing, 2019",),
    glucocorticoids=True,
    risk_factors=("Glucocorticoid use: prednisolone 7.5 mg",),
    height_cm=D("160.0"),
    weight_kg=D("55.0"),
    indication="Postmenopausal, wrist fracture",
    technical_notes=("Movement artefact at L4",),
    vfa_result="No vertebral fracture T4-L4.",
)
DETAILS = ReportDetails(
    referrer="Jones^Pat^^Dr",
    context=CONTEXT,
    reporter="Ann Reporter",
    reporter_role="Consultant radiologist",
    signed_on="2024-05-02",
    reporter_comment="Compared with images: agree.",
)


def _report(details=DETAILS, **kw):
    exam, _, comp, _ = exam_and_report()
    c = cl.classify(exam, age=66, sex="F", menopausal=True, context=details.context)
    return exam, c, render_report(exam, c, comp, status="F", details=details, **kw)


def test_report_content_per_seed_001_reporting():
    """Seed 001 "Reporting" (NOS guidance): referrer, indication, risk factors and
    fracture history, height, weight and BMI, VFA result, recommended interval,
    operator's technical notes, the reporter's comment, role and date, FRAX with
    and without BMD, and management wording."""
    _, _, text = _report()
    for part in (
        "Referrer: Dr Pat Jones",
        "Indication: Postmenopausal, wrist fracture",
        "Fracture history: Left wrist, fall from standing, 2019.",
        "Risk factors: Glucocorticoid use: prednisolone 7.5 mg.",
        "Height 160.0 cm, weight 55.0 kg, BMI 21.5 kg/m2.",
        "Vertebral fracture assessment: No vertebral fracture T4-L4.",
        "Recommended interval to the next scan: not sooner than 2 years",
        "Operator: Movement artefact at L4",
        "Reporter's comment: Compared with images: agree.",
        "Reported by: Ann Reporter, Consultant radiologist, 2024-05-02",
        "With BMD: major osteoporotic 18.0%, hip 4.5%.",
        "Without BMD: major osteoporotic 20.1%, hip 6.30%.",
        "Established osteoporosis. Bone-protective treatment is recommended (NOGG",
        "Established (severe) osteoporosis.",
    ):
        assert part in text, part


def test_management_wording_comes_from_the_site_template():
    """Seed 001 "Reporting": optional individualised management advice; the NOGG-based
    wording is the site's to edit (``reports.management_file``)."""
    details = dataclasses.replace(DETAILS, management={cl.ESTABLISHED: "Refer to the bone clinic (local pathway)."})
    _, _, text = _report(details)
    assert "Management:\nRefer to the bone clinic (local pathway)." in text


def test_unsigned_report_says_it_is_not_yet_reported():
    """IR(ME)R / seed 000: every exposure has a clinical evaluation by an entitled person:
    an unsigned report says it has not been reported."""
    _, _, text = _report(ReportDetails())
    assert "Not yet reported" in text and "Referrer: not stated" in text


def test_report_table_marks_rows_not_used_for_diagnosis():
    """ISCD Official Positions: diagnose on the lowest of spine (valid vertebrae),
    femoral neck and total hip; never Ward's area; excluded vertebrae are named.
    The table says which rows the diagnosis used."""
    exam, c, text = _report()
    marks = dict(zip((r.name for r in exam.regions), row_use(exam, c)))
    assert marks["Vertebra L3"] == "excluded"
    assert marks["Vertebra L1"] == "in L1,L2,L4"
    assert marks["Lumbar spine L1,L2,L4"] == "used"
    assert marks["Left femoral neck"] == "lowest"
    assert marks["Left ward's area"] == "not used"
    assert marks["Left radius 33%"] == "not used"
    assert "Left ward's area       0.400      -3.2     -2.1     not used" in text


def test_report_says_scores_are_rounded_before_classification():
    """ISCD Official Positions: report T- and Z-scores to one decimal place; the
    report says the category was given on the rounded score."""
    _, _, text = _report()
    assert "rounded to one decimal place before classification (ISCD)" in text


def test_report_gives_the_interval_since_the_previous_scan():
    """Seed 001 / UK guidance: repeat DXA not sooner than two years unless asked;
    the interval is in the report."""
    _, _, text = _report()
    assert "Interval since the previous examination: 2 years 0 months." in text


def test_site_template_without_signature_still_names_the_reporter():
    """Seed 000 (IR(ME)R duty holders): a signed report names the entitled
    person who evaluated it, whatever the site's template."""
    exam, c, text = _report(template="$status: $diagnosis")
    assert text.rstrip().endswith("Reported by: Ann Reporter, Consultant radiologist, 2024-05-02")
