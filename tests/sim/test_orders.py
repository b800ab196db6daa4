"""The order builders agree with the gateway's conventions (read back with
mappings.hl7_orders / mappings.fhir_orders) and the HL7 rules."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from mappings.fhir_orders import service_request_actions
from mappings.hl7_orders import SetOrderStatus, UpdatePatient, UpsertOrder, parse_message
from simulators import orders as om

TS = "20261124080000"


def _order(**kw) -> om.Order:
    patient = om.Patient("P042", kw.pop("family", "Müller"), kw.pop("given", "Zoë"), "19520401", "F", "W^White")
    steps = kw.pop("steps", (om.Step("ACC42", "RP42", "SPS42", "1.2.826.0.1.3680043.8.498.42", "DXA1"),))
    return om.Order(patient, "PO42", "FO42", "20261124093000", steps, **kw)


@pytest.mark.parametrize("charset", ["UNICODE UTF-8", "8859/1"])
@pytest.mark.parametrize("version", ["2.3.1", "2.5.1"])
def test_orm_reads_back_with_the_gateway_conventions(charset, version):
    order = _order(family="Ærø", given="Søren")
    raw = om.encode(om.build_orm(order, "MSG1", timestamp=TS, version=version, charset=charset), charset)
    parsed = parse_message(raw)
    assert parsed.header.control_id == "MSG1"
    assert parsed.header.charset == charset
    (action,) = parsed.actions
    assert isinstance(action, UpsertOrder)
    (item,) = action.items
    assert item.patient_id == "P042"
    assert item.patient_name == "Ærø^Søren"
    assert item.birth_date == "19520401"
    assert item.sex == "F"
    assert item.ethnic_group == "White"
    assert item.accession_number == "ACC42"
    assert item.requested_procedure_id == "RP42"
    assert item.sps_id == "SPS42"
    assert item.station_ae == "DXA1"
    assert item.modality == "BMD"
    assert (item.start_date, item.start_time) == ("20261124", "093000")
    assert item.study_instance_uid == "1.2.826.0.1.3680043.8.498.42"
    assert action.key.placer == "PO42" and action.key.filler == "FO42"


def test_charsets_encode_the_letters_differently():
    order = _order(family="Müller")
    text = om.build_orm(order, "M", timestamp=TS)
    assert "Müller".encode("latin-1") in om.encode(text, "8859/1")
    assert "Müller".encode("utf-8") in om.encode(text, "UNICODE UTF-8")
    assert "|8859/1" in om.build_orm(order, "M", timestamp=TS, charset="8859/1").split("\r")[0]
    with pytest.raises(ValueError, match="ü"):
        om.encode(text, "ASCII")


def test_separators_in_values_are_escaped():
    order = _order(text="DXA hip & spine | forearm^L")
    text = om.build_orm(order, "M", timestamp=TS)
    obr = next(s for s in text.split("\r") if s.startswith("OBR"))
    assert "DXA hip \\T\\ spine \\F\\ forearm\\S\\L" in obr
    assert obr.split("|")[4].count("^") == 2  # code^text^system, nothing more
    item = parse_message(om.encode(text)).actions[0].items[0]
    assert item.requested_procedure_description == "DXA hip & spine | forearm^L"
    assert om.escape("a\\b") == "a\\E\\b"


def test_omi_has_one_ipc_per_step():
    steps = tuple(om.Step(f"ACC{n}", f"RP{n}", f"SPS{n}", f"1.2.3.{n}", "DXA2") for n in (1, 2, 3))
    text = om.build_omi(_order(steps=steps), "OMI1", timestamp=TS)
    assert [s.split("|")[0] for s in text.strip().split("\r")].count("IPC") == 3
    assert next(s for s in text.split("\r") if s.startswith("TQ1")).split("|")[7] == "20261124093000"
    items = parse_message(om.encode(text)).actions[0].items
    assert [(i.accession_number, i.requested_procedure_id, i.sps_id, i.study_instance_uid, i.station_ae) for i in items] == [
        (f"ACC{n}", f"RP{n}", f"SPS{n}", f"1.2.3.{n}", "DXA2") for n in (1, 2, 3)
    ]


@pytest.mark.parametrize("fmt", ["orm", "omi"])
def test_cancel_is_orc_1_ca(fmt):
    text = om.build_cancel(_order(), "CA1", timestamp=TS, fmt=fmt)
    orc = next(s for s in text.split("\r") if s.startswith("ORC")).split("|")
    assert orc[1] == "CA"
    (action,) = parse_message(om.encode(text)).actions
    assert isinstance(action, SetOrderStatus) and action.status == "CANCELLED"
    assert action.key.placer == "PO42"


def test_adt_a08_updates_the_patient():
    patient = om.renamed(_order().patient, family="Müller-Ærø")
    text = om.build_adt_a08(patient, "A1", timestamp=TS)
    assert text.split("\r")[0].split("|")[8] == "ADT^A08^ADT_A01"
    (action,) = parse_message(om.encode(text)).actions
    assert isinstance(action, UpdatePatient)
    assert action.demographics.patient_name == "Müller-Ærø^Zoë"


def test_service_request_validates_and_maps():
    body = om.build_service_request(_order(), tz="+01:00")
    ServiceRequest.model_validate(body)  # raises when not valid R4
    assert body["contained"][0]["resourceType"] == "Patient" and body["subject"]["reference"] == "#pat"
    (action,) = service_request_actions(body)
    (item,) = action.items
    assert item.accession_number == "ACC42"
    assert item.station_ae == "DXA1"
    assert item.patient_name == "Müller^Zoë"
    assert (item.start_date, item.start_time) == ("20261124", "093000")
    assert item.study_instance_uid == "1.2.826.0.1.3680043.8.498.42"
    revoked = service_request_actions(om.build_service_request(_order(), status="revoked"))
    assert isinstance(revoked[0], SetOrderStatus) and revoked[0].status == "CANCELLED"


def test_check_ack():
    ack = "MSH|^~\\&|GW|X|RIS|H|20260101||ACK^O01^ACK|A1|P|2.5.1\rMSA|AA|MSG7\r"
    assert om.check_ack(ack, "MSG7") == (True, "MSA-1 AA")
    ok, detail = om.check_ack(ack, "MSG8")
    assert not ok and "MSG7" in detail
    ok, detail = om.check_ack(ack.replace("MSA|AA", "MSA|AE"), "MSG7")
    assert not ok and "AE" in detail
    assert om.check_ack(ack.replace("MSA|AA", "MSA|CA"), "MSG7")[0]
    assert not om.check_ack(b"garbage", "MSG7")[0]
    assert not om.check_ack("MSH|^~\\&|GW\r", "MSG7")[0]


def test_random_orders_are_reproducible_and_for_the_station():
    a = om.random_orders(7, 20, day="20261124", station_ae="DXA9")
    b = om.random_orders(7, 20, day="20261124", station_ae="DXA9")
    c = om.random_orders(8, 20, day="20261124", station_ae="DXA9")
    assert a == b and a != c
    assert all(s.station_ae == "DXA9" and s.modality == "BMD" for o in a for s in o.steps)
    assert all(o.start.startswith("20261124") for o in a)
    assert len({s.accession for o in a for s in o.steps}) == sum(len(o.steps) for o in a)
    for o in a:  # every generated order parses
        assert parse_message(om.encode(om.build_orm(o, "X", timestamp=TS))).actions
