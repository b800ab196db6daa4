"""Hologic APEX results text -> :class:`BmdExam`.

APEX puts its results as text in private (0019,xx00) of creator "HOLOGIC"
(DOMAIN.md section 2): an XML header, then JavaScript with scalars
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

from mappings.bmd.collect import RegionCollector, UnparseableSr, exam_from_dataset, frax_result, is_yes, to_decimal
from mappings.bmd.labels import BODY, DEFAULT_TABLES, SPINE, LabelTables, normalize
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


def _read_table(cells: dict[tuple[int, int], str], tables: LabelTables, collect: RegionCollector) -> tuple[str | None, bool]:
    """Add one table's regions to ``collect``; returns (scan type, has body composition)."""
    header = {c: v for (r, c), v in cells.items() if r == 0}
    region_col = next((c for c, v in header.items() if normalize(v) == "region"), None)
    if region_col is None:
        return None, False
    measures = {c: tables.measure(v) for c, v in header.items()}
    rows = sorted({r for (r, _c) in cells if r > 0})
    labels = [cells.get((r, region_col), "") for r in rows]
    scan = tables.scan_of(labels)
    body_comp = scan == BODY and any(normalize(v) in tables.body_composition for v in header.values())
    for r, label in zip(rows, labels):
        site, side, derived = tables.region(scan, label)
        if site is None or derived:
            continue
        for c, measure in measures.items():
            if measure:
                collect.add(site, side, measure, to_decimal(cells.get((r, c))))
    return scan, body_comp


def parse_text(text: str, ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """A BmdExam from a results text plus the SR's header attributes."""
    parts = split_text(text)
    collect = RegionCollector()
    scans: set[str] = set()
    body_comp = False
    for name in sorted(parts.tables, key=lambda n: int(n[len("ResultsTable"):])):
        scan, bc = _read_table(parts.tables[name], tables, collect)
        if scan:
            scans.add(scan)
        body_comp = body_comp or bc
    meta: dict[str, str] = {}
    frax = {}
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
    regions = collect.regions()
    if not regions:
        raise UnparseableSr("Hologic results text has no region results")
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
    )


def parse_hologic(ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """A BmdExam from a Hologic SR; :class:`UnparseableSr` when there is no results text."""
    text = results_text(ds)
    if text is None:
        raise UnparseableSr("no Hologic results text in (0019,xx00)")
    return parse_text(text, ds, tables)


__all__ = ["LAYOUT", "parse_hologic", "parse_text", "results_text", "split_text"]
