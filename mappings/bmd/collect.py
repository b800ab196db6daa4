"""What every parser shares: the refusal, exact numbers, region collection, header.

:class:`RegionCollector` gathers values per (site, laterality) as a parser
finds them by label, and resolves a spine "Total" to the vertebrae it covers.
:func:`exam_from_dataset` fills the patient, study and device parts of a
:class:`BmdExam` from the SR's own attributes (PS3.3 C.7.1.1, C.7.2.1, C.7.5.1).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from pydicom.dataset import Dataset

from mappings.bmd import models as m
from mappings.bmd.models import BmdExam, Device, DoseRecord, FraxResult, RegionResult

SPINE_TOTAL = "spine_total"  # a spine "Total" row before its vertebrae are known


class UnparseableSr(ValueError):
    """The dataset holds no BMD results the gateway can read; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoResults(UnparseableSr):
    """The object carries no results at all (no carrier, or a header-only text block).

    For an image this is normal (most images are only pictures); for an SR it
    is a refusal like any other.
    """


def to_decimal(text: object) -> Decimal | None:
    """The exact number in ``text`` (digits kept), or None for blank / not a number."""
    if text is None:
        return None
    s = str(getattr(text, "original_string", None) or text).strip()
    if not s or len(s) > 32:
        return None
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


# A printed cell: a number (comma decimals occur, docs/domain.md section 2), then
# an optional percent sign and an optional marker ("*" significant / flagged,
# "#" dissimilar scan types, "†" footnote).
_CELL = re.compile(r"^\s*([+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+))\s*(%?)\s*([*#\u2020\u00b9\u00b2]*)\s*$")
_BLANK_CELLS = frozenset({"", "-", "--", "---", "n/a", "na", "\u2014", "\u2013"})


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell read: its value, a marker kept, or why it could not be read."""

    value: Decimal | None = None
    marker: str = ""
    unreadable: str = ""  # the cell's text when it is neither blank nor a number


def read_cell(text: object) -> Cell:
    """``"-2.5*"`` -> Cell(-2.5, "*"); ``" "`` -> Cell(); ``"abc"`` -> Cell(unreadable="abc")."""
    if text is None:
        return Cell()
    s = str(text).replace("\u00a0", " ").strip()
    if s.lower() in _BLANK_CELLS:
        return Cell()
    match = _CELL.match(s) if len(s) <= 32 else None
    if match is None:
        return Cell(unreadable=s[:40])
    number = match.group(1).replace(",", ".")
    value = to_decimal(number if not number.startswith(".") else "0" + number)
    if value is None:
        return Cell(unreadable=s[:40])
    return Cell(value=value, marker=match.group(3))


# Units a dimensioned measure may be printed in, and the factor to the unit
# the gateway keeps (g/cm2, g, cm2).  Anything else is refused by name: a
# value read at the wrong scale (mg/cm2 as g/cm2) would be a T-score off by
# orders of magnitude.
UNIT_FACTORS: dict[str, dict[str, Decimal]] = {
    "bmd": {"g/cm2": Decimal(1), "mg/cm2": Decimal("0.001"), "kg/m2": Decimal("0.1")},
    "bmc": {"g": Decimal(1), "mg": Decimal("0.001"), "kg": Decimal(1000)},
    "area": {"cm2": Decimal(1), "mm2": Decimal("0.01")},
}
CANONICAL_UNITS = {"bmd": "g/cm2", "bmc": "g", "area": "cm2"}


def unit_factor(measure: str, unit: str) -> Decimal | None:
    """Factor from ``unit`` to the kept unit of ``measure``; None when the unit is unknown.

    A blank unit is taken as the kept unit; a measure without dimension
    (T, Z, percent) takes any unit as printed.
    """
    table = UNIT_FACTORS.get(measure)
    if table is None or not unit:
        return Decimal(1)
    return table.get(unit)


def convert(value: Decimal, factor: Decimal) -> Decimal:
    """``value`` times ``factor``, exact ("812" mg/cm2 -> "0.812")."""
    return value if factor == 1 else value * factor


def is_yes(text: str) -> bool:
    return str(text).strip().lower() in {"y", "yes", "true", "1", "on"}


REPEAT_FLAG = "Measured more than once in this study"


def _measures(r: RegionResult) -> tuple:
    return tuple(getattr(r, k) for k in m.MEASURES) + (r.excluded,)


def mark_repeats(regions: tuple[RegionResult, ...] | list[RegionResult]) -> tuple[tuple[RegionResult, ...], tuple[str, ...]]:
    """Collapse identical copies of a region; number the different ones.

    The same row read twice (the SR and the report image of one scan) is
    one result.  Two different results for one site and side (a re-scan,
    two hip tables without a side) are both kept, each with ``repeat`` 1..n,
    and a flag names them: never is one silently dropped (README "BMD results and reports").
    """
    groups: dict[tuple[str, str | None], list[RegionResult]] = {}
    order: list[tuple[str, str | None]] = []
    for r in regions:
        r = dataclasses.replace(r, repeat=0)
        key = r.key
        if key not in groups:
            groups[key] = []
            order.append(key)
        if not any(_measures(x) == _measures(r) for x in groups[key]):
            groups[key].append(r)
    out: list[RegionResult] = []
    flags: list[str] = []
    for key in order:
        rows = groups[key]
        if len(rows) == 1:
            out.append(rows[0])
            continue
        rows = [dataclasses.replace(r, repeat=i) for i, r in enumerate(rows, 1)]
        out.extend(rows)
        values = "; ".join(f"{r.name}: BMD {r.bmd if r.bmd is not None else '-'}, T {r.t_score if r.t_score is not None else '-'}" + (f" ({r.scan})" if r.scan else "") for r in rows)
        flags.append(f"{REPEAT_FLAG}: {m.site_name(*key)} ({len(rows)} different results: {values}). All are kept; the lowest counts for diagnosis.")
    return tuple(out), tuple(flags)


class RegionCollector:
    """Values per region row, in the order found.

    A row is (site, laterality, group): a parser passes a new ``group`` for
    each table row or SR container, so two rows for the same site are kept
    apart (and later numbered by :func:`mark_repeats`), never merged.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, str | None, object], dict[str, object]] = {}
        self._row_flags: dict[tuple[str, str | None, object], list[str]] = {}
        self._scan: dict[tuple[str, str | None, object], str] = {}
        self.flags: list[str] = []

    def add(self, site: str, laterality: str | None, measure: str, value: object, group: object = 0) -> None:
        slot = self._values.setdefault((site, laterality, group), {})
        if measure == "excluded":
            slot["excluded"] = bool(value) or bool(slot.get("excluded"))
        elif value is not None and measure not in slot:
            slot[measure] = value

    def flag(self, site: str, laterality: str | None, text: str, group: object = 0) -> None:
        self._row_flags.setdefault((site, laterality, group), []).append(text)

    def set_scan(self, site: str, laterality: str | None, scan: str, group: object = 0) -> None:
        if scan:
            self._scan[(site, laterality, group)] = scan

    def exclude(self, site: str) -> None:
        for (s, _lat, _g), slot in self._values.items():
            if s == site:
                slot["excluded"] = True

    def touch(self, site: str, laterality: str | None, group: object = 0) -> None:
        self._values.setdefault((site, laterality, group), {})

    def regions(self) -> tuple[RegionResult, ...]:
        """RegionResults with a value; a spine "Total" named by its vertebrae.

        Without per-vertebra rows a bare "Total" keeps the name
        :data:`models.SPINE_TOTAL` (its vertebrae are not known), and a spine
        given only as a total is flagged (README "BMD results and reports").
        """
        vertebra_rows = [(s, v) for (s, _l, _g), v in self._values.items() if s in m.VERTEBRAE and any(k in m.MEASURES for k in v)]
        included = sorted({int(s[1]) for s, v in vertebra_rows if not v.get("excluded")})
        total_name = m.spine_site(included) if included else m.SPINE_TOTAL
        out: list[RegionResult] = []
        for key, values in self._values.items():
            site, lat, _group = key
            if not any(k in m.MEASURES for k in values):
                continue
            site = total_name if site == SPINE_TOTAL else site
            out.append(
                RegionResult(site=site, laterality=lat, flags=tuple(self._row_flags.get(key, ())), scan=self._scan.get(key, ""), **values)  # type: ignore[arg-type]
            )
        totals = [r for r in out if len(m.spine_vertebrae(r.site)) > 1 or r.site == m.SPINE_TOTAL]
        if totals and not vertebra_rows:
            names = ", ".join(sorted({r.site if r.site != m.SPINE_TOTAL else "vertebrae not stated" for r in totals}))
            self.flags.append(
                f"Lumbar spine reported only as a total ({names}) without per-vertebra results: the vertebrae used cannot be checked."
            )
        return tuple(out)


