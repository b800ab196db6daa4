"""Hologic APEX results text -> :class:`BmdExam`.

APEX puts its results as text in private (0019,xx00) of creator "HOLOGIC"
(docs/domain.md section 2): an XML header, then JavaScript with scalars
``Key = "value";`` and tables ``ResultsTableN[ row][ col] = "value";``.
Row 0 of a table holds the column labels.  Cell indices only place a value
in its table; which region and measure it is comes from the labels, so a
version that reorders rows or columns still parses.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from decimal import Decimal

from mappings.bmd.collect import (
    CANONICAL_UNITS,
    NoResults,
    RegionCollector,
    UnparseableSr,
    convert,
    exam_from_dataset,
    frax_result,
    is_yes,
    read_cell,
    to_decimal,
    unit_factor,
)
from mappings.bmd.labels import BODY, DEFAULT_TABLES, FOREARM, HIP, LATERALITY_WORDS, SPINE, LabelTables, column_unit, normalize
from mappings.bmd.models import BmdExam

LAYOUT = "hologic-apex"
PRIVATE_GROUP = 0x0019
PRIVATE_CREATOR = "HOLOGIC"
MAX_TEXT = 4_000_000  # characters; a results text is a few tens of kB
MAX_INDEX = 500  # rows / columns per table

_STRING = r'"((?:[^"\\\r\n]|\\.)*)"'
_CELL = re.compile(r"\b(ResultsTable\d+)\s*\[\s*(\d+)\s*\]\s*\[\s*(\d+)\s*\]\s*=\s*" + _STRING + r"\s*;")
_SCALAR = re.compile(r"^[ \t]*([A-Za-z_]\w*)[ \t]*=[ \t]*" + _STRING + r"[ \t]*;", re.MULTILINE)


@dataclass
class HologicText:
    """The scalars and tables of one results text."""

    scalars: dict[str, str] = field(default_factory=dict)
    tables: dict[str, dict[tuple[int, int], str]] = field(default_factory=dict)


def results_text(ds: Dataset) -> str | None:
    """The text in (0019,xx00) under creator "HOLOGIC", or None."""
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        elem = block[0x00]
    except (KeyError, ValueError):
        return None
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        for codec in ("utf-8", "latin-1"):
            try:
                return raw.decode(codec).rstrip("\x00 ")
            except UnicodeDecodeError:
                continue
    return None if value is None else str(value)


def split_text(text: str) -> HologicText:
    """Scalars and table cells of a results text (values HTML-unescaped)."""
    if len(text) > MAX_TEXT:
        raise UnparseableSr(f"Hologic results text too long ({len(text)} characters)")
    out = HologicText()
    for name, row, col, value in _CELL.findall(text):
        r, c = int(row), int(col)
        if r < MAX_INDEX and c < MAX_INDEX:
            out.tables.setdefault(name, {})[(r, c)] = html.unescape(_unquote(value))
    for key, value in _SCALAR.findall(text):
        out.scalars.setdefault(key, html.unescape(_unquote(value)))
    return out


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


_SCAN_MODE_PREFIX = re.compile(r"^[afx]\s+", re.IGNORECASE)  # array / fast / express (docs/domain.md section 2)


def scan_of_scalars(scalars: dict[str, str], tables: LabelTables, suffix: str = "") -> tuple[str | None, str | None, str]:
    """(scan type, laterality, scan label) from ``AnalProtocol``/``ScanMode`` (+ ``suffix``: "2" for dual hip).

    Report images name the scan here, not in BodyPartExamined (which was
    ``LSPINE`` on hip series at one site, docs/domain.md section 2).
    """
    found = []
    for key in ("AnalProtocol", "ScanMode"):
        raw = scalars.get(key + suffix, "").strip()
        label = normalize(_SCAN_MODE_PREFIX.sub("", raw))
        if label in tables.scans:
            found.append((*tables.scans[label], raw))
    # the one that names the side, else the first ("Hip" and "f Left Hip")
    return next((f for f in found if f[1]), found[0] if found else (None, None, ""))


@dataclass
class _TableContext:
    scan: str | None  # from the scalars, when the rows do not say
    laterality: str | None  # from the scalars or the series Laterality
    scan_label: str
    number: int
    series_laterality: str | None = None  # (0020,0060) of the report image's series


def _columns(header: dict[int, str], tables: LabelTables, collect: RegionCollector, number: int) -> dict[int, tuple[str, Decimal]]:
    """Column -> (measure, factor to the kept unit); unknown units refused by name."""
    out: dict[int, tuple[str, Decimal]] = {}
    for c, label in header.items():
        measure = tables.measure(label)
        if not measure:
            continue
        unit = column_unit(label)
        factor = unit_factor(measure, unit)
        if factor is None:
            collect.flags.append(
                f"ResultsTable{number}: column {label!r} is in {unit!r}, not a unit the gateway converts "
                f"(expected {CANONICAL_UNITS[measure]}): not read."
            )
            continue
        if factor != 1:
            collect.flags.append(f"ResultsTable{number}: {measure.upper()} printed in {unit}, converted to {CANONICAL_UNITS[measure]}.")
        out[c] = (measure, factor)
    return out


def _read_table(
    cells: dict[tuple[int, int], str], tables: LabelTables, collect: RegionCollector, ctx: _TableContext
) -> tuple[str | None, bool]:
    """Add one table's regions to ``collect``; returns (scan type, has body composition)."""
    header = {c: v for (r, c), v in cells.items() if r == 0}
    region_col = next((c for c, v in header.items() if normalize(v) == "region"), None)
    if region_col is None:
        return None, False
    columns = _columns(header, tables, collect, ctx.number)
    rows = sorted({r for (r, _c) in cells if r > 0})
    labels = [cells.get((r, region_col), "") for r in rows]
    scan = tables.scan_of(labels) or ctx.scan
    if scan != ctx.scan:  # the scalars describe another scan: neither their label nor side apply
        ctx = _TableContext(scan=scan, laterality=ctx.series_laterality, scan_label="", number=ctx.number, series_laterality=ctx.series_laterality)
    body_comp = scan == BODY and any(normalize(v) in tables.body_composition for v in header.values())
    current_site: str | None = None  # dual hip: "Neck" then rows "Left", "Right", "Mean"
    unsided = False
    for r, label in zip(rows, labels):
        text = normalize(label)
        if text in LATERALITY_WORDS and current_site:
            site, side, derived = current_site, LATERALITY_WORDS[text], False
        else:
            site, side, derived = tables.region(scan, label)
            if site is not None:
                current_site = site
        if site is None or derived:
            continue
        if side is None and scan in (HIP, FOREARM):
            side = ctx.laterality
            unsided = unsided or side is None
        group = (ctx.number, r)
        collect.touch(site, side, group)
        collect.set_scan(site, side, ctx.scan_label, group)
        for c, (measure, factor) in columns.items():
            raw = cells.get((r, c))
            cell = read_cell(raw)
            if cell.unreadable:
                collect.flag(site, side, f"{measure} cell {cell.unreadable!r} unreadable: not used", group)
                collect.flags.append(f"ResultsTable{ctx.number}: {label.strip()} {measure} cell {cell.unreadable!r} could not be read.")
                continue
            if cell.value is None:
                continue
            if cell.marker:
                collect.flag(site, side, f"{measure} marked {cell.marker!r} by the scanner", group)
                collect.flags.append(f"ResultsTable{ctx.number}: {label.strip()} {measure} {raw.strip()!r}: read as {cell.value}, marker {cell.marker!r} kept.")
            collect.add(site, side, measure, convert(cell.value, factor), group)
    if unsided:
        collect.flags.append(f"ResultsTable{ctx.number}: {scan} results without a side (left or right not stated).")
    return scan, body_comp


