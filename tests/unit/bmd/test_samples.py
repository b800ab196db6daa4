import random

import pytest
from pydicom import dcmread

from mappings.bmd import samples
from mappings.bmd.codes import DAP_TOTAL, DOSE_RP_TOTAL, DOSE_TITLE, DXA_PROCEDURE
from mappings.bmd.extract import extract_bmd_exam
from mappings.bmd.sr_items import ENHANCED_SR, XRAY_DOSE_SR
from tests.unit.bmd.helpers import header


@pytest.mark.parametrize("vendor", ["hologic", "ge"])
def test_build_bmd_sr_is_deterministic_and_saves(vendor, tmp_path):
    h = header()
    a = samples.build_bmd_sr(vendor, h, random.Random(7))
    b = samples.build_bmd_sr(vendor, h, random.Random(7))
    c = samples.build_bmd_sr(vendor, h, random.Random(8))
    assert a == b
    assert a.SOPInstanceUID == b.SOPInstanceUID != c.SOPInstanceUID
    path = tmp_path / "sr.dcm"
    a.save_as(path, enforce_file_format=True)
    back = dcmread(path)
    assert back.SOPClassUID == ENHANCED_SR
    assert back.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime"):
        assert str(back[kw].value) == str(h[kw].value)
    assert len(back.SOPInstanceUID) <= 64 and len(back.SeriesInstanceUID) <= 64


@pytest.mark.parametrize("vendor,maker", [("hologic", "HOLOGIC"), ("ge", "GE Healthcare")])
@pytest.mark.parametrize("seed", range(40))
def test_random_samples_parse_back_after_file_round_trip(vendor, maker, seed, tmp_path):
    ds = samples.build_bmd_sr(vendor, header(), random.Random(seed))
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    exam = extract_bmd_exam(dcmread(tmp_path / "x.dcm"))
    assert exam.device.manufacturer == maker
    assert exam.region("neck", "L") or exam.region("neck", "R")
    spine_totals = [r for r in exam.regions if "-" in r.site or "," in r.site]
    assert spine_totals


@pytest.mark.parametrize("sex,birth", [("F", "19440101"), ("M", "19900101")])
def test_values_plausible_for_age_and_sex(sex, birth):
    exams = [samples.random_exam("hologic", header(PatientSex=sex, PatientBirthDate=birth), random.Random(s)) for s in range(60)]
    necks = [float(r.t_score) for e in exams for r in e.regions if r.site == "neck"]
    mean = sum(necks) / len(necks)
    if sex == "F":  # an 80-year-old woman: well below young adult on average
        assert -2.5 < mean < -0.5
    else:  # a 34-year-old man: near young adult
        assert -0.7 < mean < 0.7
    assert all(0.2 <= float(r.bmd) <= 2.5 for e in exams for r in e.regions if r.site != "total_body")


def test_unknown_vendor_is_refused():
    with pytest.raises(ValueError, match="unknown vendor"):
        samples.build_bmd_sr("acme", header(), random.Random(1))


def test_build_dose_sr(tmp_path):
    ds = samples.build_dose_sr(header(), random.Random(3))
    assert ds == samples.build_dose_sr(header(), random.Random(3))
    ds.save_as(tmp_path / "d.dcm", enforce_file_format=True)
    back = dcmread(tmp_path / "d.dcm")
    assert back.SOPClassUID == XRAY_DOSE_SR
    assert back.ConceptNameCodeSequence[0].CodeValue == DOSE_TITLE[0]
    proc = back.ContentSequence[0].ConceptCodeSequence[0]
    assert (proc.CodeValue, proc.CodingSchemeDesignator) == DXA_PROCEDURE[:2]
    names = {i.ConceptNameCodeSequence[0].CodeValue for i in back.ContentSequence[1].ContentSequence}
    assert names == {DAP_TOTAL[0], DOSE_RP_TOTAL[0]}
    assert back.PatientID == "PAT-001"
