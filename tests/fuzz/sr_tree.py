"""A compact byte grammar for SR content trees, for the structure-aware GE target.

The ``ge_lunar`` target hands whole Part 10 files to pydicom, which costs
about 20 ms an input before the GE walker runs (pydicom's reader is most of
what it exercises).  ``ge_lunar_tree`` instead decodes the fuzzer's bytes
into an SR content tree (PS3.3 C.17.3) built directly as pydicom datasets:
every byte string decodes to some tree, strings are either literal or drawn
from the vocabulary the walker looks for (the label tables, units, value
types), and odd shapes the walker must survive (a missing concept name, a
MeasuredValueSequence that is empty or not a sequence, an unknown value
type) are one opcode away.  :func:`encode` turns a real SR into these bytes,
so the seeds are the sample GE layouts.

Grammar (one opcode byte per node, ``op % 8``)::

    0 end of the children      1 CONTAINER name, children...
    2 NUM name value unit      3 TEXT name text
    4 CODE name value scheme meaning
    5 item of any value type: type name
    6 laterality modifier (HAS CONCEPT MOD) value
    7 odd shape: next byte picks it

A string is a length byte: below 0x80 that many bytes follow (latin-1);
from 0x80 the low bits index :data:`VOCAB`.
"""

from __future__ import annotations

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mappings.bmd.labels import (
    FRAX_LABELS,
    LATERALITY_VALUES,
    MEASURE_LABELS,
    META_LABELS,
    REGION_LABELS,
    SCAN_LABELS,
)

MAX_NODES = 400
MAX_DEPTH = 40  # beyond the walker's MAX_DEPTH (32): its refusal is exercised too

VOCAB: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            "DXA Report", "GE Healthcare", "LUNAR", "HOLOGIC", "", " ",
            "CONTAINER", "NUM", "TEXT", "CODE", "DATE", "PNAME", "UIDREF",
            "g/cm2", "g/cm²", "g", "cm2", "mg/cm2", "%", "{T-score}", "1", "kg", "cm",
            "L", "R", "Left", "Right", "Laterality", "Mean", "Diff.",
            "0.826", "-2.5", "-1.0", "1.234E+00", "NaN", "inf", "—", "*", "0.826*", "x",
            "SCT", "DCM", "LN", "SRT", "99GEMS", "7771000", "24028007", "272741003", "G-C171",
            *MEASURE_LABELS, *SCAN_LABELS, *FRAX_LABELS, *META_LABELS,
            *(label for table in REGION_LABELS.values() for label in table),
            *(value for _, value in LATERALITY_VALUES),
        ]
    )
)[:128]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.nodes = 0

    def byte(self) -> int | None:
        if self.pos >= len(self.data):
            return None
        b = self.data[self.pos]
        self.pos += 1
        return b

    def text(self) -> str:
        n = self.byte()
        if n is None:
            return ""
        if n & 0x80:
            return VOCAB[(n & 0x7F) % len(VOCAB)]
        s = self.data[self.pos : self.pos + n]
        self.pos += n
        return s.decode("latin-1")


_CODES: dict[tuple[str, str, str], Dataset] = {}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    """A code item; the same three strings share one dataset (the walker only reads them)."""
    key = (value, scheme, meaning)
    item = _CODES.get(key)
    if item is not None:
        return item
    if len(_CODES) > 4096:
        _CODES.clear()
    item = _CODES[key] = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _set(item: Dataset, keyword: str, value: object) -> None:
    """Assign as pydicom would read it; a value pydicom refuses is left out."""
    try:
        setattr(item, keyword, value)
    except (ValueError, TypeError, OverflowError):
        pass


def _named(value_type: str, name: str, relationship: str = "CONTAINS") -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    _set(item, "ValueType", value_type)
    item.ConceptNameCodeSequence = Sequence([_code("", "99GEMS", name)])
    return item


def _odd(r: _Reader, depth: int) -> Dataset:
    shape = (r.byte() or 0) % 6
    if shape == 0:  # no concept name at all
        item = Dataset()
        _set(item, "ValueType", r.text())
        return item
    item = _named("NUM", r.text())
    if shape == 1:
        item.MeasuredValueSequence = Sequence([])
    elif shape == 2:
        _set(item, "MeasuredValueSequence", r.text())  # another VR: pydicom refuses or keeps it
    elif shape == 3:  # a value without units
        mv = Dataset()
        _set(mv, "NumericValue", r.text())
        item.MeasuredValueSequence = Sequence([mv])
    elif shape == 4:  # an empty concept name sequence
        item.ConceptNameCodeSequence = Sequence([])
    else:  # a NUM that also holds children
        item.ContentSequence = Sequence(_children(r, depth + 1))
    return item


