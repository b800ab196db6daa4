import dataclasses
from datetime import date
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
        ("spine", "1.000", "1.052", False),
        ("spine", "1.000", "1.053", True),  # 5.3% exactly: equals the LSC, significant
        ("spine", "1.000", "0.948", False),
        ("spine", "1.000", "0.947", True),
        ("hip", "1.000", "1.049", False),
        ("hip", "1.000", "1.050", True),
        ("neck", "1.000", "0.932", False),
        ("neck", "1.000", "0.931", True),
    ],
)
def test_percent_lsc_just_under_and_over(site, before, after, significant):
    """ISCD Official Positions (precision assessment): a change that equals or
    exceeds the LSC (ISCD minimum precision: 5.3% spine, 5.0% hip, 6.9% neck) is significant."""
    comp = compare_exams(exam(**{site: after}), exam(date="20220501", **{site: before}))
    assert comp.comparable
    (change,) = comp.changes
    assert change.significant is significant
    assert change.change == D(after) - D(before)


@pytest.mark.parametrize("after,significant", [("0.829", False), ("0.828", True), ("0.881", False), ("0.882", True)])
def test_absolute_lsc_override_per_scanner(after, significant):
    """ISCD: a site's own LSC in g/cm2 per scanner; equal to the LSC is significant."""
    lsc = LscTable(per_scanner={"S1": {"spine": D("0.027")}})
    comp = compare_exams(exam(spine=after), exam(spine="0.855"), lsc=lsc)
    assert comp.changes[0].lsc == D("0.027")
    assert comp.changes[0].significant is significant
    assert comp.significant_loss is (significant and D(after) < D("0.855"))


def test_absolute_lsc_for_all_scanners_and_unknown_site():
    lsc = LscTable(absolute={"neck": D("0.040")})
    comp = compare_exams(exam(neck="0.760"), exam(neck="0.800"), lsc=lsc)
    assert comp.changes[0].significant is True  # 0.040 equals 0.040: significant (ISCD "equals or exceeds")
    comp = compare_exams(exam(neck="0.761"), exam(neck="0.800"), lsc=lsc)
    assert comp.changes[0].significant is False


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


def test_change_equal_to_lsc_is_significant():
    """ISCD Official Positions: the change is significant when it equals or exceeds the LSC."""
    lsc = LscTable(absolute={"spine": D("0.028")})
    comp = compare_exams(exam(spine="0.972"), exam(date="20220101", spine="1.000"), lsc=lsc)
    assert comp.changes[0].significant is True and comp.significant_loss


def test_same_model_different_serial_needs_cross_calibration():
    """ISCD Official Positions (cross-calibration): another machine of the same
    model is a different scanner; compare only after cross-calibration."""
    other = Device("GE Healthcare", "Lunar iDXA", "S2")
    comp = compare_exams(exam(spine="1.0"), exam(device=other, date="20220101", spine="0.9"))
    assert not comp.comparable and "S2" in comp.reason and "cross-calibration" in comp.reason
    comp = compare_exams(exam(spine="1.0"), exam(device=other, date="20220101", spine="0.9"), cross_calibrated=[("S1", "S2")])
    assert comp.comparable and comp.reason == "cross-calibrated scanners"
    assert compare_exams(exam(spine="1.0"), exam(date="20220101", spine="0.9")).reason == "same scanner"


@pytest.mark.parametrize(
    "previous,requested,short",
    [("20220501", False, False), ("20220502", False, True), ("20230501", True, False), ("20230501", False, True)],
)
def test_interval_since_previous_scan_checked_and_reported(previous, requested, short):
    """Seed 001 "Reporting" / UK guidance: repeat DXA not sooner than two years
    unless the reporter asks; the interval is reported either way."""
    comp = compare_exams(exam(date="20240501", spine="1.0"), exam(date=previous, spine="1.0"), early_repeat_requested=requested)
    assert comp.interval_short is short
    assert comp.interval_note.startswith("Interval since the previous examination: ")
    assert ("under the 2-year minimum" in comp.interval_note) is short
    assert comp.interval_days == (date(2024, 5, 1) - date(int(previous[:4]), int(previous[4:6]), int(previous[6:8]))).days
