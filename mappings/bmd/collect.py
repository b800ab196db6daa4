"""What every parser shares: the refusal, exact numbers, region collection, header.

:class:`RegionCollector` gathers values per (site, laterality) as a parser
finds them by label, and resolves a spine "Total" to the vertebrae it covers.
:func:`exam_from_dataset` fills the patient, study and device parts of a
:class:`BmdExam` from the SR's own attributes (PS3.3 C.7.1.1, C.7.2.1, C.7.5.1).
"""

from __future__ import annotations

import datetime as _dt
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


def is_yes(text: str) -> bool:
    return str(text).strip().lower() in {"y", "yes", "true", "1", "on"}


class RegionCollector:
    """Values per region, in the order found; first value of a measure wins."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str | None], dict[str, object]] = {}

    def add(self, site: str, laterality: str | None, measure: str, value: object) -> None:
        slot = self._values.setdefault((site, laterality), {})
        if measure == "excluded":
            slot["excluded"] = bool(value) or bool(slot.get("excluded"))
        elif value is not None and measure not in slot:
            slot[measure] = value

    def exclude(self, site: str) -> None:
        for (s, _lat), slot in self._values.items():
            if s == site:
                slot["excluded"] = True

    def touch(self, site: str, laterality: str | None) -> None:
        self._values.setdefault((site, laterality), {})

    def regions(self) -> tuple[RegionResult, ...]:
        """RegionResults with a value; a spine "Total" named by its vertebrae."""
        included = [int(s[1]) for (s, _), v in self._values.items() if s in m.VERTEBRAE and not v.get("excluded")]
        total_name = m.spine_site(included) if included else "L1-L4"
        out: list[RegionResult] = []
        seen: set[tuple[str, str | None]] = set()
        for (site, lat), values in self._values.items():
            if not any(k in m.MEASURES for k in values):
                continue
            site = total_name if site == SPINE_TOTAL else site
            if (site, lat) in seen:
                continue
            seen.add((site, lat))
            out.append(RegionResult(site=site, laterality=lat, **values))  # type: ignore[arg-type]
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
    )
