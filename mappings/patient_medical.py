"""Order facts -> the worklist's Patient Medical attributes and priority.

Shared by the HL7 and FHIR order mappings: body height and weight in any
UCUM unit to Patient's Size (m) and Patient's Weight (kg) (PS3.3 C.2.4, DS),
pregnancy codes to Pregnancy Status, order priorities to Requested Procedure
Priority (PS3.3 C.4.11).  Pure.  See docs/hl7-interface.md and docs/fhir.md.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from mappings.worklist import DEFINITELY_PREGNANT, NOT_PREGNANT, POSSIBLY_PREGNANT, PREGNANCY_UNKNOWN

# LOINC codes (and the IHE RAD TF-2 OBX-3 texts) of the observations read.
HEIGHT_CODES = frozenset({"8302-2", "3137-7", "3138-5", "8306-3", "8308-9", "BODY HEIGHT"})
WEIGHT_CODES = frozenset({"29463-7", "3141-9", "3142-7", "8341-0", "BODY WEIGHT"})
PREGNANCY_CODES = frozenset({"82810-3", "11449-6", "PREGNANCY STATUS"})

# UCUM unit -> factor to metres / kilograms.
LENGTH_UNITS = {"m": Decimal(1), "cm": Decimal("0.01"), "mm": Decimal("0.001"), "[in_i]": Decimal("0.0254"), "in": Decimal("0.0254")}
MASS_UNITS = {"kg": Decimal(1), "g": Decimal("0.001"), "[lb_av]": Decimal("0.45359237"), "lb": Decimal("0.45359237")}

# Pregnancy answers: LOINC answer list LL4129-4, SNOMED CT, HL7 Table 0136 (Y/N/U).
PREGNANCY = {
    "LA15173-0": DEFINITELY_PREGNANT,  # Pregnant
    "LA26683-5": NOT_PREGNANT,  # Not pregnant
    "LA4489-6": PREGNANCY_UNKNOWN,  # Unknown
    "77386006": DEFINITELY_PREGNANT,  # Pregnant (finding)
    "60001007": NOT_PREGNANT,  # Not pregnant (finding)
    "102874004": POSSIBLY_PREGNANT,  # Possible pregnancy (finding)
    "Y": DEFINITELY_PREGNANT,
    "N": NOT_PREGNANT,
    "U": PREGNANCY_UNKNOWN,
}

# HL7 Table 0027 (TQ-6, TQ1-9) -> Requested Procedure Priority, as IHE RAD
# TF-2 (and dcm4chee) map it: S STAT; A, P, C HIGH; R ROUTINE; T MEDIUM.
HL7_PRIORITY = {"S": "STAT", "A": "HIGH", "P": "HIGH", "C": "HIGH", "R": "ROUTINE", "T": "MEDIUM"}
# FHIR request-priority -> Requested Procedure Priority.
FHIR_PRIORITY = {"stat": "STAT", "asap": "HIGH", "urgent": "HIGH", "routine": "ROUTINE"}


class MeasureError(ValueError):
    """A height or weight that cannot be read; ``part`` is "value" or "unit"."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(reason)
        self.part = part


def _ds(value: Decimal) -> str:
    """A DS of at most 16 characters (PS3.5 6.2), without float noise."""
    text = format(value.quantize(Decimal("0.001")).normalize(), "f")
    return text[:16]


def _measure(value: str, unit: str, units: dict[str, Decimal], what: str) -> str:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise MeasureError("value", f"{what} {value[:16]!r} is not a number") from None
    if not number.is_finite() or number <= 0:
        raise MeasureError("value", f"{what} must be a positive number")
    factor = units.get(unit.strip())
    if factor is None:
        raise MeasureError("unit", f"{what} unit {unit[:16]!r} is not one of {', '.join(units)}")
    return _ds(number * factor)


def height_m(value: str, unit: str) -> str:
    """A body height in ``unit`` (UCUM) as Patient's Size in metres."""
    return _measure(value, unit or "m", LENGTH_UNITS, "height")


def weight_kg(value: str, unit: str) -> str:
    """A body weight in ``unit`` (UCUM) as Patient's Weight in kilograms."""
    return _measure(value, unit or "kg", MASS_UNITS, "weight")


def pregnancy_status(code: str) -> int | None:
    """A pregnancy answer code as Pregnancy Status (None: not a known code)."""
    return PREGNANCY.get(code.strip()) or PREGNANCY.get(code.strip().upper())
