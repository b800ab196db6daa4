import dataclasses
from decimal import Decimal as D

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mappings.bmd import samples
from mappings.bmd import sr_items as sr
from mappings.bmd.collect import UnparseableSr
from mappings.bmd.extract import extract_bmd_exam
from mappings.bmd.labels import DEFAULT_TABLES, normalize
from mappings.bmd.models import Device
from tests.unit.bmd.helpers import GE, HOLOGIC, bare, header, known_exam


def _digits(exam):
    return [(r.site, r.laterality, *(str(getattr(r, f)) for f in ("bmd", "bmc", "area", "t_score", "z_score", "pct_young_adult", "pct_age_matched")), r.excluded) for r in exam.regions]


def test_hologic_known_values_to_the_last_digit():
    exam = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC)
    got = extract_bmd_exam(samples.hologic_sr(exam))
    assert bare(got) == exam
    assert _digits(got) == _digits(exam)  # "0.810" stays "0.810", "-1.80" stays "-1.80"
    assert str(got.region("L1").bmd) == "0.810"
    assert str(got.region("neck", "L").z_score) == "-1.80"
    assert str(got.frax.hip_without_bmd) == "6.30"


def test_ge_known_values_to_the_last_digit():
    exam = known_exam(samples.GE_LAYOUT, GE)
    got = extract_bmd_exam(samples.ge_sr(exam))
    assert bare(got) == exam
    assert _digits(got) == _digits(exam)


def _nums(items):
    for item in items:
        if item.get("ValueType") == "NUM":
            yield item
        yield from _nums(item.get("ContentSequence") or [])


@pytest.mark.parametrize("unit", ["mg/cm2", "kg/m2"])
def test_bmd_in_other_units_is_unparseable_not_rescaled(unit):
    ds = samples.ge_sr(known_exam("ge", GE))
    bmd = next(n for n in _nums(ds.ContentSequence) if n.ConceptNameCodeSequence[0].CodeMeaning == "BMD")
    bmd.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = unit
    with pytest.raises(UnparseableSr, match=unit):
        extract_bmd_exam(ds)


def test_bmd_in_g_per_cm2_parses():
    ds = samples.ge_sr(known_exam("ge", GE))
    assert extract_bmd_exam(ds).regions


def test_hologic_spine_total_named_by_included_vertebrae():
    text = samples.hologic_text(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC))
    assert 'ExcludedVertebrae = "L3"' in text and '= "Total";' in text
    assert "L1,L2,L4" not in text  # the vendor prints "Total"; the parser names it


def test_hologic_labels_reordered_still_parse():
    """Columns and rows in another order (another APEX version): labels decide."""
    text = """<JavaScriptFile>
ResultsTable1[ 0][ 0] = "T-Score";
ResultsTable1[ 0][ 1] = "Region";
ResultsTable1[ 0][ 2] = "BMD[g/cm&sup2;]";
ResultsTable1[ 1][ 1] = "Total";
ResultsTable1[ 1][ 0] = "-2.6";
ResultsTable1[ 1][ 2] = "0.770";
ResultsTable1[ 2][ 1] = "Femoral Neck Right";
ResultsTable1[ 2][ 2] = "0.600";
ResultsTable1[ 2][ 0] = "-2.3";
</JavaScriptFile>"""
    ds = samples.hologic_sr(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC), text=text)
    got = extract_bmd_exam(ds)
    assert got.region("total_hip") is not None and str(got.region("total_hip").bmd) == "0.770"
    assert str(got.region("neck", "R").t_score) == "-2.3"


def test_hologic_dual_hip_mean_and_diff_rows_are_not_results():
    text = samples.hologic_text(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC))
    assert "Neck Mean" in text and "|Diff.|" in text
    got = extract_bmd_exam(samples.hologic_sr(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC)))
    assert {r.laterality for r in got.regions if r.site == "neck"} == {"L", "R"}


def _unknown_vendor_sr(**device):
    """An SR from a vendor the gateway has no table for, coded with LOINC and labels."""
    exam = known_exam("generic", Device("ACME Bone", "Densi 1"))
    content = [
        sr.container(
            ("X1", "99ACME", "Lumbar Spine"),
            [
                sr.container(("X2", "99ACME", "L1 - L4"), [
                    sr.num(("24966-4", "LN", "Lumbar spine BMD"), "0.912", ("g/cm2", "UCUM", "g/cm2")),
                    sr.num(("X3", "99ACME", "T-score"), "-1.0", ("1", "UCUM", "1")),
                ]),
            ],
        ),
        sr.container(
            ("X4", "99ACME", "Hip"),
            [
                sr.coded(("272741003", "SCT", "Laterality"), ("24028007", "SCT", "Right"), "HAS CONCEPT MOD"),
                sr.container(("X5", "99ACME", "Femoral Neck"), [
                    sr.num(("X6", "99ACME", "BMD"), "0.650", ("g/cm2", "UCUM", "g/cm2")),
                    sr.num(("113071", "DCM", "Z-score"), "-2.0", ("1", "UCUM", "1")),
                ]),
            ],
        ),
        sr.num(("38264-8", "LN", "Hip T-score"), "-1.9", ("1", "UCUM", "1")),
        sr.num(("90265-0", "LN", "FRAX major"), "11.5", ("%", "UCUM", "%")),
        sr.text(("X7", "99ACME", "Reference Database"), "ACME NHANES"),
    ]
    return sr.sr_document(
        samples.exam_header(exam),
        sop_class=sr.COMPREHENSIVE_SR,
        series_uid="1.2.3.4",
        sop_uid="1.2.3.5",
        title=("X0", "99ACME", "Bone Report"),
        content=content,
        device={"Manufacturer": "ACME Bone", "ManufacturerModelName": "Densi 1"},
    )


