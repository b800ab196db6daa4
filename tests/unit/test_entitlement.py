"""mappings.entitlement: is an order's referrer entitled?

Source: IR(ME)R 2017 reg. 6(5)(b) and 10(1) (only entitled referrers; the
employer's written procedures); RCR/SCoR/RCN/NHSE good practice guidance on
referrer entitlement (seed 003), principles 3 (a written scope), 6 (entitlement
removed) and 9 (automated, systems-based control).
"""

from __future__ import annotations

from datetime import date

from mappings import entitlement as ent
from mappings.hl7_orders import OrderOptions, parse_message
from mappings.worklist import Code, WorklistItem
from tests.hl7_messages import orm

REGISTER = """id,name,role,scope,valid_until
D456,Orderer^Olga,referrer,BMD,2027-12-31
N77,Nurse Nora,referrer;practitioner,DXAHS,
X1,Expired Ed,referrer,*,2025-01-31
CT9,Scanner Sam,referrer,CT,
R5,Rad Rob,practitioner,BMD,
,no id,referrer,BMD,
B2,Bad Date,referrer,BMD,31/12/2027
"""
TODAY = date(2026, 11, 24)


def item(referrer_id="D456", name="Orderer^Olga", code="DXAHS", modality="BMD") -> WorklistItem:
    return WorklistItem(
        patient_id="P1", referrer_id=referrer_id, requesting_physician=name, modality=modality,
        requested_procedure_code=Code(code, "L", "DXA") if code else None, start_date="20261124",
    )


def test_register_rows_and_problems():
    reg = ent.parse_register(REGISTER)
    assert [r.id for r in reg.referrers] == ["D456", "N77", "X1", "CT9", "R5"]
    assert reg.problems == ("line 7: id is empty", "line 8: valid_until '31/12/2027' is not a date (YYYY-MM-DD)")
    assert reg.referrers[1].roles == ("referrer", "practitioner")
    assert reg.referrers[1].valid_until is None


def test_entitled_referrer_in_scope_by_modality_or_procedure_code():
    reg = ent.parse_register(REGISTER)
    assert ent.check(item(), reg, TODAY).entitled
    # N77's scope names the procedure code, not the modality
    assert ent.check(item("N77", "Nurse^Nora"), reg, TODAY).entitled
    assert ent.check(item("N77", "Nurse^Nora", code="DXAWB"), reg, TODAY).reason == ent.OUT_OF_SCOPE


def test_unknown_expired_out_of_scope_and_no_referrer():
    """Principle 6: entitlement removed or lapsed means the order is not entitled."""
    reg = ent.parse_register(REGISTER)
    assert ent.check(item("Z9", "Who^Ever"), reg, TODAY).reason == ent.UNKNOWN
    expired = ent.check(item("X1", "Expired^Ed"), reg, TODAY)
    assert (expired.entitled, expired.reason) == (False, ent.EXPIRED)
    assert "2025-01-31" in expired.detail
    assert ent.check(item("X1", "Expired^Ed"), reg, date(2025, 1, 31)).entitled  # the last day still counts
    assert ent.check(item("CT9", "Scanner^Sam"), reg, TODAY).reason == ent.OUT_OF_SCOPE
    assert ent.check(item("", ""), reg, TODAY).reason == ent.NO_REFERRER
    # a row left out for a bad date is unknown, so its orders are held, not passed
    assert ent.check(item("B2", "Bad^Date"), reg, TODAY).reason == ent.UNKNOWN


def test_ids_decide_when_present_names_only_when_unique():
    reg = ent.parse_register(REGISTER)
    # The id is the identity: a known name with an unknown id is unknown.
    assert ent.check(item("Z9", "Orderer^Olga"), reg, TODAY).reason == ent.UNKNOWN
    # Without an id, a unique name matches, whatever its form (PN or text, title)
    assert ent.check(item("", "ORDERER^OLGA^^DR"), reg, TODAY).entitled
    twice = ent.parse_register(REGISTER + "D457,Olga Orderer,referrer,BMD,\n")
    assert ent.check(item("", "Orderer^Olga"), twice, TODAY).reason == ent.UNKNOWN


def test_unreadable_register_holds_everything():
    assert ent.check(item(), ent.UNAVAILABLE, TODAY).reason == ent.REGISTER_UNAVAILABLE
    bad_header = ent.parse_register("who,what\nD456,x\n")
    assert not bad_header.available
    assert ent.check(item(), bad_header, TODAY).reason == ent.REGISTER_UNAVAILABLE


def test_practitioner_must_have_the_role_and_be_current():
    """IR(ME)R reg. 11: the practitioner justifies; entitlement to refer is not that (principle 11)."""
    reg = ent.parse_register(REGISTER)
    assert ent.check_practitioner(reg, "R5", TODAY) == ""
    assert ent.check_practitioner(reg, "N77", TODAY) == ""
    assert ent.check_practitioner(reg, "D456", TODAY) == "role is not practitioner"
    assert ent.check_practitioner(reg, "nobody", TODAY) == "not in the register"


