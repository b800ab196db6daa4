"""mappings.hl7_orders / hl7v2: HL7 v2 in, actions and ACKs out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hl7v2.ack import build_ack
from hl7v2.errors import Hl7Error
from hl7v2.escaping import Encoding, escape, unescape
from mappings.hl7_orders import MergePatient, OrderOptions, SetOrderStatus, UpdatePatient, UpsertOrder, parse_message
from tests.hl7_messages import adt, omi, orm


def test_orm_fields_map_to_the_worklist_item():
    parsed = parse_message(orm("M1", name="Smith^Jane^Q^^Dr", study_uid="1.2.3.4").encode())
    assert parsed.header.control_id == "M1" and parsed.header.message_type == "ORM"
    (action,) = parsed.actions
    assert isinstance(action, UpsertOrder) and not action.is_change
    (item,) = action.items
    assert item.patient_id == "P001" and item.issuer_of_patient_id == "HOSP"
    assert item.patient_name == "Smith^Jane^Q^Dr"  # XPN prefix moves to PN component 4
    assert (item.birth_date, item.sex) == ("19580312", "F")
    assert (item.accession_number, item.requested_procedure_id, item.sps_id) == ("ACC1", "RP1", "SPS1")
    assert (item.station_ae, item.modality) == ("DXA1", "BMD")
    assert (item.start_date, item.start_time) == ("20261124", "093000")
    assert item.study_instance_uid == "1.2.3.4"
    assert item.referring_physician == "Referrer^Rita"
    assert item.requesting_physician == "Orderer^Olga"
    assert item.requested_procedure_code.value == "DXAHS"
    assert (item.placer_order_number, item.filler_order_number) == ("PO1", "FO1")


def test_study_uid_is_derived_once_from_the_order():
    a = parse_message(orm("M1").encode()).actions[0].items[0].study_instance_uid
    b = parse_message(orm("M2").encode()).actions[0].items[0].study_instance_uid
    c = parse_message(orm("M3", placer="OTHER").encode()).actions[0].items[0].study_instance_uid
    assert a == b != c
    assert a.startswith("2.25.")


def test_station_field_and_defaults_are_options():
    msg = orm("M1", station="").encode()
    item = parse_message(msg, OrderOptions(default_station_ae="DEXA9")).actions[0].items[0]
    assert item.station_ae == "DEXA9"
    item = parse_message(orm("M1").encode(), OrderOptions(station_ae_field="OBR-19")).actions[0].items[0]
    assert item.station_ae == "RP1"


@pytest.mark.parametrize("control, status", [("CA", "CANCELLED"), ("DC", "DISCONTINUED")])
def test_cancel_and_discontinue(control, status):
    (action,) = parse_message(orm("M1", control=control).encode()).actions
    assert isinstance(action, SetOrderStatus) and action.status == status
    assert action.key.placer == "PO1"


def test_status_change_uses_orc5():
    (action,) = parse_message(orm("M1", control="SC", order_status="IP").encode()).actions
    assert action.status == "IN PROGRESS"


def test_omi_one_item_per_ipc():
    (action,) = parse_message(omi("O1", steps=[("A1", "R1", "S1"), ("A2", "R2", "S2")], study_uid="1.2.9").encode()).actions
    assert [i.accession_number for i in action.items] == ["A1", "A2"]
    assert {i.study_instance_uid for i in action.items} == {"1.2.9"}
    assert [i.start_date + i.start_time for i in action.items] == ["20261124100000"] * 2


def test_adt_update_and_merge():
    (upd,) = parse_message(adt("A1", "A31", name="New^Name").encode()).actions
    assert isinstance(upd, UpdatePatient) and upd.demographics.changes()["patient_name"] == "New^Name"
    (merge,) = parse_message(adt("A2", "A40", patient_id="NEW", prior="OLD").encode()).actions
    assert isinstance(merge, MergePatient) and (merge.patient_id, merge.prior_patient_id) == ("NEW", "OLD")
    with pytest.raises(Hl7Error) as err:
        parse_message(adt("A3", "A40").encode())
    assert err.value.segment == "MRG"


def test_charsets():
    latin = orm("C1", name="Ærø^Bo", charset="8859/1").encode("latin-1")
    item = parse_message(latin).actions[0].items[0]
    assert item.patient_name == "Ærø^Bo" and item.character_set == "ISO_IR 100"
    utf = orm("C2", name="Łódź^Żaneta", charset="UNICODE UTF-8").encode("utf-8")
    item = parse_message(utf).actions[0].items[0]
    assert item.patient_name == "Łódź^Żaneta" and item.character_set == "ISO_IR 192"
    # an empty MSH-18 takes the site default
    assert parse_message(orm("C3", name="Ærø^Bo").encode("latin-1"), OrderOptions(default_charset="8859/1")).actions[0].items[0].patient_name == "Ærø^Bo"
    with pytest.raises(Hl7Error) as err:
        parse_message(orm("C4", name="Ærø^Bo", charset="UNICODE UTF-8").encode("latin-1"))
    assert (err.value.segment, err.value.field, err.value.ack_code) == ("MSH", 18, "AR")


def test_escape_sequences_are_decoded():
    enc = Encoding()
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", enc, "utf-8") == "a|b^c&d~e\\f"
    assert unescape(r"M\XC3BC\ller", enc, "utf-8") == "Müller"
    assert unescape(r"M\XFC\ller", enc, "latin-1") == "Müller"
    assert unescape(r"line\.br\two\H\bold\N\ ", enc, "utf-8") == "line\ntwobold "
    item = parse_message(orm("E1", name="O\\T\\Brien^Pat").encode()).actions[0].items[0]
    assert item.patient_name == "O&Brien^Pat"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))
def test_escape_roundtrip(value):
    assert unescape(escape(value), Encoding(), "utf-8") == value


def test_errors_name_segment_and_field():
    with pytest.raises(Hl7Error) as err:
        parse_message(orm("X1", dob="19581312").encode())
    assert (err.value.segment, err.value.field, err.value.code, err.value.ack_code) == ("PID", 7, 102, "AE")
    assert err.value.header.control_id == "X1"
    ack = build_ack(err.value.header, "AE", control_id="ACK1", timestamp="20261124", error=err.value)
    segs = {s.split("|")[0]: s.split("|") for s in ack.strip("\r").split("\r")}
    assert segs["MSA"][1:3] == ["AE", "X1"]
    assert segs["ERR"][1].startswith("PID^1^7^102")  # ERR-1 ELD for v2.3/2.4 senders
    assert segs["ERR"][2] == "PID^1^7"  # ERR-2 ERL for v2.5+
    assert segs["ERR"][3] == "102^Data type error^HL70357"
    assert segs["MSH"][8] == "ACK^O01^ACK"
    assert segs["MSH"][2:6] == ["DXAGW", "DXA", "RIS", "HOSP"]


def test_no_msh_and_garbage():
    for raw in (b"", b"hello", b"PID|1||X\r", bytes(range(256))):
        with pytest.raises(Hl7Error) as err:
            parse_message(raw)
        assert err.value.ack_code == "AR"


@pytest.mark.parametrize(
    "text",
    [
        orm("S1", name="Smith^Jane^Q^^Dr", study_uid="1.2.3.4"),
        omi("S2", steps=[("A1", "R1", "S1"), ("A2", "R2", "S2")]),
        adt("S3", "A40", patient_id="P2", prior="P1"),
        "MSH|^~\\&|A|B|C|D|20261124||ORM^O01|S4|P|2.5.1\rPID|||P1~P2^^^H&1.2&ISO||Doe^J\\S\\X\rZDS|1.2.3^100^Application^DICOM\rNTE",
        "MSH#^~\\&#A#B\rPID#1##P9\r",  # another field separator
    ],
)
def test_fields_are_split_as_python_hl7_splits_them(text):
    """The gateway's own split gives the field strings python-hl7's tree joins back to."""
    import hl7

    from hl7v2.er7 import split_message

    ours = split_message(text, "utf-8")
    theirs = hl7.parse(text.replace("\n", "\r").strip("\r"))
    assert [seg.fields for seg in ours.segments] == [[str(f) for f in seg] for seg in theirs]
