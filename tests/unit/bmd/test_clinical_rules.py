"""Issue 14: the classifier follows the rules it cites (one test per rule)."""

from decimal import Decimal as D

import pytest

from mappings.bmd import classify as cl
from mappings.bmd.models import BmdExam
from mappings.clinical_context import ClinicalContext
from tests.unit.bmd.helpers import region

WHITE_FEMALE = dict(reference_database="2012 BMDCS/NHANES", reference_population="White Female")


def exam(*regions, **over):
    return BmdExam(patient_id="P", regions=tuple(regions), **{**WHITE_FEMALE, **over})


def adult(t_neck="-0.5", z_neck="-0.5", **over):
    return exam(
        region("L1-L4", None, "1.0", "-0.5", "-0.5"),
        region("neck", "L", "0.8", t_neck, z_neck),
        region("total_hip", "L", "0.9", "-0.5", "-0.5"),
        **over,
    )


# -- defect 2 ---------------------------------------------------------------------


@pytest.mark.parametrize("age", [50, 72, 90])
def test_menopausal_default_applies_only_to_women_under_50(age):
    """ISCD Official Positions (adult), "Which score": T-scores for postmenopausal
    women; a woman of 50 or over with no statement is taken as postmenopausal,
    so ``reports.menopausal_default: false`` must not turn a 72-year-old onto Z."""
    status = cl.menopausal_status(age, "F", stated=None, site_default=False)
    assert status is None
    c = cl.classify(adult(t_neck="-2.7", z_neck="-0.8"), age=age, sex="F", menopausal=status)
    assert c.score_type == "T" and c.category == cl.OSTEOPOROSIS


def test_menopausal_default_used_for_woman_under_50_and_statement_wins():
    """ISCD Official Positions: Z-scores for premenopausal women; the site default
    concerns only women under 50 with no statement, and a stated status wins."""
    assert cl.menopausal_status(45, "F", stated=None, site_default=True) is True
    assert cl.menopausal_status(45, "F", stated=False, site_default=True) is False
    assert cl.menopausal_status(45, "M", stated=None, site_default=True) is None
    assert cl.classify(adult(t_neck="-2.7"), age=45, sex="F", menopausal=True).score_type == "T"


# -- defect 3 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "t,expected",
    [("-2.46", cl.OSTEOPOROSIS), ("-2.44", cl.OSTEOPENIA), ("-1.04", cl.NORMAL), ("-1.05", cl.OSTEOPENIA), ("-2.55", cl.OSTEOPOROSIS)],
)
def test_round_to_one_decimal_then_classify_t(t, expected):
    """ISCD Official Positions (T- and Z-scores reported to one decimal place);
    WHO cut-offs apply to the rounded value: -2.46 is -2.5 (osteoporosis), -1.04 is -1.0 (normal)."""
    c = cl.classify(adult(t_neck=t), age=70, sex="F", menopausal=True)
    assert c.category == expected
    assert c.lowest_score == D(t).quantize(D("0.1"), rounding="ROUND_HALF_UP")
    assert any("rounded to one decimal place" in n for n in c.notes)


def test_round_to_one_decimal_then_classify_z():
    """ISCD Official Positions: Z <= -2.0 "below the expected range for age", on the
    score rounded to one decimal: -1.96 is -2.0."""
    c = cl.classify(adult(z_neck="-1.96"), age=40, sex="M", menopausal=None)
    assert c.score_type == "Z" and c.category == cl.BELOW_RANGE
    assert any("-1.96 is read as -2.0" in n for n in c.notes)
    assert any("secondary causes" in p for p in c.prompts)


# -- defect 5 ---------------------------------------------------------------------


def test_no_age_no_category_and_a_technical_flag():
    """ISCD Official Positions: the score (T or Z) depends on age and menopausal
    status; without an age no category can be given -- flag it for the reporter."""
    c = cl.classify(adult(t_neck="-3.0"), age=None, sex="F", menopausal=None)
    assert c.category == cl.NO_AGE and c.lowest is None and c.sites_used == ()
    assert any("age unknown" in f.lower() for f in c.flags)


def test_under_20_z_scores_spine_and_tblh_only_never_hip():
    """ISCD Pediatric Official Positions: under 20, Z-scores only; PA spine and
    total body less head are the preferred sites; the hip is not used."""
    child = exam(
        region("L1-L4", None, "0.7", "-2.8", "-1.2"),
        region("total_body_less_head", None, "0.8", "-2.0", "-1.5"),
        region("neck", "L", "0.6", "-3.5", "-2.9"),
        region("total_hip", "L", "0.6", "-3.1", "-2.6"),
    )
    c = cl.classify(child, age=12, sex="F", menopausal=True)
    assert c.score_type == "Z"
    assert {r.site for r in c.sites_used} == {"L1-L4", "total_body_less_head"}
    assert c.category == cl.WITHIN_RANGE and c.lowest.site == "total_body_less_head"
    assert any("Hip results not used under 20" in n for n in c.notes)


