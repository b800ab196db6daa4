"""Results from every carrier (Hologic report images, GE Image Comments XML, SRs),
one exam per study, and no silent drops at the reader (issues 12 item 3, 14 item 4)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from mappings.bmd import models as m
from mappings.bmd import samples
from mappings.bmd.classify import classify
from mappings.bmd.collect import NoResults, UnparseableSr, read_cell
from mappings.bmd.extract import extract_bmd_exam
from mappings.bmd.merge import merge_exams
from tests.unit.bmd.helpers import GE, HOLOGIC, bare, known_exam, region


def _hologic_image(text: str, *, laterality: str | None = None, modality: str = "OT") -> Dataset:
    ds = samples.hologic_report_images(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC), modality=modality)[0]
    if laterality:
        ds.Laterality = laterality
    elif "Laterality" in ds:
        del ds.Laterality
    block = ds.private_block(0x0019, "HOLOGIC")
    block[0x00].value = text.encode("utf-8")
    return ds


def _text(scalars: dict[str, str], *tables: list[list[str]]) -> str:
    lines = ["<HologicHeader1>\r\n<Institution>X</Institution>\r\n</HologicHeader1>", '<JavaScriptFile, filetype=3, filename="C:\\QDR\\Results.js">']
    lines += [f'{k} = "{v}";' for k, v in scalars.items()]
    for n, table in enumerate(tables, 1):
        for i, row in enumerate(table):
            lines += [f'ResultsTable{n}[ {i}][ {j}] = "{v}";' for j, v in enumerate(row)]
    return "\r\n".join(lines + ["</JavaScriptFile>"])


HIP_HEADER = ["Region", "Area[cm<sup><small>2</small></sup>]", "BMC[(g)]", "BMD[g/cm<sup><small>2</small></sup>]", "T-score", "PR (Peak Reference)", "Z-score", "AM (Age Matched)"]


def _parts(datasets) -> list:
    return [extract_bmd_exam(ds) for ds in datasets]


@pytest.mark.parametrize("modality", ["OT", "BD"])
def test_hologic_report_images_alone_make_one_exam_with_the_values(modality):
    """Hologic without the SR option sends one Secondary Capture per scan, results
    in (0019,1000), Modality OT or BD, the side only in Laterality/ScanMode
    (DOMAIN.md section 2, issue 12 item 3).  ISCD: the diagnosis is the lowest of
    lumbar spine (valid vertebrae), femoral neck and total hip of either side."""
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC)
    images = samples.hologic_report_images(known, modality=modality)
    assert [ds.Modality for ds in images] == [modality] * 4
    assert {ds.BodyPartExamined for ds in images} == {"LSPINE"}  # misleading on hip series; not used
    exam = merge_exams(_parts(images))
    got = {(r.site, r.laterality): r for r in bare(exam).regions}
    want = {(r.site, r.laterality): r for r in known.regions}
    assert got == want
    assert exam.flags == ()
    assert len(exam.sources) == 4 and exam.frax == known.frax
    c = classify(exam, age=66, sex="F", menopausal=None, fragility_fracture=False)
    assert c.category == "osteoporosis" and c.lowest.key == ("neck", "L") and str(c.lowest_score) == "-2.5"


def test_ge_image_comments_xml_makes_the_exam():
    """GE images carry the results as XML in Image Comments (DOMAIN.md section 2),
    read with defusedxml; units have a leading space."""
    known = known_exam(samples.GE_LAYOUT, GE)
    exam = merge_exams(_parts(samples.ge_report_images(known)))
    got = {(r.site, r.laterality): (r.bmd, r.t_score, r.z_score, r.bmc, r.area) for r in exam.regions}
    assert got == {(r.site, r.laterality): (r.bmd, r.t_score, r.z_score, r.bmc, r.area) for r in known.regions}


def test_ge_xml_comma_decimals_and_older_layout():
    """Comma decimals occur; the older <DENSITOMETRY_RESULTS> layout nests TREND_ROI (DOMAIN.md section 2)."""
    ds = samples.ge_report_images(known_exam(samples.GE_LAYOUT, GE))[0]
    ds.ImageComments = (
        '<DENSITOMETRY_RESULTS><CURRENT_EXAM><SCAN type="Left Femur"><TREND>'
        '<TREND_ROI region="Neck"><BMD units=" g/cm2">0,826</BMD><YAT>-1,5</YAT><AMZ>-0.4</AMZ></TREND_ROI>'
        "</TREND></SCAN></CURRENT_EXAM></DENSITOMETRY_RESULTS>"
    )
    r = extract_bmd_exam(ds).region("neck", "L")
    assert (str(r.bmd), str(r.t_score), str(r.z_score)) == ("0.826", "-1.5", "-0.4")


def test_ge_xml_with_entities_is_refused_not_expanded():
    """Untrusted XML: a DTD with entities (billion laughs) is refused by defusedxml (DOMAIN.md section 2)."""
    ds = samples.ge_report_images(known_exam(samples.GE_LAYOUT, GE))[0]
    ds.ImageComments = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><DXA_RESULTS><SCAN type="AP Spine"><ROI region="L1"><BMD>&b;</BMD></ROI></SCAN></DXA_RESULTS>'
    with pytest.raises(UnparseableSr, match="XML not readable"):
        extract_bmd_exam(ds)


def test_an_image_without_results_is_no_results_and_a_header_only_block_too():
    """Most images are pictures; some Hologic blocks hold only the header (DOMAIN.md section 2)."""
    ds = _hologic_image("<HologicHeader1>\r\n<Institution>X</Institution>\r\n</HologicHeader1>\r\n")
    with pytest.raises(NoResults):
        extract_bmd_exam(ds)
    plain = samples.hologic_report_images(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC))[0]
    del plain[0x00191000]
    del plain[0x00190010]
    with pytest.raises(NoResults):
        extract_bmd_exam(plain)


def test_spine_reported_only_as_a_total_is_kept_named_and_flagged():
    """ISCD 2023 Adult Official Positions (use L1-L4 or the evaluable vertebrae; say
    which): a spine printed only as "L2-L4" with no per-vertebra rows is kept under
    that name and flagged, never dropped (issue 14 item 4)."""
    header = ["Region", "BMD[g/cm<sup><small>2</small></sup>]", "T-score", "Z-score"]
    exam = extract_bmd_exam(_hologic_image(_text({"AnalProtocol": "Spine"}, [header, ["L2-L4", "0.700", "-3.1", "-2.4"]])))
    [spine] = exam.regions
    assert spine.site == "L2-L4" and str(spine.t_score) == "-3.1"
    assert any("only as a total (L2-L4)" in f for f in exam.flags)
    # a bare "Total" row: the vertebrae are not stated, so it is not called L1-L4
    exam = extract_bmd_exam(_hologic_image(_text({"AnalProtocol": "Spine"}, [header, ["Total", "0.700", "-3.1", "-2.4"]])))
    [spine] = exam.regions
    assert spine.site == m.SPINE_TOTAL and "not stated" in spine.name
    assert any("only as a total" in f for f in exam.flags)


def test_two_hip_tables_without_a_side_are_both_kept_and_the_lowest_diagnoses():
    """ISCD Adult Official Positions: diagnose on the lowest of femoral neck and total
    hip; two hip tables without a side (dual femur or a re-scan) are both kept, shown
    and flagged, and the lower neck is the one used (issue 14 item 4)."""
    t1 = [HIP_HEADER, ["Neck", "4.90", "3.40", "0.700", "-1.2", "85", "-0.3", "96"], ["Total", "35.00", "28.00", "0.800", "-1.0", "88", "-0.2", "97"]]
    t2 = [HIP_HEADER, ["Neck", "4.90", "2.80", "0.571", "-2.6", "67", "-1.9", "75"], ["Total", "35.00", "24.50", "0.700", "-2.0", "74", "-1.3", "83"]]
    exam = extract_bmd_exam(_hologic_image(_text({"AnalProtocol": "Hip"}, t1, t2)))
    necks = [r for r in exam.regions if r.site == m.NECK]
    assert [str(r.bmd) for r in necks] == ["0.700", "0.571"] and [r.repeat for r in necks] == [1, 2]
    assert all(r.laterality is None for r in necks)
    assert any("without a side" in f for f in exam.flags)
    assert any("Measured more than once" in f and "0.571" in f and "0.700" in f for f in exam.flags)
    c = classify(exam, age=70, sex="F", menopausal=True, fragility_fracture=False)
    assert c.category == "osteoporosis" and str(c.lowest_score) == "-2.6" and "measurement 2" in c.lowest.name


def test_a_site_scanned_twice_in_one_study_is_kept_and_shown():
    """A left hip scanned twice in one study (two report images): both results are
    kept and flagged, the lowest counts (ISCD: lowest site); the same result sent in
    two carriers (SR and image) is one result (issue 12 item 3, issue 14 item 4)."""
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC)
    images = samples.hologic_report_images(known)
    rescan_exam = dataclasses.replace(known, sop_instance_uid="1.2.3.999", regions=(region("neck", "L", "0.540", "-2.8", "-2.0"), region("total_hip", "L", "0.700", "-2.0", "-1.3", bmc="24.50", area="35.00", ya="74", am="83")))
    rescan = samples.hologic_report_images(rescan_exam)
    parts = _parts([*images, *rescan, samples.hologic_sr(known)])
    exam = merge_exams(parts)
    necks = [r for r in exam.regions if r.key == ("neck", "L")]
    assert sorted(str(r.bmd) for r in necks) == ["0.540", "0.571"] and {r.repeat for r in necks} == {1, 2}
    assert len([r for r in exam.regions if r.key == ("total_hip", "L")]) == 1  # the same value twice is one result
    assert len([r for r in exam.regions if r.key == ("L1", None)]) == 1  # the SR repeats the images
    assert any("Left femoral neck" in f and "0.540" in f for f in exam.flags)
    c = classify(exam, age=66, sex="F", menopausal=None, fragility_fracture=False)
    assert str(c.lowest_score) == "-2.8"


@pytest.mark.parametrize(
    "text, value, marker, unreadable",
    [("-2.5*", "-2.5", "*", ""), (" ", None, "", ""), ("0,826", "0.826", "", ""), ("82%", "82", "", ""), ("-0.045#", "-0.045", "#", ""), ("abc", None, "", "abc"), ("1.2.3", None, "", "1.2.3")],
)
def test_cells_keep_their_marker_and_unreadable_cells_are_named(text, value, marker, unreadable):
    """A cell such as -2.5* keeps its value and its marker (issue 14 item 4; Hologic
    prints * significant, # dissimilar scan types, DOMAIN.md section 2)."""
    cell = read_cell(text)
    assert (str(cell.value) if cell.value is not None else None, cell.marker, cell.unreadable) == (value, marker, unreadable)


def test_a_marked_cell_is_read_and_flagged_on_its_region():
    """Issue 14 item 4: "-2.5*" is read as -2.5 with the marker kept as a flag, not
    dropped; seed 001 "Reporting": the report defines the technical validity of the
    measurement, so what the scanner marked reaches the reporter."""
    t = [HIP_HEADER, ["Neck", "4.90", "2.80", "0.571", "-2.5*", "67", "-1.8", "75"]]
    exam = extract_bmd_exam(_hologic_image(_text({"AnalProtocol": "Hip", "ScanMode": "f Left Hip"}, t)))
    neck = exam.region("neck", "L")
    assert str(neck.t_score) == "-2.5" and any("marked '*'" in f for f in neck.flags)
    assert any("'-2.5*'" in f and "marker '*' kept" in f for f in exam.flags)  # shown in the report's technical section


def test_units_are_converted_or_refused_by_name():
    """Issue 14 item 4: mg/cm2 is converted to g/cm2 (exact digits); an unknown unit
    is refused by name and flagged; an unreadable cell is flagged, never guessed.
    WHO/ISCD categories are defined on g/cm2 T-scores: a value read at the wrong scale
    is a wrong diagnosis; seed 001 "Reporting": technical validity in the report."""
    header = ["Region", "BMD[mg/cm&sup2;]", "BMC[(g)]", "Area[in&sup2;]", "T-score"]
    t = [header, ["Neck", "571", "2.80", "0.76", "abc"]]
    exam = extract_bmd_exam(_hologic_image(_text({"AnalProtocol": "Hip", "ScanMode": "f Left Hip"}, t)))
    neck = exam.region("neck", "L")
    assert str(neck.bmd) == "0.571" and neck.area is None and neck.t_score is None and str(neck.bmc) == "2.80"
    assert any("converted to g/cm2" in f for f in exam.flags)
    assert any("'in2'" in f and "not read" in f for f in exam.flags)
    assert any("'abc'" in f for f in exam.flags) and any("unreadable" in f for f in neck.flags)
    # only unknown units: the object's results cannot be read, and the refusal names the unit
    bad = [["Region", "BMD[g/in&sup2;]"], ["Neck", "3.6"]]
    with pytest.raises(UnparseableSr, match="g/in2"):
        extract_bmd_exam(_hologic_image(_text({"AnalProtocol": "Hip"}, bad)))


def test_dual_hip_rows_take_the_side_from_the_row_and_skip_mean_and_diff():
    """Dual hip prints Neck / Left / Right / Mean / |Diff.| / Total / Left / Right
    (DOMAIN.md section 2); Mean and |Diff.| are not measurements."""
    h = ["Region", "BMD[g/cm<sup><small>2</small></sup>]", "T-score", "Z-score"]
    rows = [["Neck", " ", " ", " "], ["Left", "0.571", "-2.5", "-1.8"], ["Right", "0.600", "-2.3", "-1.6"], ["Mean", "0.586", "-2.4", "-1.7"], ["|Diff.|", "0.029", " ", " "],
            ["Total", " ", " ", " "], ["Left", "0.700", "-2.0", "-1.3"], ["Right", "0.710", "-1.9", "-1.2"]]  # fmt: skip
    exam = extract_bmd_exam(_hologic_image(_text({"AnalProtocol": "Hip", "AnalProtocol2": "Hip"}, [h, *rows])))
    got = {(r.site, r.laterality): str(r.bmd) for r in exam.regions}
    assert got == {("neck", "L"): "0.571", ("neck", "R"): "0.600", ("total_hip", "L"): "0.700", ("total_hip", "R"): "0.710"}


def test_ge_sr_t_scores_sent_as_text_items_are_read():
    """GE enCORE sends BMD_TSCORE and BMD_ZSCORE as TEXT items (DOMAIN.md section 2)."""
    from mappings.bmd import sr_items as sr

    known = known_exam(samples.GE_LAYOUT, GE, regions=(region("neck", "L", "0.571"),))
    ds = samples.ge_sr(known)
    femur = next(item for item in ds.ContentSequence if item.ValueType == "CONTAINER")
    neck = femur.ContentSequence[0]
    neck.ContentSequence.append(sr.text(("BMD_TSCORE", "99LUNAR", "BMD_TSCORE"), "-2.5"))
    neck.ContentSequence.append(sr.text(("BMD_ZSCORE", "99LUNAR", "BMD_ZSCORE"), "-1.8"))
    r = extract_bmd_exam(ds).region("neck", "L")
    assert (str(r.t_score), str(r.z_score)) == ("-2.5", "-1.8")


def test_merge_flags_what_the_objects_disagree_on():
    """What the objects of one study disagree on (device, reference population) is
    flagged for the reporter, not chosen silently (ISCD: T-scores from one White
    female reference; compare only the same or cross-calibrated scanners)."""
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC)
    other = dataclasses.replace(known, sop_instance_uid="1.2.3.997", device=GE, reference_population="White Male", regions=(region("radius_33", "R", "0.650", "-0.8", "0.0"),))
    exam = merge_exams([known, other])
    assert exam.reference_population == "White Female" and exam.device == HOLOGIC
    assert any("reference population" in f and "White Male" in f for f in exam.flags)
    assert any("different devices" in f for f in exam.flags)
    assert exam.sources == (known.sop_instance_uid, "1.2.3.997")
    assert {r.source for r in exam.regions} == {known.sop_instance_uid, "1.2.3.997"}


