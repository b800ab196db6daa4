import dataclasses
from decimal import Decimal as D

import pytest

from mappings.bmd.compare import LscTable, compare_exams
from mappings.bmd.models import BmdExam, Device
from tests.unit.bmd.helpers import region

IDXA = Device("GE Healthcare", "Lunar iDXA", "S1")


def exam(device=IDXA, date="20240501", **bmd):
    sites = {"spine": ("L1-L4", None), "neck": ("neck", "L"), "hip": ("total_hip", "L")}
    return BmdExam(patient_id="P", exam_date=date, device=device, regions=tuple(region(*sites[k], v, "-1.0") for k, v in bmd.items()))


@pytest.mark.parametrize(
    "site,before,after,significant",
    [
        ("spine", "1.000", "1.053", False),  # 5.3% exactly: not beyond the LSC
        ("spine", "1.000", "1.054", True),
        ("spine", "1.000", "0.947", False),
        ("spine", "1.000", "0.946", True),
        ("hip", "1.000", "1.050", False),
        ("hip", "1.000", "0.949", True),
        ("neck", "1.000", "0.931", False),
        ("neck", "1.000", "0.930", True),
    ],
)
def test_percent_lsc_just_under_and_over(site, before, after, significant):
    comp = compare_exams(exam(**{site: after}), exam(date="20220501", **{site: before}))
    assert comp.comparable
    (change,) = comp.changes
    assert change.significant is significant
    assert change.change == D(after) - D(before)


@pytest.mark.parametrize("after,significant", [("0.828", False), ("0.827", True), ("0.882", False), ("0.883", True)])
def test_absolute_lsc_override_per_scanner(after, significant):
    lsc = LscTable(per_scanner={"S1": {"spine": D("0.027")}})
    comp = compare_exams(exam(spine=after), exam(spine="0.855"), lsc=lsc)
    assert comp.changes[0].lsc == D("0.027")
    assert comp.changes[0].significant is significant
    assert comp.significant_loss is (significant and D(after) < D("0.855"))


def test_absolute_lsc_for_all_scanners_and_unknown_site():
    lsc = LscTable(absolute={"neck": D("0.040")})
    comp = compare_exams(exam(neck="0.760"), exam(neck="0.800"), lsc=lsc)
    assert comp.changes[0].significant is False  # 0.040 is not beyond 0.040


def test_different_scanners_not_comparable_unless_cross_calibrated():
    prodigy = Device("GE Healthcare", "Lunar Prodigy", "S9")
    comp = compare_exams(exam(spine="1.0"), exam(device=prodigy, spine="0.8"))
    assert not comp.comparable and "not comparable" in comp.reason and comp.changes == ()
    comp = compare_exams(exam(spine="1.0"), exam(device=prodigy, spine="0.8"), cross_calibrated=[("Lunar iDXA", "Lunar Prodigy")])
    assert comp.comparable and comp.changes[0].significant


def test_compares_bmd_not_t_scores():
    cur = exam(spine="1.000")
    prev = exam(spine="1.000")
    prev = dataclasses.replace(prev, regions=(dataclasses.replace(prev.regions[0], t_score=D("-3.0")),))
    comp = compare_exams(cur, prev)
    assert comp.changes[0].change == 0 and comp.changes[0].significant is False


def test_no_common_site():
    comp = compare_exams(exam(spine="1.0"), exam(neck="0.8"))
    assert not comp.comparable
