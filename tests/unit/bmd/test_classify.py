import dataclasses
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappings.bmd import classify as cl
from mappings.bmd.models import BmdExam
from tests.unit.bmd.helpers import region

tenths = st.integers(min_value=-60, max_value=40).map(lambda n: D(n) / 10)


def exam(*regions):
    return BmdExam(patient_id="P", regions=tuple(regions))


def spine_and_hip(t_spine="0.0", t_neck="0.0", t_hip="0.0", z="0.0"):
    return exam(
        region("L1-L4", None, "1.0", t_spine, z),
        region("neck", "L", "0.8", t_neck, z),
        region("total_hip", "L", "0.9", t_hip, z),
    )


@pytest.mark.parametrize(
    "t,fracture,expected",
    [
        ("-1.0", False, cl.NORMAL),
        ("-1.1", False, cl.OSTEOPENIA),
        ("-2.4", False, cl.OSTEOPENIA),
        ("-2.5", False, cl.OSTEOPOROSIS),
        ("-2.5", True, cl.ESTABLISHED),
        ("-0.9", True, cl.NORMAL),
    ],
)
def test_who_boundaries_exact(t, fracture, expected):
    c = cl.classify(spine_and_hip(t_neck=t), age=70, sex="F", menopausal=True, fragility_fracture=fracture)
    assert c.score_type == "T" and c.category == expected
    assert c.lowest.site == "neck" and str(c.lowest_score) == t


@given(tenths)
def test_who_category_matches_thresholds(t):
    c = cl.classify(spine_and_hip(t_spine=str(t)), age=65, sex="M", menopausal=None, fragility_fracture=False)
    lowest = min(t, D("0.0"))
    assert c.lowest_score == lowest
    if lowest >= D("-1.0"):
        assert c.category == cl.NORMAL
    elif lowest > D("-2.5"):
        assert c.category == cl.OSTEOPENIA
    else:
        assert c.category == cl.OSTEOPOROSIS


@given(tenths)
def test_z_category_threshold(z):
    c = cl.classify(spine_and_hip(z=str(z)), age=35, sex="M", menopausal=None, fragility_fracture=False)
    assert c.score_type == "Z"
    assert c.category == (cl.BELOW_RANGE if z <= D("-2.0") else cl.WITHIN_RANGE)
    assert any("secondary causes" in p for p in c.prompts) == (z <= D("-2.0"))


@pytest.mark.parametrize(
    "age,sex,meno,kind",
    [
        (49, "M", None, "Z"),
        (50, "M", None, "T"),
        (49, "F", True, "T"),
        (49, "F", False, "Z"),
        (49, "F", None, "Z"),
        (50, "F", None, "T"),
        (55, "F", False, "Z"),
        (15, "F", True, "Z"),
        (60, "", None, "T"),
        (30, "", None, "Z"),
    ],
)
def test_which_score(age, sex, meno, kind):
    c = cl.classify(spine_and_hip(t_neck="-3.0", z="-0.5"), age=age, sex=sex, menopausal=meno, fragility_fracture=False)
    assert c.score_type == kind
    if kind == "Z":
        assert c.category == cl.WITHIN_RANGE  # osteoporosis is never diagnosed on Z


def test_woman_under_50_menopause_unknown_says_so():
    c = cl.classify(spine_and_hip(), age=49, sex="F", menopausal=None, fragility_fracture=False)
    assert any("menopausal status unknown" in n for n in c.notes)


def test_wards_and_trochanter_never_decide():
    e = exam(
        region("L1-L4", None, "1.0", "-0.5", "0"),
        region("neck", "L", "0.8", "-0.8", "0"),
        region("total_hip", "L", "0.9", "-0.6", "0"),
        region("wards", "L", "0.4", "-3.5", "-2"),
        region("troch", "L", "0.5", "-3.1", "-2"),
    )
    c = cl.classify(e, age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert c.category == cl.NORMAL and c.lowest.site == "neck"
    assert {r.site for r in c.sites_used} == {"L1-L4", "neck", "total_hip"}


def test_radius_only_when_hip_or_spine_missing():
    with_hip = exam(region("L1-L4", None, "1", "-0.5", "0"), region("neck", "L", "1", "-0.5", "0"), region("radius_33", "L", "0.6", "-2.7", "0"))
    c = cl.classify(with_hip, age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert c.category == cl.NORMAL
    assert cl.classify(with_hip, age=70, sex="F", menopausal=True, fragility_fracture=False, forearm_indicated=True).category == cl.OSTEOPOROSIS
    no_hip = exam(region("L1-L4", None, "1", "-0.5", "0"), region("radius_33", "L", "0.6", "-2.7", "0"))
    c = cl.classify(no_hip, age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert c.category == cl.OSTEOPOROSIS and c.lowest.site == "radius_33"


def vertebrae(t1, t2, t3, t4, *totals):
    rs = [region(f"L{i}", None, "1.0", t) for i, t in enumerate((t1, t2, t3, t4), start=1)]
    return rs + [region(site, None, "1.0", t) for site, t in totals]


def test_discordant_vertebra_is_excluded_and_valid_total_used():
    e = exam(*vertebrae("-1.0", "-1.2", "0.5", "-1.1", ("L1-L4", "-0.7"), ("L1,L2,L4", "-1.1")), region("neck", "L", "0.8", "-0.5"))
    c = cl.classify(e, age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert c.excluded_vertebrae == ("L3",)
    assert any("L3 differs" in f for f in c.flags)
    assert c.lowest.site == "L1,L2,L4" and c.category == cl.OSTEOPENIA


def test_vertebra_exactly_one_from_neighbours_is_kept():
    e = exam(*vertebrae("-1.0", "-1.0", "0.0", "-1.0", ("L1-L4", "-0.8")))
    c = cl.classify(e, age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert c.excluded_vertebrae == () and c.lowest.site == "L1-L4"


def test_fewer_than_two_evaluable_vertebrae():
    rs = vertebrae("-1.0", "0.0", "0.0", "0.0", ("L1-L4", "-0.5"))
    rs = [r if r.site in ("L1", "L1-L4") else dataclasses.replace(r, excluded=True) for r in rs]
    c = cl.classify(exam(*rs, region("neck", "L", "0.8", "-1.5")), age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert any("Fewer than two evaluable vertebrae" in f for f in c.flags)
    assert c.lowest.site == "neck" and all(r.site != "L1-L4" for r in c.sites_used)


def test_no_usable_site_is_indeterminate():
    c = cl.classify(exam(region("wards", "L", "0.4", "-3.0")), age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert c.category == cl.INDETERMINATE and c.lowest is None
