"""The seam of issues 12.3 and 14.4: what the readers keep (a spine given only as a
total, a site measured twice, total body less head), the classifier uses."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D

import pytest

from mappings.bmd import classify as cl
from mappings.bmd import codes
from mappings.bmd import models as m
from mappings.bmd.collect import mark_repeats
from mappings.bmd.extract import extract_bmd_exam
from mappings.bmd.labels import BODY, DEFAULT_TABLES
from mappings.bmd.models import BmdExam
from mappings.bmd.report import render_report
from tests.unit.bmd.helpers import region
from tests.unit.bmd.test_result_carriers import _hologic_image, _text

WHITE_FEMALE = dict(reference_database="2012 BMDCS/NHANES", reference_population="White Female")
SPINE_HEADER = ["Region", "BMD[g/cm<sup><small>2</small></sup>]", "T-score", "Z-score"]


def exam(*regions, **over) -> BmdExam:
    return BmdExam(patient_id="P", regions=tuple(regions), **{**WHITE_FEMALE, **over})


def hips(t_neck="-0.8", t_total="-0.5"):
    return (region("neck", "L", "0.80", t_neck, "-0.4"), region("total_hip", "L", "0.90", t_total, "-0.2"))


def classify(e: BmdExam, age=70, sex="F"):
    return cl.classify(e, age=age, sex=sex, menopausal=True if sex == "F" else None)


# -- (a) a spine reported only as a total -----------------------------------------


@pytest.mark.parametrize("site", ["L2-L4", "L1-L3", m.SPINE_TOTAL])
def test_spine_given_only_as_a_total_is_used_named_and_flagged(site):
    """ISCD 2023 Adult Official Positions (lumbar spine: use L1-L4, else the
    evaluable vertebrae -- three, else two; never one): a scanner that printed
    the spine only as a total (L2-L4, L1-L3, or a "Total" whose vertebrae it did
    not state) gave a valid spine result.  It is used for diagnosis as reported
    -- here it is the lowest site and decides -- named in the notes, and flagged
    because the vertebrae and their exclusions could not be checked."""
    c = classify(exam(region(site, None, "0.70", "-3.1", "-2.4"), *hips()))
    assert c.spine is not None and c.spine.site == site and c.used(c.spine)
    assert c.lowest is c.spine and c.category == cl.OSTEOPOROSIS and str(c.lowest_score) == "-3.1"
    name = m.site_name(site)
    assert any(name in n and "without per-vertebra results" in n for n in c.notes)
    assert any(f"only as a total ({name})" in f and "could not be checked" in f for f in c.flags)
    assert "Lumbar spine not used for diagnosis." not in c.notes


def test_spine_total_without_vertebrae_reaches_the_report_and_the_coded_result():
    """ISCD 2023 Adult Official Positions (the report states the vertebrae used) and
    seed 001 "Reporting" (technical validity): a Hologic report image with only a
    bare spine "Total" row is read, diagnosed on it, and the report names it
    "vertebrae not stated" with the flag; the lumbar-spine LOINC goes on it, as
    on any spine total the diagnosis used."""
    text = _text({"AnalProtocol": "Spine"}, [SPINE_HEADER, ["Total", "0.700", "-2.7", "-1.9"]])
    e = extract_bmd_exam(_hologic_image(text))
    e = dataclasses.replace(e, regions=(*e.regions, *hips()), **WHITE_FEMALE)
    c = classify(e)
    assert c.spine is not None and c.spine.site == m.SPINE_TOTAL and c.lowest is c.spine
    report = render_report(e, c, technical_notes=tuple(e.flags))
    assert "Lowest T-score -2.7 at Lumbar spine total (vertebrae not stated)." in report
    assert "only as a total (Lumbar spine total (vertebrae not stated))" in report
    assert codes.loinc_codes(m.SPINE_TOTAL, None, m.SPINE_TOTAL) == codes.loinc_codes("L1-L4", None, "L1-L4") != {}
    assert codes.scan_of_site(m.SPINE_TOTAL) == codes.SPINE


def test_l1_l4_total_preferred_to_a_shorter_one_and_stated_vertebrae_to_unstated():
    """ISCD 2023 Adult Official Positions: use L1-L4 when it can be used; three
    vertebrae only if four cannot.  Among totals without vertebra rows the
    L1-L4 total is the spine result even when L2-L4 is lower; a total whose
    vertebrae are stated comes before one whose vertebrae are not."""
    c = classify(exam(region("L2-L4", None, "0.60", "-3.0", "-2.0"), region("L1-L4", None, "0.70", "-2.0", "-1.0"), *hips()))
    assert c.spine is not None and c.spine.site == "L1-L4"
    assert not any(r.site == "L2-L4" for r in c.sites_used)
    c = classify(exam(region(m.SPINE_TOTAL, None, "0.60", "-3.0", "-2.0"), region("L2-L4", None, "0.70", "-2.0", "-1.0"), *hips()))
    assert c.spine is not None and c.spine.site == "L2-L4"


def test_a_spine_total_marked_excluded_is_not_used():
    """ISCD 2023 Adult Official Positions (exclude what is affected by artefact): a
    total the scanner itself marked excluded is not used; the hip decides."""
    c = classify(exam(region("L2-L4", None, "0.60", "-3.0", "-2.0", excluded=True), *hips(t_neck="-1.5")))
    assert c.spine is None and c.lowest is not None and c.lowest.site == m.NECK
    assert "Lumbar spine not used for diagnosis." in c.notes


# -- (b) repeated spine totals and repeated sites ---------------------------------


def test_repeated_spine_totals_all_shown_the_lowest_diagnoses_and_a_flag():
    """ISCD 2023 Adult Official Positions (diagnose on the lowest T-score of the valid
    sites): a spine measured twice with different results (a re-scan, given as totals
    only) keeps both; both are used rows in the report, the lower one decides, and a
    flag names the two measurements and the one used."""
    regions, _ = mark_repeats([region("L1-L4", None, "0.90", "-1.2", "-0.8"), *hips(), region("L1-L4", None, "0.70", "-2.7", "-1.9")])
    spines = [r for r in regions if r.site == "L1-L4"]
    assert [r.repeat for r in spines] == [1, 2]
    e = exam(*regions)
    c = classify(e)
    assert c.spine is spines[1] and c.lowest is spines[1] and c.category == cl.OSTEOPOROSIS
    assert all(c.used(r) for r in spines)
    assert any("Lumbar spine measured 2 times" in f and "Lumbar spine L1-L4 (measurement 2)" in f for f in c.flags)
    report = render_report(e, c)
    assert "Lumbar spine L1-L4 (measurement 1)" in report and "Lumbar spine L1-L4 (measurement 2)" in report


def test_each_spine_measurement_is_judged_on_its_own_vertebrae():
    """ISCD 2023 Adult Official Positions (exclude a vertebra more than 1.0 T-score
    from its neighbours; use the total over the valid vertebrae): the vertebra
    exclusion is done per measurement of a repeated spine.  The re-scan excludes
    L3, so its result is L1,L2,L4; the first scan keeps L1-L4; the lower of the two
    valid totals decides, and the exclusion is flagged with its measurement."""
    first = [region(f"L{i}", None, "0.9", t) for i, t in zip(range(1, 5), ("-1.0", "-1.1", "-1.2", "-1.0"))]
    first.append(region("L1-L4", None, "0.9", "-1.1"))
    rescan = [region(f"L{i}", None, "0.7", t) for i, t in zip(range(1, 5), ("-2.0", "-2.1", "0.5", "-2.0"))]
    rescan += [region("L1,L2,L4", None, "0.7", "-2.1"), region("L1-L4", None, "0.75", "-1.5")]
    regions, _ = mark_repeats([*first, *rescan, *hips()])
    c = classify(exam(*regions))
    assert c.spine is not None and c.spine.site == "L1,L2,L4" and str(c.lowest_score) == "-2.1"
    assert c.excluded_vertebrae == ("L3",)
    assert {r.site for r in c.sites_used if m.spine_vertebrae(r.site)} == {"L1-L4", "L1,L2,L4"}
    used_l1_l4 = [r for r in c.sites_used if r.site == "L1-L4"]
    assert [r.repeat for r in used_l1_l4] == [1]  # the re-scan's L1-L4 includes the excluded L3
    assert any(f.startswith("Spine measurement 2: L3 differs") for f in c.flags)
    assert any("Lumbar spine measured 2 times" in f for f in c.flags)


def test_repeated_hip_the_lowest_decides_and_the_flag_says_which():
    """ISCD 2023 Adult Official Positions (lowest of femoral neck and total hip): a
    left neck measured twice with different results keeps both; the lower decides
    and the classifier's flag names the measurement used."""
    regions, _ = mark_repeats([region("L1-L4", None, "1.0", "-0.5"), region("neck", "L", "0.80", "-1.4"), region("neck", "L", "0.57", "-2.6"), region("total_hip", "L", "0.9", "-0.5")])
    c = classify(exam(*regions))
    assert c.lowest is not None and c.lowest.repeat == 2 and c.category == cl.OSTEOPOROSIS
    assert any("Left femoral neck measured 2 times" in f and "the lowest, Left femoral neck (measurement 2)" in f for f in c.flags)