def test_exam_json_round_trip_keeps_flags_and_repeats():
    """The exam JSON shows repeats and flags to the reporter; it reads back the same."""
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC)
    rescan = dataclasses.replace(known, sop_instance_uid="1.2.3.998", regions=(region("neck", "L", "0.540", "-2.8", "-2.0"),))
    exam = merge_exams(_parts([*samples.hologic_report_images(known), *samples.hologic_report_images(rescan)]))
    data = exam.to_dict()
    assert any(r["repeat"] == 2 for r in data["regions"]) and data["flags"]
    assert type(exam).from_dict(data) == exam
    assert D("0.540") in {r.bmd for r in exam.regions}


def test_hologic_frax_table_reference_title_height_and_weight_are_read():
    """FRAX may come as a table ("10-year Fracture Risk", rows Major Osteoporotic
    Fracture / Hip Fracture, values "12%"); the reference population is printed in
    GraphTitle2; Height/Weight carry their units ("61.5 in", "221.0  lb")
    (DOMAIN.md section 2).  NOGG uses FRAX with BMD; ISCD and NOGG need the
    reference population to be checked (issue 14 item 6)."""
    t1 = [HIP_HEADER, ["Neck", "4.90", "2.80", "0.571", "-2.5", "67", "-1.8", "75"]]
    t2 = [["", "10-year Fracture Risk&sup1;"], ["Major Osteoporotic Fracture", "12%"], ["Hip Fracture", "3.1%"]]
    scalars = {"AnalProtocol": "Hip", "ScanMode": "f Left Hip", "Height": "61.5 in", "Weight": "221.0  lb",
               "GraphTitle2": "T-score vs. White Female. Source:2012 BMDCS/NHANES White Female"}  # fmt: skip
    exam = extract_bmd_exam(_hologic_image(_text(scalars, t1, t2)))
    assert (str(exam.frax.major_with_bmd), str(exam.frax.hip_with_bmd)) == ("12", "3.1")
    assert exam.reference_population == "White Female" and exam.reference_database == "2012 BMDCS/NHANES White Female"
    assert (str(exam.height_cm), str(exam.weight_kg)) == ("156.2", "100.2")
    assert type(exam).from_dict(exam.to_dict()) == exam
    odd = extract_bmd_exam(_hologic_image(_text({**scalars, "Height": "5 ft 1"}, t1)))
    assert odd.height_cm is None and any("Height '5 ft 1'" in f for f in odd.flags)