# -- defect 6 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "population,problem",
    [
        ("White Female", None),
        ("Caucasian female, non-race-adjusted", None),
        ("White Male", "from a male reference"),
        ("Black Female", "not from a White reference"),
        ("Female, race-adjusted", "race-adjusted"),
        ("USA (Combined NHANES/Lunar)", "Reference sex and ethnicity not stated"),
        ("", "Reference population not stated"),
    ],
)
def test_reference_population_white_female_not_race_adjusted(population, problem):
    """ISCD Official Positions and NOGG: T-scores use a White female,
    non-race-adjusted young-adult reference for men and women of all races;
    any other reference is flagged."""
    c = cl.classify(adult(reference_database="", reference_population=population), age=70, sex="M", menopausal=None)
    found = [f for f in c.flags if "reference" in f.lower() or "T-scores" in f]
    if problem is None:
        assert found == []
    else:
        assert any(problem in f for f in found), found


# -- defect 8 (classifier side) --------------------------------------------------------


def test_fragility_fracture_from_context_gives_established_osteoporosis():
    """WHO / ISCD (DOMAIN.md section 4): T <= -2.5 with a fragility fracture is
    established (severe) osteoporosis; the fact comes from the clinical context."""
    ctx = ClinicalContext(fragility_fracture=True)
    c = cl.classify(adult(t_neck="-2.6"), age=70, sex="F", menopausal=True, context=ctx)
    assert c.category == cl.ESTABLISHED
    assert any("vertebral fracture assessment" in p for p in c.prompts)


def test_hyperparathyroidism_from_context_adds_the_33_percent_radius():
    """ISCD Official Positions: forearm (33% radius) BMD in hyperparathyroidism,
    when hip or spine cannot be used, or over the table limit."""
    e = exam(
        region("L1-L4", None, "1", "-0.5", "0"),
        region("neck", "L", "1", "-0.5", "0"),
        region("radius_33", "L", "0.6", "-2.7", "0"),
    )
    assert cl.classify(e, age=70, sex="F", menopausal=True).category == cl.NORMAL
    c = cl.classify(e, age=70, sex="F", menopausal=True, context=ClinicalContext(hyperparathyroidism=True))
    assert c.category == cl.OSTEOPOROSIS and c.lowest.site == "radius_33"
    assert any("hyperparathyroidism" in n for n in c.notes)
    c = cl.classify(exam(region("L1-L4", None, "1", "-0.5", "0")), age=70, sex="F", menopausal=True, context=ClinicalContext(forearm_indicated=True))
    assert any("not measured" in f for f in c.flags)


def test_spine_used_is_named_when_a_vertebra_is_excluded():
    """ISCD Official Positions: exclude vertebrae more than 1.0 T-score from their
    neighbours; the diagnosis uses the remaining vertebrae (here L1,L2,L4)."""
    e = exam(
        region("L1", None, "1.0", "-1.0"), region("L2", None, "1.0", "-1.2"),
        region("L3", None, "1.0", "0.5"), region("L4", None, "1.0", "-1.1"),
        region("L1-L4", None, "1.0", "-0.7"), region("L1,L2,L4", None, "1.0", "-1.1"),
    )  # fmt: skip
    c = cl.classify(e, age=70, sex="F", menopausal=True)
    assert c.spine.site == "L1,L2,L4"


def test_over_the_table_limit_adds_the_33_percent_radius():
    """ISCD Official Positions: measure the forearm when the patient exceeds the
    weight limit of the table (``reports.table_limit_kg``)."""
    from mappings.clinical_context import with_table_limit

    ctx = with_table_limit(ClinicalContext(weight_kg=D("170.0")), D("160"))
    assert ctx.over_table_limit is True
    assert with_table_limit(ClinicalContext(weight_kg=D("150.0")), D("160")).over_table_limit is None
    e = exam(region("L1-L4", None, "1", "-0.5", "0"), region("neck", "L", "1", "-0.5", "0"), region("radius_33", "L", "0.6", "-2.7", "0"))
    c = cl.classify(e, age=70, sex="F", menopausal=True, context=ctx)
    assert c.category == cl.OSTEOPOROSIS and any("exceeds the table limit" in n for n in c.notes)
