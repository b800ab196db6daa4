"""Walk any SR content tree (PS3.3 C.17.3) and read BMD results by code and label.

Containers name the scan ("AP Spine", "Left Femur") or the region ("L1-L4",
"Neck"); NUM items name the measure ("BMD", "YA T-score", a LOINC code).
A laterality concept modifier (TID 300 style) on a container sets the side.
Nothing is read by position.  Nesting deeper than :data:`MAX_DEPTH` is
refused (pydicom itself fails near 250 levels; docs/architecture.md, Pitfalls).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset

from mappings.bmd.collect import RegionCollector, UnparseableSr, exam_from_dataset, frax_result, is_yes, read_cell, to_decimal
from mappings.bmd.labels import (
    DEFAULT_TABLES,
    LATERALITY_CONCEPTS,
    LATERALITY_VALUES,
    LabelTables,
    normalize,
)
from mappings.bmd.models import BmdExam

LAYOUT = "generic"
# UCUM units a dimensioned measure must be in when its NUM names them
# (PS3.16 TID 1419-style MeasurementUnitsCodeSequence).  Any other unit is
# refused rather than read at the wrong scale (mg/cm2 read as g/cm2 would
# be a T-score off by orders of magnitude).
EXPECTED_UNITS = {"bmd": "g/cm2", "bmc": "g", "area": "cm2"}
MAX_DEPTH = 32
MAX_ITEMS = 100_000


@dataclass(frozen=True, slots=True)
class _Context:
    scan: str | None = None
    laterality: str | None = None
    site: str | None = None
    frax: bool = False


@dataclass
class WalkResult:
    """Everything a walk found."""

    collect: RegionCollector = field(default_factory=RegionCollector)
    frax: dict = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    has_vfa: bool = False
    has_body_composition: bool = False
    items: int = 0


def _concept(item: Dataset, keyword: str = "ConceptNameCodeSequence") -> tuple[str, str, str]:
    seq = item.get(keyword)
    if not seq:
        return ("", "", "")
    code = seq[0]
    return (str(code.get("CodeValue", "") or ""), str(code.get("CodingSchemeDesignator", "") or ""), str(code.get("CodeMeaning", "") or ""))


def _laterality(children) -> str | None:
    for child in children:
        if child.get("ValueType") == "CODE":
            value, scheme, _ = _concept(child)
            if (scheme, value) in LATERALITY_CONCEPTS:
                cv, cs, _ = _concept(child, "ConceptCodeSequence")
                return LATERALITY_VALUES.get((cs, cv))
    return None


def _container_context(ctx: _Context, name: tuple[str, str, str], tables: LabelTables, out: WalkResult) -> _Context:
    label = normalize(name[2])
    if label in tables.scans:
        scan, side = tables.scans[label]
        return _Context(scan=scan, laterality=side)
    if tables.meta.get(label) == "vfa":
        out.has_vfa = True
        return ctx
    if label == "frax":
        return replace(ctx, frax=True)
    if label in tables.body_composition or label == "body composition":
        out.has_body_composition = True
        return ctx
    site, side, derived = tables.region(ctx.scan, name[2])
    if site and not derived:
        return replace(ctx, site=site, laterality=side or ctx.laterality)
    return ctx


def _num(item: Dataset, ctx: _Context, tables: LabelTables, out: WalkResult) -> None:
    value_code, scheme, meaning = _concept(item)
    key = (scheme, value_code)
    mvs = item.get("MeasuredValueSequence")
    value = to_decimal(mvs[0].get("NumericValue")) if mvs else None
    if value is None:
        return
    frax_field = tables.code_frax.get(key) or tables.frax.get(normalize(meaning))
    if frax_field and (ctx.frax or key in tables.code_frax or ctx.site is None):
        out.frax.setdefault(frax_field, value)
        return
    measure = tables.measure(meaning) or tables.code_measures.get(key)
    if not measure:
        return
    expected = EXPECTED_UNITS.get(measure)
    if expected:
        units = mvs[0].get("MeasurementUnitsCodeSequence")
        unit = str(units[0].get("CodeValue", "") or "").strip() if units else ""
        if unit and unit != expected:
            raise UnparseableSr(f"{measure.upper()} in {unit!r}, expected {expected}")
    site, side = ctx.site, ctx.laterality
    if site is None and key in tables.code_sites:
        scan, label = tables.code_sites[key]
        site = tables.region(scan, label)[0]
    if site:
        out.collect.add(site, side, measure, value)


def _text_item(item: Dataset, ctx: _Context, tables: LabelTables, out: WalkResult) -> None:
    _, _, meaning = _concept(item)
    field_name = tables.meta.get(normalize(meaning))
    text = str(item.get("TextValue", "") or "")
    if field_name == "excluded" and ctx.site:
        out.collect.add(ctx.site, ctx.laterality, "excluded", is_yes(text))
    elif field_name == "vfa":
        out.has_vfa = out.has_vfa or is_yes(text)
    elif field_name:
        out.meta.setdefault(field_name, text)
    elif ctx.site and tables.measure(meaning) in ("t_score", "z_score", "pct_young_adult", "pct_age_matched"):
        # GE enCORE sends BMD_TSCORE / BMD_ZSCORE as TEXT items (docs/domain.md section 2)
        cell = read_cell(text)
        if cell.unreadable:
            out.collect.flags.append(f"{meaning} {cell.unreadable!r} could not be read.")
        elif cell.value is not None:
            out.collect.add(ctx.site, ctx.laterality, tables.measure(meaning), cell.value)


def _walk(items, ctx: _Context, depth: int, tables: LabelTables, out: WalkResult) -> None:
    if depth > MAX_DEPTH:
        raise UnparseableSr(f"SR content nested deeper than {MAX_DEPTH} levels")
    for item in items:
        out.items += 1
        if out.items > MAX_ITEMS:
            raise UnparseableSr(f"SR has more than {MAX_ITEMS} content items")
        vt = item.get("ValueType", "")
        if vt == "CONTAINER":
            inner = _container_context(ctx, _concept(item), tables, out)
            children = item.get("ContentSequence") or []
            side = _laterality(children)
            if side:
                inner = replace(inner, laterality=side)
            if inner.site:
                out.collect.touch(inner.site, inner.laterality)
            _walk(children, inner, depth + 1, tables, out)
        else:
            if vt == "NUM":
                _num(item, ctx, tables, out)
            elif vt == "TEXT":
                _text_item(item, ctx, tables, out)
            if "ContentSequence" in item:  # by-value children of a non-container
                _walk(item.ContentSequence, ctx, depth + 1, tables, out)


def walk(ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> WalkResult:
    """Walk the content tree from the root; :class:`UnparseableSr` if too deep."""
    out = WalkResult()
    root = _container_context(_Context(), _concept(ds), tables, out)
    try:
        _walk(ds.get("ContentSequence") or [], root, 1, tables, out)
    except RecursionError:
        raise UnparseableSr("SR content nested too deeply") from None
    except (AttributeError, TypeError, IndexError) as exc:
        # An element whose VR is not the one PS3.3 C.17.3 gives it (a
        # "sequence" read as a number or text) is malformed content, not
        # our fault (found by tests/fuzz, ge_lunar target).
        raise UnparseableSr(f"SR content item has the wrong value representation ({type(exc).__name__})") from None
    return out


def parse_generic(ds: Dataset, tables: LabelTables = DEFAULT_TABLES, *, layout: str = LAYOUT) -> BmdExam:
    """A BmdExam from any SR whose items are named by known codes or labels."""
    if "ContentSequence" not in ds:
        raise UnparseableSr("SR has no content")
    found = walk(ds, tables)
    regions = found.collect.regions()
    if not regions:
        raise UnparseableSr("no BMD results found in the SR content")
    return exam_from_dataset(
        ds,
        layout=layout,
        regions=regions,
        frax=frax_result(found.frax),
        reference_database=found.meta.get("reference_database", ""),
        reference_population=found.meta.get("reference_population", ""),
        has_vfa=found.has_vfa,
        has_body_composition=found.has_body_composition,
        stated_age=found.meta.get("age", ""),
        flags=tuple(found.collect.flags),
    )