def test_a_repeat_marked_excluded_is_shown_but_not_used():
    """ISCD 2023 Adult Official Positions: the lowest *valid* site decides; a
    measurement the scanner marked excluded (artefact) is kept in the exam but
    does not decide, even when it is lower."""
    regions, _ = mark_repeats([region("L1-L4", None, "1.0", "-0.5"), region("neck", "L", "0.80", "-1.4"), region("neck", "L", "0.50", "-3.0", excluded=True), region("total_hip", "L", "0.9", "-0.5")])
    e = exam(*regions)
    c = classify(e)
    assert str(c.lowest_score) == "-1.4" and c.category == cl.OSTEOPENIA
    assert len([r for r in e.regions if r.site == m.NECK]) == 2


# -- total body less head -----------------------------------------------------------


def test_total_body_less_head_labels_are_read_and_used_under_20():
    """ISCD 2019 Pediatric Official Positions: total body less head (TBLH) and the
    lumbar spine are the sites for children, Z-scores only.  Rows labelled "Total
    Body Less Head" or "TBLH" are read as TBLH; a whole-body "Total" stays total body
    (head included); "Subtotal" is not taken as TBLH (DOMAIN.md does not say what
    each vendor means by it)."""
    for label in ("Total Body Less Head", "TBLH", "total less head"):
        assert DEFAULT_TABLES.region(BODY, label)[0] == m.TOTAL_BODY_LESS_HEAD
        assert DEFAULT_TABLES.region(None, label)[0] == m.TOTAL_BODY_LESS_HEAD
    assert DEFAULT_TABLES.region(BODY, "Total")[0] == m.TOTAL_BODY
    assert DEFAULT_TABLES.region(BODY, "Subtotal")[0] is None
    text = _text({"AnalProtocol": "Whole Body"}, [SPINE_HEADER, ["Head", "2.100", "", ""], ["TBLH", "0.800", "", "-2.3"], ["Total", "1.000", "", "-1.2"]])
    e = extract_bmd_exam(_hologic_image(text))
    tblh = [r for r in e.regions if r.site == m.TOTAL_BODY_LESS_HEAD]
    assert len(tblh) == 1 and tblh[0].z_score == D("-2.3")
    c = classify(dataclasses.replace(e, regions=(*e.regions, *hips())), age=12)
    assert c.score_type == "Z" and c.lowest is not None and c.lowest.site == m.TOTAL_BODY_LESS_HEAD
    assert c.category == cl.BELOW_RANGE and not any(r.site in m.HIP_SITES for r in c.sites_used)
