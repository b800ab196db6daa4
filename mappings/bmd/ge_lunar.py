"""GE Lunar enCORE Enhanced SR -> :class:`BmdExam`.

The layout (root container "DXA Report", one container per scan and per
region, NUM items named by the printed labels) is read by the generic walker
with the label tables; see :mod:`mappings.bmd.codes` for what is uncertain.
"""

from __future__ import annotations

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from pydicom.dataset import Dataset

from mappings.bmd.collect import NoResults, RegionCollector, UnparseableSr, convert, exam_from_dataset, read_cell, unit_factor
from mappings.bmd.generic import parse_generic
from mappings.bmd.labels import DEFAULT_TABLES, LabelTables, normalize
from mappings.bmd.models import BmdExam

LAYOUT = "ge-lunar-encore"
ROOT_NAMES = frozenset({"dxa report"})
MANUFACTURER_MARKS = ("GE ", "GE_", "LUNAR", "GE HEALTHCARE", "GE MEDICAL")


def is_ge_lunar(ds: Dataset) -> bool:
    """Manufacturer says GE / Lunar, or the root container is "DXA Report"."""
    maker = str(ds.get("Manufacturer", "") or "").upper() + " "
    seq = ds.get("ConceptNameCodeSequence")
    root = normalize(seq[0].get("CodeMeaning", "")) if seq else ""
    return root in ROOT_NAMES or any(mark in maker for mark in MANUFACTURER_MARKS)


def parse_ge_lunar(ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """A BmdExam from an enCORE SR; :class:`UnparseableSr` when nothing is read."""
    if "ContentSequence" not in ds:
        raise UnparseableSr("GE Lunar SR has no content")
    return parse_generic(ds, tables, layout=LAYOUT)


# -- Image Comments (0020,4000) XML ----------------------------------------------------------
# GE images carry the results as XML in Image Comments (docs/domain.md section 2):
# older <DENSITOMETRY_RESULTS><CURRENT_EXAM><SCAN type="AP Spine"><TREND>
# <TREND_ROI ...><BMD>/<YAT>/<AMZ>, newer <DXA_RESULTS><SCAN type="DualFemur">
# <ROI region="Neck Left"><BMD units=" g/cm2">0.826</BMD><BMD_TSCORE>...
# Read with defusedxml (no DTD, no entities: the text is untrusted).  Which
# attribute names an older TREND_ROI's region is not public (**uncertain**):
# "region", "name" or "type" are accepted.
XML_LAYOUT = "ge-lunar-image-xml"
XML_ROOTS = ("<DXA_RESULTS", "<DENSITOMETRY_RESULTS")
MAX_XML = 1_000_000  # characters; the results XML is a few kB
_ROI_TAGS = frozenset({"roi", "trend_roi"})
_HISTORY_TAGS = frozenset({"previous_exam", "history", "previous"})  # the scanner's history, not this exam


def image_comments_xml(ds: Dataset) -> str | None:
    """The results XML in Image Comments (0020,4000), or None."""
    text = ds.get("ImageComments")
    if text is None:
        return None
    text = str(text)
    return text if any(root in text[:4096] for root in XML_ROOTS) else None


def _walk_xml(elem, scan: str | None, side: str | None, tables: LabelTables, collect, counter: list[int], label: str) -> None:
    tag = elem.tag.lower() if isinstance(elem.tag, str) else ""
    if tag in _HISTORY_TAGS:
        return
    if tag == "scan":
        name = normalize(elem.get("type", ""))
        scan, side = tables.scans.get(name, (None, None))
        label = elem.get("type", "")
    if tag in _ROI_TAGS:
        region_label = elem.get("region") or elem.get("name") or elem.get("type") or ""
        site, row_side, derived = tables.region(scan, region_label)
        if site is None or derived:
            return
        row_side = row_side or side
        counter[0] += 1
        group = counter[0]
        collect.touch(site, row_side, group)
        collect.set_scan(site, row_side, label, group)
        for child in elem:
            measure = tables.measure(child.tag) if isinstance(child.tag, str) else None
            if not measure:
                continue
            unit = "".join((child.get("units") or "").split()).lower().replace("\u00b2", "2")
            factor = unit_factor(measure, unit)
            if factor is None:
                collect.flag(site, row_side, f"{measure} in unknown unit {unit!r}: not read", group)
                collect.flags.append(f"{label} {region_label}: {child.tag} in {unit!r}, not a unit the gateway converts: not read.")
                continue
            cell = read_cell(child.text)
            if cell.unreadable:
                collect.flag(site, row_side, f"{measure} value {cell.unreadable!r} unreadable: not used", group)
                collect.flags.append(f"{label} {region_label}: {child.tag} value {cell.unreadable!r} could not be read.")
                continue
            if cell.value is None:
                continue
            if cell.marker:
                collect.flag(site, row_side, f"{measure} marked {cell.marker!r} by the scanner", group)
            collect.add(site, row_side, measure, convert(cell.value, factor), group)
        return
    for child in elem:
        _walk_xml(child, scan, side, tables, collect, counter, label)


def parse_image_comments(text: str, ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """A BmdExam from the results XML of a GE image; refusals name the reason."""
    if len(text) > MAX_XML:
        raise UnparseableSr(f"GE results XML too long ({len(text)} characters)")
    try:
        root = fromstring(text.strip().lstrip("\ufeff"), forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise UnparseableSr(f"GE results XML not readable: {type(exc).__name__}") from None
    collect = RegionCollector()
    _walk_xml(root, None, None, tables, collect, [0], "")
    regions = collect.regions()
    if not regions:
        raise NoResults("GE results XML holds no region results")
    return exam_from_dataset(ds, layout=XML_LAYOUT, regions=regions, flags=tuple(collect.flags))
