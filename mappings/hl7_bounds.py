"""HL7 order fields bounded to the DICOM VR of the MWL attribute they fill.

A value the worklist would serve longer than its VR allows (PS3.5 Table
6.2-1) is either refused or cut, per field:

* **refused** (AE, ERR-3 102 data type error, ERR-2 naming the field):
  values that identify -- patient ID and issuer, other IDs, patient's
  name, order numbers, accession, requested procedure and step IDs, admission
  ID, Study Instance UID (also checked for the UI character set), station AE
  title, modality.  Cutting them would make a different patient or order.
* **cut** to the limit, trailing component separators and spaces removed:
  free text -- procedure and step descriptions, code meaning, physicians'
  names, station name, location, ethnic group.  Cutting loses words, not
  identity.

Dates and times are already checked for the DA/TM format by the order
mapping.  Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from hl7v2.errors import Hl7Error
from mappings.worklist import Code, WorklistItem

# PS3.5 Table 6.2-1: maximum length in characters.  PN: 64 per component
# group; the gateway writes the alphabetic group only.
VR_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "UI": 64}

REFUSE = "refuse"
CUT = "cut"

# PS3.5 9.1: a UID is digits in components separated by periods.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# PS3.5 Table 6.2-1: CS is upper case letters, digits, space and underscore.
_CS = re.compile(r"[A-Z0-9 _]*")


@dataclass(frozen=True, slots=True)
class Bound:
    vr: str
    rule: str


#: WorklistItem field -> its VR and what happens to a longer value.
ITEM_BOUNDS: dict[str, Bound] = {
    "patient_id": Bound("LO", REFUSE),
    "issuer_of_patient_id": Bound("LO", REFUSE),
    "patient_name": Bound("PN", REFUSE),
    "ethnic_group": Bound("SH", CUT),
    "other_patient_ids": Bound("LO", REFUSE),
    "accession_number": Bound("SH", REFUSE),
    "requested_procedure_id": Bound("SH", REFUSE),
    "requested_procedure_description": Bound("LO", CUT),
    "study_instance_uid": Bound("UI", REFUSE),
    "referring_physician": Bound("PN", CUT),
    "requesting_physician": Bound("PN", CUT),
    "placer_order_number": Bound("LO", REFUSE),
    "filler_order_number": Bound("LO", REFUSE),
    "admission_id": Bound("LO", REFUSE),
    "sps_id": Bound("SH", REFUSE),
    "station_ae": Bound("AE", REFUSE),
    "station_name": Bound("SH", CUT),
    "modality": Bound("CS", REFUSE),
    "performing_physician": Bound("PN", CUT),
    "sps_description": Bound("LO", CUT),
    "sps_location": Bound("SH", CUT),
}

#: Requested Procedure Code Sequence item (PS3.3 Table 8.8-1).
CODE_BOUNDS: dict[str, Bound] = {
    "value": Bound("SH", REFUSE),
    "scheme": Bound("SH", REFUSE),
    "meaning": Bound("LO", CUT),
}

#: Where a field came from: (segment id, segment sequence, field, component).
Location = tuple[str, int, int, int]


def cut(value: str, vr: str) -> str:
    """``value`` cut to the VR's length; a PN loses trailing empty components."""
    out = value[: VR_LENGTH[vr]]
    return out.rstrip("^ ") if vr == "PN" else out.rstrip(" ")


def _refusal(name: str, text: str, where: Location | None) -> Hl7Error:
    seg, seq, fld, comp = where or ("", 1, 0, 0)
    place = f"{seg}-{fld}" if seg and fld else name
    return Hl7Error(f"{place} {text}", code=102, segment=seg, sequence=seq, field=fld, component=comp)


def _check(name: str, value: str, bound: Bound, where: Location | None) -> str:
    limit = VR_LENGTH[bound.vr]
    if bound.vr == "UI" and value and not _UID.fullmatch(value):
        raise _refusal(name, "is not a DICOM UID (digits and periods)", where)
    if bound.vr == "CS" and value and not _CS.fullmatch(value):
        raise _refusal(name, "is not a DICOM code string (A-Z, 0-9, space, _)", where)
    if len(value) <= limit:
        return value
    if bound.rule == CUT:
        return cut(value, bound.vr)
    raise _refusal(name, f"is longer than {limit} characters ({bound.vr})", where)


def bound_item(item: WorklistItem, where: dict[str, Location]) -> WorklistItem:
    """``item`` with free text cut to its VR; raises Hl7Error for the rest.

    ``where`` maps a field name to its HL7 location, for ERR-2.
    """
    changes: dict[str, object] = {}
    for name, bound in ITEM_BOUNDS.items():
        value = getattr(item, name)
        if isinstance(value, tuple):
            new = tuple(_check(name, v, bound, where.get(name)) for v in value)
        else:
            new = _check(name, value, bound, where.get(name))
        if new != value:
            changes[name] = new
    code = item.requested_procedure_code
    if code is not None:
        loc = where.get("requested_procedure_code")
        parts = {}
        for comp, (name, bound) in enumerate(CODE_BOUNDS.items()):
            comp_loc = (loc[0], loc[1], loc[2], (1, 3, 2)[comp]) if loc else None
            parts[name] = _check(f"code {name}", getattr(code, name), bound, comp_loc)
        if parts != {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}:
            changes["requested_procedure_code"] = Code(**parts)
    return dataclasses.replace(item, **changes) if changes else item


def bound_value(name: str, value: str | None, where: Location | None) -> str | None:
    """One patient field (ADT updates) bounded like the item's field."""
    if value is None:
        return None
    return _check(name, value, ITEM_BOUNDS[name], where)
