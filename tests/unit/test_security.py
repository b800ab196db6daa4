"""Identities, roles, who may talk, and the ATNA messages, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit_atna import syslog_message
from mappings.atna import events_for, to_xml
from gateway.config import Config, ConfigError, DicomSettings, Hl7Sender, load_config
from gateway.security.peers import PeerCertificate, address_allowed, dicom_refusal, hl7_sender_refusal
from gateway.security.roles import OPEN, POLICY, ROLES, required_roles
from gateway.security.tokens import TokenRegistry, new_token, sha256_hex
from tests.atna_schema import event_id, problems

REPO = Path(__file__).resolve().parents[2]


def test_every_route_is_in_the_role_table(tmp_path):
    """A new endpoint must be given its roles: none is left to a default."""
    from gateway.app import Gateway

    gw = Gateway(Config.model_validate({"storage": {"path": str(tmp_path)}}))
    try:
        routes = {(r.method, r.resource.canonical) for r in gw.http.app.router.routes() if r.method != "HEAD"}
    finally:
        gw.store.close()
    missing = sorted(r for r in routes if r not in POLICY)
    assert missing == []
    assert required_roles("GET", "/healthz") is OPEN and required_roles("GET", "/readyz") is OPEN
    assert required_roles("GET", "/metrics") == {"metrics"}
    assert required_roles("GET", "/metrics", metrics_public=True) is OPEN
    assert all(roles <= set(ROLES) for roles in POLICY.values())


def test_tokens_are_compared_by_hash():
    token = new_token()
    assert token != new_token() and len(token) > 40
    reg = TokenRegistry(Config.model_validate({"security": {"tokens": [
        {"name": "a", "token_sha256": sha256_hex(token), "roles": ["viewer"]},
        {"name": "dr", "token": "plain-token-0123456789", "roles": ["reporter"], "display_name": "Dr A Smith", "registration": "GMC 1234567"},
    ]}}).security.tokens)
    assert reg.lookup(token).name == "a"
    assert reg.lookup("plain-token-0123456789").reporter == "Dr A Smith (GMC 1234567)"
    assert reg.lookup("plain-token-012345678") is None


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "x", "roles": ["viewer"]}, "exactly one of token or token_sha256"),
        ({"name": "x", "token": "short", "roles": ["viewer"]}, "at least 16"),
        ({"name": "x", "token_sha256": "abc", "roles": ["viewer"]}, "64 hex"),
        ({"name": "x", "token": "long-enough-token-000", "roles": ["root"]}, "roles"),
    ],
)
def test_bad_identities_are_config_errors(tmp_path, entry, message):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"security": {"tokens": [entry]}}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_reporters_must_be_known_reporters(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("security: {tokens: [{name: v, token: viewer-token-000000, roles: [viewer]}]}\nreports: {reporters: [dr-x, v]}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "no identity named 'dr-x'" in str(err.value) and "'v' does not hold the reporter role" in str(err.value)


def test_docker_config_needs_identities(monkeypatch):
    """config/docker.yaml listens on all interfaces: without an HTTP token,
    the scanner's AE title and the RIS sender it does not start."""
    for var in ("DXA_ADMIN_TOKEN", "DXA_SCANNER_AE", "DXA_RIS_SENDER"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="is not set"):
        load_config(REPO / "config" / "docker.yaml")
    monkeypatch.setenv("DXA_ADMIN_TOKEN", new_token())
    monkeypatch.setenv("DXA_SCANNER_AE", "DXA1")
    monkeypatch.setenv("DXA_RIS_SENDER", "RIS^HOSP")
    c = load_config(REPO / "config" / "docker.yaml")
    assert c.http.host == "0.0.0.0" and [t.name for t in c.security.tokens] == ["admin"]
    assert c.dicom.allowed_calling_aes == ["DXA1"] and c.hl7.allowed_senders == [Hl7Sender(sender="RIS^HOSP")]


def test_addresses_and_senders():
    assert address_allowed("10.1.2.3", ["10.1.2.0/24"]) and not address_allowed("10.1.3.3", ["10.1.2.0/24"])
    assert address_allowed("::ffff:10.1.2.3", ["10.1.2.0/24"])
    assert address_allowed("anything", []) and not address_allowed("not-an-ip", ["10.0.0.0/8"])
    allowed = [Hl7Sender(sender="RIS^HOSP"), Hl7Sender(sender="LAB^HOSP", addresses=["10.0.0.5"])]
    assert hl7_sender_refusal(allowed, "RIS", "HOSP", "192.0.2.1") is None
    assert hl7_sender_refusal(allowed, "RIS^1.2.3^ISO", "HOSP", "192.0.2.1") is None  # HD namespace ID
    assert "not in hl7.allowed_senders" in hl7_sender_refusal(allowed, "EVIL", "HOSP", "10.0.0.5")
    assert "address" in hl7_sender_refusal(allowed, "LAB", "HOSP", "10.0.0.6")
    assert hl7_sender_refusal([], "ANY", "ONE", "1.2.3.4") is None
    bound = [Hl7Sender(sender="RIS^HOSP", tls_subject="CN=ris.hospital.example")]
    assert "certificate" in hl7_sender_refusal(bound, "RIS", "HOSP", "10.0.0.1")
    assert hl7_sender_refusal(bound, "RIS", "HOSP", "10.0.0.1", PeerCertificate("CN=ris.hospital.example,O=H", "ab" * 32)) is None


