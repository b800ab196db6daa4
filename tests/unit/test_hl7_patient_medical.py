"""mappings.hl7_orders: AL1, OBX and TQ priority -> the worklist's Patient Medical attributes."""

from __future__ import annotations

import pytest

from mappings.hl7_orders import parse_message
from hl7v2.errors import Hl7Error
from tests.hl7_messages import omi, orm, segment


def _with(message: str, *segments: str, after: str = "OBR") -> bytes:
    """``message`` with ``segments`` inserted after its last ``after`` segment."""
    segs = message.rstrip("\r").split("\r")
    at = max(i for i, s in enumerate(segs) if s.startswith(after + "|")) + 1
    return ("\r".join(segs[:at] + list(segments) + segs[at:]) + "\r").encode()


def _item(raw: bytes):
    (action,) = parse_message(raw).actions
    return action.items[0]


def test_allergies_height_weight_pregnancy_from_an_orm():
    """IHE RAD TF-2 4.4 (RAD-4): AL1-3 -> Allergies; OBX ^BODY HEIGHT / ^BODY WEIGHT -> Patient's Size (m) / Weight (kg)."""
    raw = _with(
        orm("PM1"),
        segment("AL1", {1: "1", 2: "DA", 3: "^Iodinated contrast"}),
        segment("AL1", {1: "2", 2: "MA", 3: "LATEX^Latex^L"}),
        after="PV1",
    )
    raw = _with(
        raw.decode(),
        segment("OBX", {1: "1", 2: "NM", 3: "^BODY HEIGHT", 5: "162", 6: "cm", 11: "F"}),
        segment("OBX", {1: "2", 2: "NM", 3: "29463-7^Body weight^LN", 5: "58.5", 6: "kg", 11: "F"}),
        segment("OBX", {1: "3", 2: "CWE", 3: "82810-3^Pregnancy status^LN", 5: "LA26683-5^Not pregnant^LN", 11: "F"}),
    )
    item = _item(raw)
    assert item.allergies == ("Iodinated contrast", "Latex")
    assert (item.patient_size, item.patient_weight, item.pregnancy_status) == ("1.62", "58.5", 1)


def test_units_are_converted_and_deleted_observations_skipped():
    raw = _with(
        orm("PM2"),
        segment("OBX", {1: "1", 2: "NM", 3: "3137-7^Body height measured^LN", 5: "64", 6: "[in_i]"}),
        segment("OBX", {1: "2", 2: "NM", 3: "^BODY WEIGHT", 5: "150", 6: "[lb_av]^pound^UCUM"}),
        segment("OBX", {1: "3", 2: "NM", 3: "^BODY WEIGHT", 5: "99", 6: "kg", 11: "D"}),
    )
    item = _item(raw)
    assert (item.patient_size, item.patient_weight) == ("1.626", "68.039")


@pytest.mark.parametrize(
    "tq, expected",
    [("S", "STAT"), ("A", "HIGH"), ("P", "HIGH"), ("C", "HIGH"), ("R", "ROUTINE"), ("T", "MEDIUM"), ("PRN", ""), ("", "")],
)
def test_priority_from_the_tq_priority_component(tq, expected):
    """IHE RAD TF-2 (RAD-4): ORC-7.6 / OBR-27.6 priority -> Requested Procedure Priority: S STAT, A/P/C HIGH, R ROUTINE, T MEDIUM."""
    text = orm("PR1").replace("|^^^20261124093000|", f"|^^^20261124093000^^{tq}|")
    assert _item(text.encode()).requested_procedure_priority == expected


def test_priority_from_tq1_9_in_an_omi():
    text = omi("PR2").replace("TQ1|1||||||20261124100000", "TQ1|1||||||20261124100000||S^Stat^HL70485")
    assert "S^Stat" in text
    assert _item(text.encode()).requested_procedure_priority == "STAT"


@pytest.mark.parametrize(
    "obx, field",
    [
        ({1: "1", 2: "NM", 3: "^BODY HEIGHT", 5: "tall", 6: "cm"}, 5),
        ({1: "1", 2: "NM", 3: "^BODY WEIGHT", 5: "60", 6: "stone"}, 6),
        ({1: "1", 2: "CWE", 3: "82810-3^Pregnancy status^LN", 5: "MAYBE"}, 5),
    ],
)
def test_an_unreadable_measure_is_refused_naming_the_field(obx, field):
    with pytest.raises(Hl7Error) as err:
        parse_message(_with(orm("BAD1"), segment("OBX", obx)))
    assert (err.value.segment, err.value.field) == ("OBX", field)