def _node(r: _Reader, op: int, depth: int) -> Dataset | None:
    kind = op % 8
    if kind == 1:
        item = _named("CONTAINER", r.text())
        item.ContinuityOfContent = "SEPARATE"
        item.ContentSequence = Sequence(_children(r, depth + 1))
        return item
    if kind == 2:
        item = _named("NUM", r.text())
        mv = Dataset()
        _set(mv, "NumericValue", r.text())
        mv.MeasurementUnitsCodeSequence = Sequence([_code(r.text(), "UCUM", "")])
        item.MeasuredValueSequence = Sequence([mv])
        return item
    if kind == 3:
        item = _named("TEXT", r.text())
        _set(item, "TextValue", r.text())
        return item
    if kind == 4:
        item = _named("CODE", r.text())
        item.ConceptCodeSequence = Sequence([_code(r.text(), r.text(), r.text())])
        return item
    if kind == 5:
        return _named(r.text(), r.text())
    if kind == 6:
        item = Dataset()
        item.RelationshipType = "HAS CONCEPT MOD"
        item.ValueType = "CODE"
        item.ConceptNameCodeSequence = Sequence([_code("272741003", "SCT", "Laterality")])
        value = r.text()
        scheme, code = next(((s, c) for (s, c), v in LATERALITY_VALUES.items() if v == value), ("SCT", value))
        item.ConceptCodeSequence = Sequence([_code(code, scheme, value)])
        return item
    if kind == 7:
        return _odd(r, depth)
    return None


def _children(r: _Reader, depth: int) -> list[Dataset]:
    out: list[Dataset] = []
    while r.nodes < MAX_NODES:
        op = r.byte()
        if op is None or op % 8 == 0 or depth > MAX_DEPTH:
            break
        r.nodes += 1
        item = _node(r, op, depth)
        if item is not None:
            out.append(item)
    return out


def decode(data: bytes, header: Dataset) -> Dataset:
    """An SR dataset: ``header`` (copied), Manufacturer and root from ``data``, then the tree."""
    mode = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # values are checked where the walker reads them
    try:
        return _decode(data, header)
    finally:
        config.settings.writing_validation_mode = mode


def _decode(data: bytes, header: Dataset) -> Dataset:
    r = _Reader(data)
    ds = Dataset()
    ds.update(header)
    _set(ds, "Manufacturer", r.text())
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("", "99GEMS", r.text())])
    ds.ContentSequence = Sequence(_children(r, 1))
    return ds


# -- encoding a real SR into the grammar (seeds) -------------------------------------------

def _s(text: object) -> bytes:
    raw = str(text or "").encode("latin-1", "replace")[:127]
    try:
        return bytes([0x80 | VOCAB.index(str(text or ""))])
    except ValueError:
        return bytes([len(raw)]) + raw


def _meaning(item: Dataset, keyword: str = "ConceptNameCodeSequence") -> str:
    seq = item.get(keyword)
    return str(seq[0].get("CodeMeaning", "")) if seq else ""


def _encode_items(items) -> bytes:
    out = bytearray()
    for item in items or ():
        vt = item.get("ValueType", "")
        if item.get("RelationshipType") == "HAS CONCEPT MOD" and _meaning(item).lower() == "laterality":
            out += b"\x06" + _s(_meaning(item, "ConceptCodeSequence"))
        elif vt == "CONTAINER":
            out += b"\x01" + _s(_meaning(item)) + _encode_items(item.get("ContentSequence")) + b"\x00"
        elif vt == "NUM" and item.get("MeasuredValueSequence"):
            mv = item.MeasuredValueSequence[0]
            units = mv.get("MeasurementUnitsCodeSequence")
            unit = str(units[0].get("CodeValue", "")) if units else ""
            out += b"\x02" + _s(_meaning(item)) + _s(mv.get("NumericValue", "")) + _s(unit)
        elif vt == "TEXT":
            out += b"\x03" + _s(_meaning(item)) + _s(item.get("TextValue", ""))
        elif vt == "CODE" and item.get("ConceptCodeSequence"):
            c = item.ConceptCodeSequence[0]
            out += b"\x04" + _s(_meaning(item)) + _s(c.get("CodeValue", "")) + _s(c.get("CodingSchemeDesignator", "")) + _s(c.get("CodeMeaning", ""))
        else:
            out += b"\x05" + _s(vt) + _s(_meaning(item))
    return bytes(out)


def encode(ds: Dataset) -> bytes:
    """The grammar's bytes for ``ds``'s Manufacturer, root name and content tree."""
    return _s(ds.get("Manufacturer", "")) + _s(_meaning(ds)) + _encode_items(ds.get("ContentSequence"))