def test_dicom_refusals():
    s = DicomSettings(peers={"DXA1": {"addresses": ["10.0.0.0/8"], "tls_subject": "CN=dxa1,O=Hospital"}, "PIN": {"tls_fingerprint": "AB:" * 31 + "AB"}})
    cert = PeerCertificate(subject="CN=dxa1,OU=Bones,O=Hospital", sha256="ab" * 32)
    assert dicom_refusal(s, "OTHER", "DXA1", "10.0.0.1", cert).reason == 0x07
    assert dicom_refusal(s, "DXAGW", "DXA1", "10.0.0.1", cert) is None
    assert dicom_refusal(s, "DXAGW", "DXA1", "192.0.2.1", cert).reason == 0x03
    assert dicom_refusal(s, "DXAGW", "DXA1", "10.0.0.1", PeerCertificate()).reason == 0x03
    assert dicom_refusal(s, "DXAGW", "PIN", "10.0.0.1", cert) is None
    assert dicom_refusal(s, "DXAGW", "PIN", "10.0.0.1", PeerCertificate("CN=x", "cd" * 32)).reason == 0x03
    assert dicom_refusal(s, "DXAGW", "UNLISTED", "192.0.2.1", PeerCertificate()) is None
    assert dicom_refusal(DicomSettings(accept_any_called_ae=True), "OTHER", "X", "1.2.3.4", PeerCertificate()) is None


ROWS = [
    ({"event": "auth.success", "actor": "dr-a", "detail": {"via": "token", "remote": "127.0.0.1"}}, {("110114", "0")}),
    ({"event": "auth.failure", "actor": "anonymous@10.0.0.9", "detail": {"reason": "unknown token", "remote": "10.0.0.9"}}, {("110114", "4"), ("110113", "4")}),
    ({"event": "hl7.ADT^A40", "actor": "RIS|HOSP", "detail": {"message_id": "M1", "items": [3], "patient_id": "P1"}}, {("110110", "0")}),
    ({"event": "worklist.status", "actor": "ris", "detail": {"id": 4, "status": "CANCELLED"}}, {("110110", "0")}),
    ({"event": "worklist.justify", "actor": "rob", "detail": {"id": 4, "patient_id": "P1", "practitioner": "R5", "held_for": "unknown", "note": ""}}, {("110110", "0")}),
    ({"event": "instance.received", "actor": "DXA1", "detail": {"study_uid": "1.2.3", "patient_id": "P1", "sop_class": "1.2.840.10008.5.1.4.1.1.7"}}, {("110104", "0")}),
    ({"event": "outbox.delivered", "actor": "emr", "detail": {"destination": "emr", "kind": "report", "ref_table": "reports", "ref_id": 9, "patient_id": "P1"}}, {("110106", "0")}),
    ({"event": "outbox.delivered", "actor": "pacs", "detail": {"destination": "pacs", "kind": "image", "ref_table": "instances", "ref_id": 1, "study_uid": "1.2.3"}}, {("110104", "0")}),
    ({"event": "dicom.query", "actor": "DXA1@10.0.0.2", "detail": {"sop_class": "1.2.840.10008.5.1.4.31", "transfer_syntax": "1.2.840.10008.1.2.1", "query": "CAAQAA=="}}, {("110112", "0")}),
    ({"event": "dicom.association_refused", "actor": "X@10.0.0.3", "detail": {"called_ae": "NOPE", "reason": "called AE title is not ours"}}, {("110113", "4")}),
    ({"event": "hl7.sender_refused", "actor": "EVIL^X@10.0.0.4:5000", "detail": {"reason": "not allowed", "type": "ADT^A40"}}, {("110113", "4")}),
    ({"event": "outbox.delivered", "actor": "pacs", "detail": {"destination": "pacs", "kind": "report-pdf", "ref_table": "reports", "ref_id": 9, "patient_id": "P1"}}, {("110106", "0")}),
    # the workbench read an exam's images, trend or PDF: Patient Record, action R (PS3.15 A.5.3.9)
    ({"event": "exam.read", "actor": "dr-a", "detail": {"exam": 3, "patient_id": "P1", "what": "report.pdf"}}, {("110110", "0")}),
    ({"event": "exam.create", "actor": "gateway", "detail": {}}, set()),
    ({"event": "workbench.exam", "actor": "dr-a", "detail": {"exam": 3, "patient_id": "P1"}}, {("110110", "0")}),
    ({"event": "workbench.queue", "actor": "dr-a", "detail": {"exams": [3, 4], "patient_ids": ["P1", "P2"]}}, {("110110", "0")}),
    ({"event": "workbench.today", "actor": "rad", "detail": {"date": "20261203", "exams": [], "patient_ids": []}}, set()),
]


@pytest.mark.parametrize("row, expected", ROWS, ids=[r["event"] for r, _ in ROWS])
def test_audit_rows_become_valid_atna_messages(row, expected):
    """PS3.15 A.5.3 event per audit row, each a valid A.5.1 AuditMessage."""
    row = {"id": 1, "at": "2026-12-03T10:00:00.000+00:00", **row}
    events = events_for(row, "DXAGW", "127.0.0.1")
    xmls = [to_xml(e, "DXAGW", "SITE") for e in events]
    assert {event_id(x) for x in xmls} == expected
    for x in xmls:
        assert problems(x) == [], x
        message = syslog_message(x, "host").decode("utf-8")
        assert message.startswith("<85>1 ") and " dxa-gateway " in message and " IHE+RFC-3881 - \ufeff<?xml" in message


def test_the_checker_finds_what_is_wrong():
    """The structural check can fail (so the rsyslog test means something)."""
    assert problems("<AuditMessage/>")
    bad = '<AuditMessage><EventIdentification EventActionCode="X" EventDateTime="yesterday" EventOutcomeIndicator="1"><EventID csd-code="1"/></EventIdentification><AuditSourceIdentification/></AuditMessage>'
    found = " ".join(problems(bad))
    for what in ("EventActionCode", "EventDateTime", "EventOutcomeIndicator", "codeSystemName", "AuditSourceID", "out of order"):
        assert what in found