def test_hl7_referrer_id_from_orc12_else_obr16_else_pv1_8():
    msg = orm("E1")
    parsed = parse_message(msg.encode(), OrderOptions())
    first = parsed.actions[0].items[0]
    assert (first.referrer_id, first.referrer_field) == ("D456", "ORC-12")
    no_orc12 = msg.replace("D456^Orderer^Olga", "")
    first = parse_message(no_orc12.encode(), OrderOptions()).actions[0].items[0]
    assert (first.referrer_id, first.referrer_field) == ("D123", "PV1-8")
    with_obr16 = no_orc12.replace("|RP1|", "|RP1|").replace("OBR|1|", "OBR|1|", 1)
    segs = with_obr16.split("\r")
    obr = segs[4].split("|")
    obr[16] = "D789^Obr^Otto"
    segs[4] = "|".join(obr)
    first = parse_message("\r".join(segs).encode(), OrderOptions()).actions[0].items[0]
    assert (first.referrer_id, first.referrer_field) == ("D789", "OBR-16")


def test_fhir_requester_identifier_else_reference_id():
    """FHIR R4 ServiceRequest.requester (Reference): identifier.value, else the referenced id."""
    from tests.unit.test_fhir_orders import sr
    from mappings.fhir_orders import service_request_actions

    def first(**over):
        return service_request_actions(sr(**over), default_station_ae="DXA1")[0].items[0]

    got = first(requester={"identifier": {"value": "D456"}, "display": "Olga Orderer"}, authoredOn="2026-11-01T09:00:00+00:00")
    assert (got.referrer_id, got.referrer_field, got.requesting_physician) == ("D456", "ServiceRequest.requester", "Olga^Orderer")
    assert got.referred_at.startswith("2026-11-01T09:00:00")
    assert first(requester={"reference": "Practitioner/N77"}).referrer_id == "N77"
    assert (first().referrer_id, first().referrer_field) == ("", "")
    reg = ent.parse_register(REGISTER)
    assert ent.check(first(requester={"reference": "Practitioner/N77"}), reg, TODAY).reason == ent.OUT_OF_SCOPE  # LOINC code, not DXAHS
    assert ent.check(first(requester={"identifier": {"value": "D456"}}), reg, TODAY).entitled


def test_a_changed_order_keeps_or_takes_its_hold():
    """A justified step is not held again by a change from the same referrer;
    a change to another, unentitled referrer holds it again; a HELD step
    takes the change's status (released once the referrer is entitled)."""
    from mappings.order_reconciliation import kept_status as _kept_status

    justified = item("Z9", "Who^Ever").replace(status="SCHEDULED")
    again = item("Z9", "Who^Ever").replace(status="HELD")
    assert _kept_status(justified, again) == "SCHEDULED"
    assert _kept_status(justified, item("Y8", "Other^One").replace(status="HELD")) == "HELD"
    assert _kept_status(again, item().replace(status="SCHEDULED")) == "SCHEDULED"
    assert _kept_status(again, again) == "HELD"
    assert _kept_status(justified.replace(status="IN PROGRESS"), item("Y8", "Other^One").replace(status="HELD")) == "IN PROGRESS"


def test_config_keys(tmp_path):
    import pytest

    from gateway.config import ConfigError, load_config

    p = tmp_path / "g.yaml"
    p.write_text("entitlement:\n  referrers_file: referrers.csv\n  on_unknown: reject\n")
    c = load_config(p).entitlement
    assert (str(c.referrers_file), c.on_unknown) == ("referrers.csv", "reject")
    assert load_config().entitlement.referrers_file is None  # off by default
    p.write_text("entitlement:\n  on_unknown: ignore\n")
    with pytest.raises(ConfigError, match=r"g.yaml:2: entitlement.on_unknown"):
        load_config(p)


def test_register_file_read_again_on_change_and_unreadable_logged_once(tmp_path, caplog):
    import logging
    import os

    from gateway.config import EntitlementSettings
    from gateway.entitlement import Entitlement

    path = tmp_path / "referrers.csv"
    path.write_text(REGISTER)
    guard = Entitlement(EntitlementSettings(referrers_file=path), today=lambda: TODAY)
    assert guard.register().find("D456", "") is not None
    path.write_text(REGISTER + "N1,New Nurse,referrer,BMD,\n")
    os.utime(path, ns=(1, 10**18))
    assert guard.register().find("N1", "") is not None
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="gateway.entitlement"):
        for _ in range(3):
            assert not guard.register().available
    assert [r.message for r in caplog.records].count("entitlement.register_unreadable") == 1
    path.write_text(REGISTER)
    assert guard.register().available
    assert guard.practitioner(["GMC 1", "R5"]) == ("R5", "")  # registration first, then the name
    assert guard.practitioner(["D456"]) == ("", "role is not practitioner")
    assert guard.practitioner(["", "nobody"]) == ("", "not in the register")
