"""HL7 fields bounded to the VR of the MWL attribute they fill (issue 11.4).

PS3.5 Table 6.2-1 gives the lengths (PN 64 per component group, LO 64,
SH 16, AE 16, CS 16, UI 64); README "Orders in" gives which fields are
refused and which are cut.
"""

import pytest

from mappings.hl7_orders import UpdatePatient, parse_message
from hl7v2.errors import Hl7Error
from tests.hl7_messages import adt, msh, omi, orm, pid, segment


def _refusal(message: str) -> Hl7Error:
    with pytest.raises(Hl7Error) as info:
        parse_message(message.encode())
    return info.value


def test_megabyte_patient_name_is_refused_naming_pid_5():
    err = _refusal(orm("B1", name="A" * 1_000_000))
    assert (err.code, err.location, err.ack_code) == (102, "PID-5", "AE")
    assert len(err.text) < 100


def test_patient_name_of_exactly_64_is_kept():
    item = parse_message(orm("B2", name="F" * 30 + "^" + "G" * 33).encode()).actions[0].items[0]
    assert len(item.patient_name) == 64


@pytest.mark.parametrize(
    "kwargs, location",
    [
        ({"patient_id": "P" * 65}, "PID-3.1"),
        ({"accession": "A" * 17}, "OBR-18"),
        ({"placer": "O" * 65}, "ORC-2"),
        ({"study_uid": "1.2.3.x"}, "ZDS-1.1"),
        ({"study_uid": "1." + "2" * 70}, "ZDS-1.1"),
        ({"station": "S" * 17}, "OBR-21.1"),
    ],
)
def test_identifiers_over_their_vr_are_refused(kwargs, location):
    err = _refusal(orm("B3", **kwargs))
    assert (err.code, err.location) == (102, location)


def test_omi_fields_are_named_by_ipc():
    err = _refusal(omi("B4", steps=[("ACC1", "RP1", "SPS1"), ("A" * 17, "RP2", "SPS2")]))
    assert (err.location, err.sequence) == ("IPC-1", 2)


def test_free_text_is_cut_to_its_vr():
    text = orm("B5").replace("DXAHS^DXA hip and spine^L", "DXAHS^" + "d" * 100 + "^L").replace(
        "D123^Referrer^Rita", "D123^" + "R" * 70 + "^Rita"
    )
    item = parse_message(text.encode()).actions[0].items[0]
    assert item.requested_procedure_description == "d" * 64
    assert item.sps_description == "d" * 64
    assert item.requested_procedure_code.meaning == "d" * 64
    assert item.referring_physician == "R" * 64


def test_adt_update_with_huge_name_is_refused():
    err = _refusal(adt("B6", name="N" * 5000))
    assert err.location == "PID-5"


def test_adt_update_within_bounds_is_accepted():
    action = parse_message(adt("B7", name="Smith^Janet").encode()).actions[0]
    assert isinstance(action, UpdatePatient) and action.demographics.patient_name == "Smith^Janet"


def test_huge_message_type_and_control_id_are_refused_briefly():
    err = _refusal("\r".join([msh("C1", "X" * 1_000_000 + "^Y", "2.5.1"), pid()]) + "\r")
    assert err.location.startswith("MSH-9") and len(err.text) < 100
    err = _refusal("\r".join([msh("C" * 200, "ORM^O01", "2.5.1"), pid()]) + "\r")
    assert err.location == "MSH-10" and len(err.text) < 100


def test_modality_not_a_code_string_is_refused():
    msg = omi("B8").replace("|BMD|", "|bmd!|")
    assert _refusal(msg).location == "IPC-5"