# "T-score vs. White Female. Source:2012 BMDCS/NHANES White Female" (docs/domain.md section 2)
_GRAPH_TITLE = re.compile(r"[TZ]-score vs\.?\s*(?P<population>[^.;]+?)\s*[.;]\s*Source\s*:\s*(?P<database>.+?)\s*$", re.IGNORECASE)


def reference_of_title(title: str) -> tuple[str, str]:
    """(reference database, population) of a GraphTitle scalar, or ("", "")."""
    found = _GRAPH_TITLE.search(title.strip())
    if not found:
        return "", ""
    return found.group("database").strip().rstrip("."), found.group("population").strip()


def frax_table(cells: dict[tuple[int, int], str], tables: LabelTables) -> dict[str, Decimal]:
    """FRAX rows of a table without a Region column ("10-year Fracture Risk",
    rows "Major Osteoporotic Fracture", "Hip Fracture", values "12%")."""
    out: dict[str, Decimal] = {}
    rows = sorted({r for (r, _c) in cells if r > 0})
    for r in rows:
        label = normalize(cells.get((r, 0), ""))
        field_name = tables.frax.get(label)
        if not field_name:
            continue
        for c in sorted(c for (rr, c) in cells if rr == r and c > 0):
            cell = read_cell(cells[(r, c)])
            if cell.value is not None:
                out.setdefault(field_name, cell.value)
                break
    return out


