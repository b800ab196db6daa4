import pytest

from mappings.bmd.classify import classify
from mappings.bmd.report import ReportTemplateError, render_report
from tests.unit.bmd.pipeline import exam_and_report


def test_default_report_has_every_section():
    exam, c, comp, text = exam_and_report("F")
    assert text.startswith("DXA BONE DENSITOMETRY REPORT (FINAL)")
    for part in (
        "Technical validity and limitations",
        "Vertebrae excluded: L3",
        "Lumbar spine L1,L2,L4  0.864",
        "Left femoral neck",
        "Osteoporosis.",
        "Lowest T-score -2.5 at Left femoral neck",
        "Since 2022-05-01:",
        "significant decrease",
        "With BMD: major osteoporotic 18.0%, hip 4.5%",
        "Radiation dose: not recorded",
        "Machine: HOLOGIC Horizon A, serial 200123, software 13.6.0.5:5",
        "reference: 2012 BMDCS/NHANES White Female",
        "Significant BMD loss",
    ):
        assert part in text, part


@pytest.mark.parametrize("status,word", [("P", "PRELIMINARY"), ("final", "FINAL"), ("C", "CORRECTED")])
def test_status_shown(status, word):
    assert f"({word})" in exam_and_report(status)[3]


def test_unknown_status_refused():
    exam, c, comp, _ = exam_and_report()
    with pytest.raises(ValueError):
        render_report(exam, c, status="X")


def test_site_template():
    exam, c, comp, _ = exam_and_report()
    text = render_report(exam, c, comp, template="$status|$patient_id|$lowest_site|$score_type")
    assert text == "PRELIMINARY|PAT-001|Left femoral neck|T"
    with pytest.raises(ReportTemplateError, match="nosuch"):
        render_report(exam, c, template="$nosuch")


def test_z_score_report_does_not_say_osteoporosis():
    exam, _, _, _ = exam_and_report()
    c = classify(exam, age=40, sex="F", menopausal=False, fragility_fracture=False)
    text = render_report(exam, c)
    assert "Within the expected range for age" in text and "Osteoporosis." not in text
    assert "not diagnosed on BMD alone" in text