def frax_result(values: dict[str, Decimal]) -> FraxResult | None:
    return FraxResult(**values) if values else None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def age_years(birth: str, on: str) -> int | None:
    """Completed years between two DA values, or None."""
    try:
        b = _dt.date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        d = _dt.date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    except (ValueError, TypeError):
        return None
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return years if years >= 0 else None


def _age(ds: Dataset, stated: str, exam_date: str) -> int | None:
    if stated.strip().isdigit():
        return int(stated.strip())
    pa = _text(ds, "PatientAge")  # AS: nnnD/W/M/Y (PS3.5 6.2)
    if len(pa) == 4 and pa[:3].isdigit() and pa[3] == "Y":
        return int(pa[:3])
    return age_years(_text(ds, "PatientBirthDate"), exam_date)


def exam_from_dataset(
    ds: Dataset,
    *,
    layout: str,
    regions: tuple[RegionResult, ...],
    frax: FraxResult | None = None,
    reference_database: str = "",
    reference_population: str = "",
    has_vfa: bool = False,
    has_body_composition: bool = False,
    stated_age: str = "",
    dose: DoseRecord | None = None,
    flags: tuple[str, ...] = (),
    height_cm: Decimal | None = None,
    weight_kg: Decimal | None = None,
) -> BmdExam:
    """A BmdExam with the SR's patient, study and equipment attributes."""
    exam_date = _text(ds, "StudyDate") or _text(ds, "ContentDate")
    return BmdExam(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_sex=_text(ds, "PatientSex"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_age=_age(ds, stated_age, exam_date),
        exam_date=exam_date,
        exam_time=_text(ds, "StudyTime") or _text(ds, "ContentTime"),
        accession_number=_text(ds, "AccessionNumber"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        device=Device(
            manufacturer=_text(ds, "Manufacturer"),
            model=_text(ds, "ManufacturerModelName"),
            serial=_text(ds, "DeviceSerialNumber"),
            software=_text(ds, "SoftwareVersions"),
        ),
        reference_database=reference_database,
        reference_population=reference_population,
        regions=regions,
        frax=frax,
        has_vfa=has_vfa,
        has_body_composition=has_body_composition,
        dose=dose,
        layout=layout,
        flags=tuple(flags),
        height_cm=height_cm,
        weight_kg=weight_kg,
        sources=(_text(ds, "SOPInstanceUID"),) if _text(ds, "SOPInstanceUID") else (),
    )