# Height = "61.5 in", Weight = "221.0  lb" (units vary, docs/domain.md section 2)
_LENGTH_CM = {"cm": Decimal(1), "m": Decimal(100), "mm": Decimal("0.1"), "in": Decimal("2.54")}
_MASS_KG = {"kg": Decimal(1), "g": Decimal("0.001"), "lb": Decimal("0.45359237"), "lbs": Decimal("0.45359237")}
_QUANTITY = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*([A-Za-z]*)\s*$")


def _measure(text: str, units: dict[str, Decimal], flags: list[str], name: str) -> Decimal | None:
    """A height in cm / weight in kg from a scalar with its unit (one decimal); None if blank."""
    if not text.strip():
        return None
    found = _QUANTITY.match(text)
    factor = units.get(found.group(2).lower()) if found else None
    if found is None or factor is None:
        flags.append(f"{name} {text.strip()!r}: not a value and unit the gateway converts; not read.")
        return None
    return (Decimal(found.group(1).replace(",", ".")) * factor).quantize(Decimal("0.1"))


def parse_text(text: str, ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """A BmdExam from a results text plus the header attributes of its object.

    :class:`NoResults` when the text holds no results table (a header-only
    block); :class:`UnparseableSr` when it has tables but none could be read.
    """
    parts = split_text(text)
    if not parts.tables:
        raise NoResults("Hologic results text has no results table")
    collect = RegionCollector()
    scans: set[str] = set()
    body_comp = False
    series_side = {"L": "L", "R": "R"}.get(str(ds.get("Laterality", "") or "").strip().upper())
    main = sorted(parts.tables, key=lambda n: int(n[len("ResultsTable"):]))
    region_tables = [n for n in main if any(r == 0 and normalize(v) == "region" for (r, _c), v in parts.tables[n].items())]
    frax = {}
    for name in main:
        if name not in region_tables:
            frax.update({k: v for k, v in frax_table(parts.tables[name], tables).items() if k not in frax})
            continue
        number = int(name[len("ResultsTable"):])
        # the n-th region table belongs to AnalProtocol, AnalProtocol2... (dual hip)
        suffix = "" if name not in region_tables or region_tables.index(name) == 0 else str(region_tables.index(name) + 1)
        scan, side, label = scan_of_scalars(parts.scalars, tables, suffix)
        if scan is None and suffix:
            scan, side, label = scan_of_scalars(parts.scalars, tables)
        ctx = _TableContext(scan=scan, laterality=side or series_side, scan_label=label, number=number, series_laterality=series_side)
        found, bc = _read_table(parts.tables[name], tables, collect, ctx)
        if found:
            scans.add(found)
        body_comp = body_comp or bc
    meta: dict[str, str] = {}
    for key, value in parts.scalars.items():
        k = normalize(key)
        if k in tables.meta:
            meta.setdefault(tables.meta[k], value)
        if k in tables.frax and to_decimal(value) is not None:
            frax[tables.frax[k]] = to_decimal(value)
    if SPINE in scans:
        for site in re.split(r"[,\s;]+", meta.get("excluded", "")):
            if site:
                collect.exclude(site.upper())
    for key in ("GraphTitle2", "GraphTitle1", "GraphTitle"):
        database, population = reference_of_title(parts.scalars.get(key, ""))
        if population:
            meta.setdefault("reference_population", population)
            meta.setdefault("reference_database", database)
    height = _measure(parts.scalars.get("Height", ""), _LENGTH_CM, collect.flags, "Height")
    weight = _measure(parts.scalars.get("Weight", ""), _MASS_KG, collect.flags, "Weight")
    regions = collect.regions()
    if not regions:
        if not region_tables:
            raise NoResults("Hologic results text has no region table")
        why = "; ".join(collect.flags[:3])
        raise UnparseableSr("Hologic results text has no readable region results" + (f" ({why})" if why else ""))
    return exam_from_dataset(
        ds,
        layout=LAYOUT,
        regions=regions,
        frax=frax_result(frax),
        reference_database=meta.get("reference_database", ""),
        reference_population=meta.get("reference_population", ""),
        has_vfa=is_yes(meta.get("vfa", "")),
        has_body_composition=body_comp,
        stated_age=meta.get("age", ""),
        height_cm=height,
        weight_kg=weight,
        flags=tuple(collect.flags),
    )


def parse_hologic(ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """A BmdExam from a Hologic SR; :class:`UnparseableSr` when there is no results text."""
    text = results_text(ds)
    if text is None:
        raise NoResults("no Hologic results text in (0019,xx00)")
    return parse_text(text, ds, tables)


__all__ = ["LAYOUT", "parse_hologic", "parse_text", "results_text", "scan_of_scalars", "split_text"]
