"""The trend SVG (mappings/bmd/trend_svg.py): BMD per site over time with the LSC band."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D
from xml.etree import ElementTree as ET

from mappings.bmd.compare import LscTable
from mappings.bmd.models import Device
from mappings.bmd.trend_svg import trend_sites, trend_svg
from tests.unit.bmd.helpers import HOLOGIC, known_exam

SVG = "{http://www.w3.org/2000/svg}"


def _series():
    current = known_exam("hologic", HOLOGIC)
    older = [
        dataclasses.replace(current, exam_date=day, sop_instance_uid=f"1.2.3.{i}", regions=tuple(dataclasses.replace(r, bmd=r.bmd + D(step)) for r in current.regions))
        for i, (day, step) in enumerate((("20200301", "0.060"), ("20220415", "0.020")))
    ]
    return current, older


def test_sites_and_points_oldest_first_with_the_lsc_of_the_current_scanner():
    """ISCD (DOMAIN.md section 4): LSC per site and scanner; the percent defaults
    (5.3% spine, 5.0% total hip, 6.9% neck) become g/cm2 at the baseline's BMD.
    Ward's and excluded vertebrae are never trended (not used for comparison)."""
    current, older = _series()
    sites = trend_sites(current, older, lsc=LscTable(absolute={"neck": D("0.030")}))
    names = [s.name for s in sites]
    assert not any("Ward" in n for n in names)
    neck = next(s for s in sites if s.site == "neck" and s.laterality == "L")
    assert [p.exam_date for p in neck.points] == ["20200301", "20220415", "20240501"]
    assert [p.bmd for p in neck.points] == [D("0.631"), D("0.591"), D("0.571")]
    assert neck.points[-1].current and neck.lsc == D("0.030") and neck.lsc_source == "g/cm2"
    hip = next(s for s in sites if s.site == "total_hip" and s.laterality == "L")
    assert hip.lsc == D("0.038") and hip.lsc_source == "5.0%"  # 5.0% of the 2020 baseline 0.760


def test_another_scanner_is_drawn_hollow_and_never_the_baseline():
    """ISCD: compare only the same scanner or cross-calibrated ones."""
    current, older = _series()
    older[0] = dataclasses.replace(older[0], device=Device("GE Healthcare", "Lunar iDXA", "999"))
    neck = next(s for s in trend_sites(current, older) if s.site == "neck" and s.laterality == "L")
    assert [p.comparable for p in neck.points] == [False, True, True]
    assert neck.baseline.exam_date == "20220415"
    svg = trend_svg((neck,), title="t")
    assert "other scanner: not comparable" in svg


def test_svg_is_xml_accessible_and_names_every_site_and_value():
    """The SVG parses, has a title and a desc (WCAG: text alternative), axis labels,
    one band per site with an LSC, and no script or external reference."""
    current, older = _series()
    sites = trend_sites(current, older)
    svg = trend_svg(sites, title="BMD trend for PAT-001")
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg" and root.get("role") == "img"
    assert root.find(SVG + "title").text == "BMD trend for PAT-001"
    desc = root.find(SVG + "desc").text
    for s in sites:
        assert s.name in svg
    assert "0.571 g/cm2" in desc and "least significant change" in desc
    labels = [t.text for t in root.iter(SVG + "text") if t.get("class") == "axis-label"]
    assert labels.count("BMD (g/cm²)") == len(sites) and labels.count("Exam date") == len(sites)
    bands = [r for r in root.iter(SVG + "rect") if r.get("class") == "lsc-band"]
    assert len(bands) == sum(1 for s in sites if s.lsc is not None) > 0
    assert "<script" not in svg and "href" not in svg and "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert trend_svg(sites, title="BMD trend for PAT-001") == svg  # deterministic


def test_significant_change_from_baseline_is_marked():
    """A point whose change from the baseline equals or exceeds the LSC lies
    outside the band ("equals or exceeds", ISCD) and is drawn red."""
    current, older = _series()
    neck = next(s for s in trend_sites(current, older, lsc=LscTable(absolute={"neck": D("0.060")})) if s.site == "neck" and s.laterality == "L")
    svg = trend_svg((neck,))
    assert svg.count("outside the LSC band") == 2  # the current point, in its <title> and in <desc>
    assert "2022-04-15: 0.591 g/cm2;" in svg  # 0.040 from baseline: inside


def test_nothing_to_plot_is_still_a_valid_svg():
    current = dataclasses.replace(known_exam("hologic", HOLOGIC), regions=())
    svg = trend_svg(trend_sites(current, []))
    ET.fromstring(svg)
    assert "No BMD results to plot." in svg
