"""Dose against diagnostic reference levels (mappings/bmd/drl.py) and the dose OBX of the ORU."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D

import pytest

from mappings.bmd.drl import ReferenceLevel, check_dose, convert, exam_type, report_note, scans
from mappings.bmd.hl7_oru import OruContext, build_oru_r01
from mappings.bmd.models import DoseRecord
from tests.unit.bmd.helpers import HOLOGIC, known_exam
from tests.unit.bmd.pipeline import exam_and_report

LEVELS = {"spine": ReferenceLevel(D("2.0"), "cGy.cm2"), "hip": ReferenceLevel(D("1.0"), "cGy.cm2"), "forearm": ReferenceLevel(D("0.5"), "cGy.cm2"),
          "vfa": ReferenceLevel(D("1.5"), "cGy.cm2")}  # fmt: skip


def _exam(dap: str, units: str = "dGy.cm2"):
    return known_exam("hologic", HOLOGIC, dose=DoseRecord(dap=D(dap), dap_units=units, source="rdsr"))


def test_scans_count_each_side():
    exam = known_exam("hologic", HOLOGIC)  # spine, both hips, left forearm, VFA
    assert scans(exam) == {"spine": 1, "hip": 2, "forearm": 1, "vfa": 1}
    assert exam_type(scans(exam)) == "forearm+hip x2+spine+vfa"


def test_exam_level_is_the_sum_of_its_scans_and_units_convert():
    """Seed 000 section 11 (IR(ME)R: be aware of the DRLs of the examinations
    undertaken).  The dose record is the study's total, so the exam's level is
    the sum of its scans' levels: 2.0 + 2 x 1.0 + 0.5 + 1.5 = 6.0 cGy.cm2."""
    within = check_dose(_exam("0.599"), LEVELS)  # 0.599 dGy.cm2 = 5.99 cGy.cm2
    assert (within.level, within.value, within.units, within.over) == (D("6.0"), D("5.99"), "cGy.cm2", False)
    over = check_dose(_exam("0.0000070", "Gy.m2"), LEVELS)  # 7.0 cGy.cm2
    assert over.over is True and over.value == D("7") and over.percent == D("117")
    note = report_note(over)
    assert "above the diagnostic reference level" in note and "7 cGy.cm2 against 6.0 cGy.cm2" in note
    assert report_note(within) == ""


def test_not_compared_says_why():
    assert check_dose(known_exam("hologic", HOLOGIC), LEVELS) is None  # no dose record
    partial = check_dose(_exam("80"), {"spine": LEVELS["spine"]})
    assert partial.over is None and partial.note.startswith("no reference level for hip")
    odd = check_dose(_exam("80", "R.cm2"), LEVELS)
    assert odd.over is None and "unknown units 'R.cm2'" in odd.note
    assert convert(D("1"), "mGy", "Gy.m2", "dose_rp_total") is None


def test_oru_carries_the_dose():
    """The exam's dose goes in the ORU (issue 16 item 5): OBX NM coded DCM 113722."""
    exam, c, comp, text = exam_and_report("F")
    exam = dataclasses.replace(exam, dose=DoseRecord(dap=D("0.00012"), dap_units="Gy.m2", entrance_dose=D("0.05"), entrance_dose_units="mGy", source="rdsr"))
    msg = build_oru_r01(exam, c, comp, text, OruContext(message_control_id="M1", timestamp="20240501120000"))
    obx = [s.split("|") for s in msg.split("\r") if s.startswith("OBX|")]
    dap = [o for o in obx if o[3].startswith("113722^")]
    assert len(dap) == 1 and dap[0][5] == "0.00012" and dap[0][6].startswith("Gy.m2^")
    assert any(o[3].startswith("entrance_dose^") and o[5] == "0.05" for o in obx)
    assert [o[1] for o in obx] == [str(n) for n in range(1, len(obx) + 1)]


def test_oru_dose_is_a_plain_decimal_never_an_exponent():
    """HL7 v2.5.1 NM (2.A.47): an optional sign, digits and a decimal point.
    A DAP of 9.5E-7 Gy.m2 (Decimal keeps the exponent) goes out as 0.00000095."""
    exam, c, comp, text = exam_and_report("F")
    exam = dataclasses.replace(exam, dose=DoseRecord(dap=D("9.5E-7"), dap_units="Gy.m2", source="rdsr"))
    msg = build_oru_r01(exam, c, comp, text, OruContext(message_control_id="M1", timestamp="20240501120000"))
    (dap,) = [s.split("|") for s in msg.split("\r") if s.startswith("OBX|") and "|113722^" in s]
    assert dap[5] == "0.00000095"


@pytest.mark.parametrize("units", ["cGy.cm2", "Gy.m2"])
def test_config_accepts_known_units(tmp_path, units):
    from gateway.config import ConfigError, load_config

    p = tmp_path / "c.yaml"
    p.write_text(f"dose:\n  reference_levels:\n    spine: {{value: 2.0, units: {units}}}\n")
    assert load_config(p).dose.reference_levels["spine"].units == units
    p.write_text("dose:\n  reference_levels:\n    spine: {value: 2.0, units: rem}\n")
    with pytest.raises(ConfigError, match="dose.reference_levels.spine"):
        load_config(p)
