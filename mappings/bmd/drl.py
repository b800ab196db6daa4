"""An exam's radiation dose against the diagnostic reference levels (pure).

IR(ME)R 2017 (docs/domain.md section 5): the radiographer must be aware of the
national and local DRLs of the examinations they undertake.  The config
(``dose.reference_levels``) gives one level per scan type; the gateway's dose
record is the study's total (an RDSR's accumulated dose, or the MPPS/image
attributes summed: mappings/bmd/dose.py), so the exam's level is the sum of
the levels of the scans it holds -- each hip and each forearm a scan of its
own, a VFA a scan (README "Running a DXA service").

Values are compared in the level's units; a dose in other units of the same
quantity is converted by the factors below (SI prefixes only), and one
whose units are unknown is not compared, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mappings.bmd.models import FOREARM_SITES, HIP_SITES, TOTAL_BODY, TOTAL_BODY_LESS_HEAD, BmdExam, DoseRecord, spine_vertebrae

SCAN_TYPES = ("spine", "hip", "forearm", "total_body", "vfa")
QUANTITIES = ("dap", "entrance_dose", "dose_rp_total")

# Units -> factor to a base unit of the quantity (dose area product: Gy.m2; dose: Gy).
DAP_UNITS = {
    "Gy.m2": Decimal(1), "Gy.cm2": Decimal("1E-4"), "dGy.cm2": Decimal("1E-5"), "cGy.cm2": Decimal("1E-6"),
    "mGy.cm2": Decimal("1E-7"), "uGy.m2": Decimal("1E-6"), "uGy.cm2": Decimal("1E-10"), "mGy.m2": Decimal("1E-3"),
}  # fmt: skip
DOSE_UNITS = {"Gy": Decimal(1), "dGy": Decimal("0.1"), "cGy": Decimal("0.01"), "mGy": Decimal("1E-3"), "uGy": Decimal("1E-6")}
UNITS = {"dap": DAP_UNITS, "entrance_dose": DOSE_UNITS, "dose_rp_total": DOSE_UNITS}


@dataclass(frozen=True, slots=True)
class ReferenceLevel:
    """The DRL of one scan type: a value of a quantity, in units."""

    value: Decimal
    units: str
    quantity: str = "dap"


@dataclass(frozen=True, slots=True)
class DoseCheck:
    """The exam's dose and how it stands against its level."""

    exam_type: str  # "spine", "hip", "hip+spine", "hip x2+spine"...
    quantity: str = ""
    value: Decimal | None = None  # in ``units``
    units: str = ""
    level: Decimal | None = None  # the exam's DRL, in ``units``
    over: bool | None = None  # None: not compared
    note: str = ""  # why it was not compared

    @property
    def percent(self) -> Decimal | None:
        if self.value is None or not self.level:
            return None
        return (100 * self.value / self.level).quantize(Decimal("1"))

    def to_dict(self) -> dict:
        return {
            "exam_type": self.exam_type, "quantity": self.quantity,
            "value": None if self.value is None else str(self.value), "units": self.units,
            "level": None if self.level is None else str(self.level), "over": self.over,
            "percent_of_level": None if self.percent is None else str(self.percent), "note": self.note,
        }  # fmt: skip


def scans(exam: BmdExam) -> dict[str, int]:
    """Scan type -> number of scans in the exam (each hip and forearm side one scan)."""
    out: dict[str, set] = {}
    for r in exam.regions:
        if spine_vertebrae(r.site) or r.site == "spine_total":
            kind = "spine"
        elif r.site in HIP_SITES:
            kind = "hip"
        elif r.site in FOREARM_SITES:
            kind = "forearm"
        elif r.site in (TOTAL_BODY, TOTAL_BODY_LESS_HEAD):
            kind = "total_body"
        else:
            continue
        out.setdefault(kind, set()).add(r.laterality if kind in ("hip", "forearm") else None)
    counts = {k: len(v) for k, v in out.items()}
    if exam.has_vfa:
        counts["vfa"] = 1
    return {k: counts[k] for k in SCAN_TYPES if k in counts}


def exam_type(counts: dict[str, int]) -> str:
    """A stable name: scan types in alphabetical order, ``x2`` for two sides."""
    return "+".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(counts.items())) or "unknown"


def _recorded(dose: DoseRecord, quantity: str) -> tuple[Decimal | None, str]:
    units = {"dap": "dap_units", "entrance_dose": "entrance_dose_units", "dose_rp_total": "dose_rp_units"}[quantity]
    return getattr(dose, quantity), getattr(dose, units)


def _first_recorded(dose: DoseRecord) -> tuple[str, Decimal | None, str]:
    for q in QUANTITIES:
        value, units = _recorded(dose, q)
        if value is not None:
            return q, value, units
    return "", None, ""


def convert(value: Decimal, units: str, to: str, quantity: str) -> Decimal | None:
    """``value`` from ``units`` into ``to`` (same quantity), or None when either is unknown."""
    table = UNITS[quantity]
    if units == to:
        return value
    if units not in table or to not in table:
        return None
    return (value * table[units] / table[to]).normalize()


def check_dose(exam: BmdExam, levels: dict[str, ReferenceLevel]) -> DoseCheck | None:
    """The exam's dose against the sum of its scans' levels; None without a dose record."""
    if exam.dose is None:
        return None
    counts = scans(exam)
    name = exam_type(counts)
    quantities = {levels[k].quantity for k in counts if k in levels}
    if not counts or not levels or any(k not in levels for k in counts) or len(quantities) != 1:
        quantity, value, units = _first_recorded(exam.dose)
        missing = [k for k in counts if k not in levels]
        note = f"no reference level for {', '.join(missing)}" if missing else ("no scan type recognised" if not counts else "levels of different quantities")
        return DoseCheck(name, quantity, value, units, note=note)
    quantity = quantities.pop()
    units = levels[next(iter(counts))].units
    total = Decimal(0)
    for k, n in counts.items():
        level = convert(levels[k].value, levels[k].units, units, quantity)
        if level is None:
            return DoseCheck(name, quantity, None, units, note=f"unknown units {levels[k].units!r} in the level for {k}")
        total += n * level
    recorded, recorded_units = _recorded(exam.dose, quantity)
    if recorded is None:
        q, value, u = _first_recorded(exam.dose)
        return DoseCheck(name, q, value, u, total, note=f"the dose record has no {quantity}")
    value = convert(recorded, recorded_units, units, quantity)
    if value is None:
        return DoseCheck(name, quantity, recorded, recorded_units, total, note=f"unknown units {recorded_units!r} in the dose record")
    return DoseCheck(name, quantity, value, units, total, over=value > total)


def report_note(check: DoseCheck | None) -> str:
    """The report's flag for a dose over its level ("" otherwise)."""
    if check is None or not check.over:
        return ""
    return (
        f"Radiation dose above the diagnostic reference level: {check.quantity} {check.value} {check.units}"
        f" against {check.level} {check.units} for {check.exam_type} ({check.percent}% of the level); review the exposure (IR(ME)R)."
    )
