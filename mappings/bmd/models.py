"""The BMD exam as the scanner reported it: patient, device, regions, FRAX, dose.

Every measured value is a :class:`decimal.Decimal` built from the SR's own
text, so ``str(value)`` gives back the digits the scanner printed
("0.810" stays "0.810") and a parsed exam can be compared to the last digit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Region sites (the names the rest of the gateway uses).  Spine totals are
# named by their vertebrae: "L1-L4", "L2-L4", or "L1,L2,L4" when not contiguous.
VERTEBRAE = ("L1", "L2", "L3", "L4")
NECK = "neck"
TOTAL_HIP = "total_hip"
TROCH = "troch"
INTER = "inter"
WARDS = "wards"
RADIUS_33 = "radius_33"
RADIUS_MID = "radius_mid"
RADIUS_UD = "radius_ud"
FOREARM_TOTAL = "forearm_total"
TOTAL_BODY = "total_body"
TOTAL_BODY_LESS_HEAD = "total_body_less_head"  # ISCD paediatric: TBLH
SPINE_TOTAL = "spine_total"  # a spine "Total" whose vertebrae the scanner did not state
HIP_SITES = (NECK, TOTAL_HIP, TROCH, INTER, WARDS)
FOREARM_SITES = (RADIUS_33, RADIUS_MID, RADIUS_UD, FOREARM_TOTAL)

#: Display names for report text and local codes.
SITE_NAMES = {
    NECK: "Femoral neck",
    TOTAL_HIP: "Total hip",
    TROCH: "Trochanter",
    INTER: "Intertrochanter",
    WARDS: "Ward's area",
    RADIUS_33: "Radius 33%",
    RADIUS_MID: "Radius mid",
    RADIUS_UD: "Radius UD",
    FOREARM_TOTAL: "Forearm total",
    TOTAL_BODY: "Total body",
    TOTAL_BODY_LESS_HEAD: "Total body less head",
    SPINE_TOTAL: "Lumbar spine total (vertebrae not stated)",
}

MEASURES = ("bmd", "bmc", "area", "t_score", "z_score", "pct_young_adult", "pct_age_matched")


def spine_site(vertebrae: tuple[int, ...] | list[int]) -> str:
    """Site name of a spine total over ``vertebrae`` (1..4): ``L2-L4``, ``L1,L3``."""
    vs = sorted(set(vertebrae))
    if not vs:
        raise ValueError("no vertebrae")
    if len(vs) == 1:
        return f"L{vs[0]}"
    if vs == list(range(vs[0], vs[-1] + 1)):
        return f"L{vs[0]}-L{vs[-1]}"
    return ",".join(f"L{v}" for v in vs)


def spine_vertebrae(site: str) -> frozenset[int]:
    """The vertebrae a spine site covers (empty for a non-spine site)."""
    out: set[int] = set()
    for part in site.split(","):
        ends = part.split("-")
        if not all(len(e) == 2 and e[0] == "L" and e[1] in "12345" for e in ends) or len(ends) > 2:
            return frozenset()
        lo, hi = int(ends[0][1]), int(ends[-1][1])
        out.update(range(lo, hi + 1))
    return frozenset(out)


def site_name(site: str, laterality: str | None = None) -> str:
    """Human name: ``Left femoral neck``, ``Lumbar spine L1-L4``."""
    if spine_vertebrae(site):
        return f"Lumbar spine {site}" if len(spine_vertebrae(site)) > 1 else f"Vertebra {site}"
    name = SITE_NAMES.get(site, site)
    side = {"L": "Left", "R": "Right"}.get(laterality or "")
    return f"{side} {name[0].lower()}{name[1:]}" if side else name


@dataclass(frozen=True, slots=True)
class RegionResult:
    """One analysed region (one row of the vendor's results table)."""

    site: str
    laterality: str | None = None  # "L", "R" or None
    bmd: Decimal | None = None  # g/cm2
    bmc: Decimal | None = None  # g
    area: Decimal | None = None  # cm2
    t_score: Decimal | None = None
    z_score: Decimal | None = None
    pct_young_adult: Decimal | None = None
    pct_age_matched: Decimal | None = None
    excluded: bool = False
    # What the reader noticed about this row: a marker kept from a cell
    # ("t_score marked '*'"), a unit converted, an unreadable cell.
    flags: tuple[str, ...] = ()
    source: str = ""  # SOP Instance UID of the object the row was read from
    scan: str = ""  # the scan as the scanner named it ("f Left Hip", "Left Femur")
    # 0: the site was measured once in the study.  1, 2...: one of several
    # different measurements of the same site (a re-scan, or two hip tables
    # without a side); all are kept and the classifier takes the lowest.
    repeat: int = 0

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.site, self.laterality)

    @property
    def name(self) -> str:
        base = site_name(self.site, self.laterality)
        return f"{base} (measurement {self.repeat})" if self.repeat else base