_CELLS = st.sampled_from(["Region", "Neck", "Total", "L1", "L2-L4", "Left", "Mean", "BMD[mg/cm&sup2;]", "T-score", "BMD[x]", "-2.5*", " ", "abc", "0,5", "1e9999", "\\\"", "NaN"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), _CELLS), max_size=30), st.dictionaries(st.sampled_from(["AnalProtocol", "ScanMode", "AnalProtocol2", "ExcludedVertebrae", "Age"]), _CELLS, max_size=4))
def test_any_hologic_text_gives_an_exam_or_a_named_refusal(cells, scalars):
    """Bad input gets a specific refusal (the project's standards), never another exception."""
    lines = [f'{k} = "{v}";' for k, v in scalars.items()] + [f'ResultsTable1[ {r}][ {c}] = "{v}";' for r, c, v in cells]
    try:
        exam = extract_bmd_exam(_hologic_image("<HologicHeader1>\r\n" + "\r\n".join(lines)))
    except UnparseableSr as exc:
        assert exc.reason
    else:
        assert exam.regions


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/= \"'&;!-?[]abDXA_RESULTSCANROIBMDtype region units0.5,")), max_size=200))
def test_any_ge_xml_gives_an_exam_or_a_named_refusal(noise):
    """Untrusted Image Comments: a named refusal or an exam, nothing else."""
    ds = samples.ge_report_images(known_exam(samples.GE_LAYOUT, GE))[0]
    ds.ImageComments = "<DXA_RESULTS>" + noise
    try:
        exam = extract_bmd_exam(ds)
    except UnparseableSr as exc:
        assert exc.reason
    else:
        assert exam.regions