def test_unknown_vendor_through_generic_parser():
    got = extract_bmd_exam(_unknown_vendor_sr())
    assert got.layout == "generic"
    spine = got.region("L1-L4")
    assert (str(spine.bmd), str(spine.t_score)) == ("0.912", "-1.0")
    neck = got.region("neck", "R")
    assert (str(neck.bmd), str(neck.z_score)) == ("0.650", "-2.0")
    assert str(got.region("total_hip").t_score) == "-1.9"  # site from the LOINC code alone
    assert str(got.frax.major_with_bmd) == "11.5"
    assert got.reference_database == "ACME NHANES"
    assert got.device == Device("ACME Bone", "Densi 1")


def test_extra_tables_add_a_layout():
    ds = _unknown_vendor_sr()
    ds.ContentSequence.append(
        sr.container(("Y", "99ACME", "Avant-bras"), [
            sr.container(("Y2", "99ACME", "Radius 1/3 tiers"), [sr.num(("Y3", "99ACME", "Densité"), "0.701", ("g/cm2", "UCUM", "g/cm2"))])
        ])
    )
    assert extract_bmd_exam(ds).region("radius_33") is None
    tables = DEFAULT_TABLES.extend(
        scans={"Avant-bras": ("forearm", None)},
        regions={"forearm": {"Radius 1/3 tiers": "radius_33"}},
        measures={"Densité": "bmd"},
    )
    assert str(extract_bmd_exam(ds, tables).region("radius_33").bmd) == "0.701"
    assert DEFAULT_TABLES.measure("Densité") is None  # the defaults are untouched


def test_label_normalization():
    assert normalize("BMD[g/cm&sup2;]") == "bmd"
    assert normalize("  L1 -  L4 ") == "l1-l4"
    assert DEFAULT_TABLES.measure("YA  T-Score") == "t_score"
    assert DEFAULT_TABLES.measure("%YA") == "pct_young_adult"
    assert DEFAULT_TABLES.region("forearm", "Radius 33%")[0] == "radius_33"
    assert DEFAULT_TABLES.region("hip", "Total Femur")[0] == "total_hip"


# -- refusals ----------------------------------------------------------------
def _bare(**attrs):
    ds = Dataset()
    ds.SOPClassUID = sr.ENHANCED_SR
    ds.Manufacturer = attrs.pop("Manufacturer", "ACME")
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_missing_content_is_unparseable():
    with pytest.raises(UnparseableSr, match="no SR content"):
        extract_bmd_exam(_bare())


def test_empty_content_is_unparseable():
    ds = _bare(ContentSequence=Sequence([sr.text(("A", "99X", "Comment"), "nothing here")]))
    with pytest.raises(UnparseableSr, match="no BMD results"):
        extract_bmd_exam(ds)


def test_garbage_hologic_text_is_unparseable():
    ds = samples.hologic_sr(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC), text="\x00\x01garbage {{{ ResultsTable1[ x] = ;")
    with pytest.raises(UnparseableSr, match="no results table"):
        extract_bmd_exam(ds)


def test_hologic_values_that_are_not_numbers_are_dropped_not_guessed():
    text = '<JavaScriptFile>\nResultsTable1[ 0][ 0] = "Region";\nResultsTable1[ 0][ 1] = "BMD";\nResultsTable1[ 1][ 0] = "Neck";\nResultsTable1[ 1][ 1] = "NaN";\n</JavaScriptFile>'
    with pytest.raises(UnparseableSr):
        extract_bmd_exam(samples.hologic_sr(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC), text=text))


@pytest.mark.parametrize("depth", [40, 400])
def test_deep_nesting_is_unparseable(depth):
    inner = sr.num(("BMD", "99X", "BMD"), "0.9", ("g/cm2", "UCUM", "g/cm2"))
    for _ in range(depth):
        inner = sr.container(("C", "99X", "Neck"), [inner])
    ds = _bare(ContentSequence=Sequence([inner]))
    with pytest.raises(UnparseableSr, match="nested"):
        extract_bmd_exam(ds)


def test_malformed_num_is_unparseable_not_a_crash():
    item = sr.num(("BMD", "99X", "BMD"), "0.9", ("g/cm2", "UCUM", "g/cm2"))
    item.MeasuredValueSequence = Sequence()
    ds = _bare(ContentSequence=Sequence([sr.container(("N", "99X", "Femoral Neck"), [item])]))
    with pytest.raises(UnparseableSr):
        extract_bmd_exam(ds)


def test_dose_sr_is_not_a_bmd_sr():
    import random

    with pytest.raises(UnparseableSr, match="Dose"):
        extract_bmd_exam(samples.build_dose_sr(header(), random.Random(1)))


def test_exam_json_round_trip():
    exam = known_exam(samples.GE_LAYOUT, GE)
    data = exam.to_dict()
    assert data["regions"][0]["bmd"] == "0.810"
    assert type(exam).from_dict(data) == exam
    assert dataclasses.replace(exam, frax=None).to_dict()["frax"] is None