@dataclass(frozen=True, slots=True)
class FraxResult:
    """FRAX 10-year probabilities in percent, with and without BMD."""

    major_with_bmd: Decimal | None = None
    hip_with_bmd: Decimal | None = None
    major_without_bmd: Decimal | None = None
    hip_without_bmd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class DoseRecord:
    """Radiation dose of the exam and where it was read."""

    dap: Decimal | None = None  # dose area product
    dap_units: str = ""
    entrance_dose: Decimal | None = None
    entrance_dose_units: str = ""
    dose_rp_total: Decimal | None = None
    dose_rp_units: str = ""
    source: str = ""  # "rdsr", "attributes", or a layout name


@dataclass(frozen=True, slots=True)
class Device:
    """The densitometer (PS3.3 C.7.5.1 General Equipment)."""

    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    software: str = ""


@dataclass(frozen=True, slots=True)
class BmdExam:
    """One DXA exam's results as read from a vendor SR."""

    patient_id: str
    patient_name: str = ""
    patient_sex: str = ""
    patient_birth_date: str = ""  # DA
    patient_age: int | None = None  # years
    exam_date: str = ""  # DA
    exam_time: str = ""  # TM
    accession_number: str = ""
    study_instance_uid: str = ""
    sop_instance_uid: str = ""
    device: Device = Device()
    reference_database: str = ""
    reference_population: str = ""
    regions: tuple[RegionResult, ...] = ()
    frax: FraxResult | None = None
    has_vfa: bool = False
    has_body_composition: bool = False
    dose: DoseRecord | None = None
    layout: str = ""
    # Technical flags of the reader for the reporter (a spine given only as a
    # total, a unit converted or refused, a site measured twice...).
    flags: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # SOP Instance UIDs the results were read from
    height_cm: Decimal | None = None  # as measured at the scanner (Hologic Height scalar)
    weight_kg: Decimal | None = None

    def region(self, site: str, laterality: str | None = None) -> RegionResult | None:
        """The region with this site and laterality, or None."""
        for r in self.regions:
            if r.site == site and r.laterality == laterality:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; decimals become their exact strings."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BmdExam:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        d["device"] = Device(**d.get("device") or {})
        d["regions"] = tuple(RegionResult(**_tuples(_decimals(r, MEASURES), ("flags",))) for r in d.get("regions") or ())
        d.update(_tuples(d, ("flags", "sources")))
        if d.get("frax") is not None:
            d["frax"] = FraxResult(**_decimals(d["frax"], [f.name for f in dataclasses.fields(FraxResult)]))
        if d.get("dose") is not None:
            d["dose"] = DoseRecord(**_decimals(d["dose"], ("dap", "entrance_dose", "dose_rp_total")))
        d.update(_decimals({k: d.get(k) for k in ("height_cm", "weight_kg") if k in d}, ("height_cm", "weight_kg")))
        return cls(**d)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(data: dict[str, Any], names) -> dict[str, Any]:
    return {k: (tuple(v) if k in names and v is not None else v) for k, v in data.items()}


def _decimals(data: dict[str, Any], names) -> dict[str, Any]:
    return {k: (Decimal(v) if k in names and v is not None else v) for k, v in data.items()}
