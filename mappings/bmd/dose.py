"""Radiation dose of a DXA exam from whatever carries it.

* :func:`dose_from_rdsr`: an X-Ray Radiation Dose SR (PS3.16 TID 10001):
  Dose Area Product Total (113722, DCM) and Dose (RP) Total (113725, DCM).
* :func:`dose_from_attributes`: MPPS or image attributes (PS3.3 C.4.16
  Radiation Dose module, C.8.7.8): Entrance Dose in mGy (0040,8302), Image
  and Fluoroscopy Area Dose Product (0018,115E, dGy.cm2), and the same in
  items of Exposure Dose Sequence (0040,030E), summed.
Values are exact decimals as recorded; units are given, never converted.
"""

from __future__ import annotations

from decimal import Decimal

from pydicom.dataset import Dataset

from mappings.bmd.collect import to_decimal
from mappings.bmd.models import DoseRecord

DAP_TOTAL = ("DCM", "113722")
DOSE_RP_TOTAL = ("DCM", "113725")
MAX_DEPTH = 16


def _nums(items, depth: int = 0):
    """(scheme, value) -> (number, unit) for NUM items, depth-first."""
    if depth > MAX_DEPTH:
        return
    for item in items or []:
        if item.get("ValueType") == "NUM" and item.get("ConceptNameCodeSequence"):
            name = item.ConceptNameCodeSequence[0]
            mv = (item.get("MeasuredValueSequence") or [None])[0]
            if mv is not None:
                units = mv.get("MeasurementUnitsCodeSequence")
                unit = str(units[0].get("CodeValue", "")) if units else ""
                yield (str(name.get("CodingSchemeDesignator", "")), str(name.get("CodeValue", ""))), to_decimal(mv.get("NumericValue")), unit
        yield from _nums(item.get("ContentSequence"), depth + 1)


def dose_from_rdsr(ds: Dataset) -> DoseRecord | None:
    """Accumulated dose from an RDSR, or None when it holds neither total."""
    found: dict[tuple[str, str], tuple[Decimal | None, str]] = {}
    for key, value, unit in _nums(ds.get("ContentSequence")):
        if key in (DAP_TOTAL, DOSE_RP_TOTAL) and value is not None:
            found.setdefault(key, (value, unit))
    if not found:
        return None
    dap, dap_unit = found.get(DAP_TOTAL, (None, ""))
    rp, rp_unit = found.get(DOSE_RP_TOTAL, (None, ""))
    return DoseRecord(dap=dap, dap_units=dap_unit, dose_rp_total=rp, dose_rp_units=rp_unit, source="rdsr")


def _sum(values: list[Decimal | None]) -> Decimal | None:
    present = [v for v in values if v is not None]
    return sum(present, Decimal(0)) if present else None


def dose_from_attributes(ds: Dataset) -> DoseRecord | None:
    """Dose from MPPS / image attributes, or None when none is present."""
    entrance = to_decimal(ds.get("EntranceDoseInmGy"))
    dap = to_decimal(ds.get("ImageAndFluoroscopyAreaDoseProduct"))
    items = ds.get("ExposureDoseSequence") or []
    if entrance is None:
        entrance = _sum([to_decimal(i.get("EntranceDoseInmGy")) for i in items])
    if dap is None:
        dap = _sum([to_decimal(i.get("ImageAndFluoroscopyAreaDoseProduct")) for i in items])
    if entrance is None and dap is None:
        return None
    return DoseRecord(
        dap=dap,
        dap_units="dGy.cm2" if dap is not None else "",
        entrance_dose=entrance,
        entrance_dose_units="mGy" if entrance is not None else "",
        source="attributes",
    )
