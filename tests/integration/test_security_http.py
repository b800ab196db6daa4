"""HTTP identities and roles in the real daemon (issue 13, README "Security"):
the whole table endpoint x role -> status, 401/403, browser safety, the
reporter from the identity, ``reports.reporters`` and ``auto_release``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from mappings.bmd.samples import hologic_sr
from tests.orthanc import wait_for
from tests.support import ALL_ROLES, dcmtk, http_request, start_daemon
from tests.unit.bmd.helpers import HOLOGIC, known_exam

ENV = dict(os.environ, TCP_NODELAY="1")
ROLE_TOKENS = {role: f"token-for-role-{role}-0123456789" for role in ALL_ROLES}
IDENTITIES = [{"name": f"only-{role}", "token": tok, "roles": [role]} for role, tok in ROLE_TOKENS.items()]
DR_A = {"name": "dr-a", "token": "token-dr-a-0123456789abcdef", "roles": ["reporter"], "display_name": "Dr A Smith", "registration": "GMC 1234567"}
DR_B = {"name": "dr-b", "token": "token-dr-b-0123456789abcdef", "roles": ["reporter"], "display_name": "Dr B Jones"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(
        tmp_path_factory.mktemp("sec"),
        {"storage": {"min_free_bytes": 0}, "security": {"tokens": [*IDENTITIES, DR_A, DR_B]}, "reports": {"reporters": ["test", "dr-a", "only-reporter"], "settle_seconds": 0.3}},
    )
    yield d
    d.stop()


ANY = None  # a status the handler decides (the call got through)
SR = {"resourceType": "ServiceRequest"}

# (method, path, body, content type, roles granted, status when granted)
TABLE = [
    ("GET", "/metrics", None, None, {"metrics"}, 200),
    ("POST", "/api/worklist", {}, "application/dicom+json", {"orders"}, 422),
    ("GET", "/api/worklist", None, None, {"viewer", "orders", "radiographer", "admin"}, 200),
    ("GET", "/api/worklist/999999", None, None, {"viewer", "orders", "radiographer", "admin"}, 404),
    ("DELETE", "/api/worklist/999999", None, None, {"orders"}, 404),
    ("POST", "/fhir/ServiceRequest", SR, "application/fhir+json", {"orders"}, ANY),
    ("POST", "/fhir", SR, "application/fhir+json", {"orders"}, ANY),
    ("GET", "/api/exams", None, None, {"viewer", "radiographer", "reporter"}, 200),
    ("GET", "/api/exams/999999", None, None, {"viewer", "radiographer", "reporter"}, 404),
    ("GET", "/api/exams/999999/report", None, None, {"viewer", "radiographer", "reporter"}, 404),
    ("POST", "/api/exams/999999/sign", {}, "application/json", {"reporter"}, 404),
    ("GET", "/api/exams/999999/reports", None, None, {"viewer", "radiographer", "reporter"}, 404),
    ("PUT", "/api/exams/999999/context", {}, "application/json", {"radiographer"}, 404),
    ("GET", "/api/exams/999999/images", None, None, {"viewer", "radiographer", "reporter"}, 404),
    ("GET", "/api/exams/999999/images/1.2.3.4.png", None, None, {"viewer", "radiographer", "reporter"}, 404),
    ("GET", "/api/exams/999999/trend.svg", None, None, {"viewer", "radiographer", "reporter"}, 404),
    ("GET", "/api/exams/999999/report.pdf", None, None, {"viewer", "radiographer", "reporter"}, 404),
    # the test reporter is no practitioner in a referrers register: the handler refuses it
    ("POST", "/api/worklist/999999/justify", {}, "application/json", {"reporter"}, 403),
    ("GET", "/api/kpis", None, None, {"viewer"}, 200),
    ("GET", "/api/qa", None, None, {"viewer", "radiographer", "admin"}, 200),
    ("GET", "/api/qa/NO-SUCH-SERIAL", None, None, {"viewer", "radiographer", "admin"}, 404),
    ("GET", "/api/priors/status", None, None, {"viewer", "reporter", "admin"}, 200),
    ("GET", "/api/outbox", None, None, {"admin"}, 200),
    ("POST", "/api/outbox/retry", None, "application/json", {"admin"}, 200),
    ("POST", "/api/outbox/999999/retry", None, "application/json", {"admin"}, 404),
    ("GET", "/api/destinations", None, None, {"admin"}, 200),
    ("GET", "/api/audit", None, None, {"admin"}, 200),
    # the workbench's pages (README "The reporting workbench"): a bearer caller gets them too
    ("GET", "/workbench/", None, None, set(ALL_ROLES), ANY),
    ("POST", "/workbench/logout", {}, "application/x-www-form-urlencoded", set(ALL_ROLES), ANY),
    ("GET", "/workbench/queue", None, None, {"reporter"}, 200),
    ("GET", "/workbench/today", None, None, {"radiographer"}, 200),
    ("GET", "/workbench/exams/999999", None, None, {"viewer", "radiographer", "reporter"}, 404),
    ("POST", "/workbench/exams/999999/sign", {}, "application/x-www-form-urlencoded", {"reporter"}, 404),
    ("POST", "/workbench/exams/999999/context", {}, "application/x-www-form-urlencoded", {"radiographer"}, 404),
]

# Open without a credential: health, and the workbench's login and its static files.
OPEN_ROUTES = [
    ("GET", "/healthz", 200),
    ("GET", "/readyz", 200),
    ("GET", "/workbench/login", 200),
    ("POST", "/workbench/login", 403),  # without the login form's CSRF token
    ("GET", "/workbench/oidc/start", 404),  # no security.oidc.login here
    ("GET", "/workbench/oidc/callback", 400),  # no such state
    ("GET", "/workbench/static", 200),
]


def test_the_table_covers_every_endpoint_of_the_role_policy():
    """The table below is the whole policy (gateway/security/roles.py): an
    endpoint added there without a row here fails this test."""
    from gateway.security.roles import POLICY

    tested = {(m, p.replace("999999", "{id}").replace("NO-SUCH-SERIAL", "{serial}").replace("1.2.3.4.png", "{sop_instance_uid}.png")) for m, p, *_ in TABLE} | {(m, p) for m, p, _ in OPEN_ROUTES}
    assert tested == set(POLICY)


@pytest.mark.parametrize("method, path, ok", OPEN_ROUTES, ids=[f"{m} {p}" for m, p, _ in OPEN_ROUTES])
def test_open_routes_answer_without_a_credential(daemon, method, path, ok):
    """Nothing else is open; the login's POST still checks Host and its CSRF token."""
    target = path + "/workbench.css" if path == "/workbench/static" else path
    body = b"token=x" if method == "POST" else None
    status, answer, headers = http_request(daemon.http + target, method, raw=body, content_type="application/x-www-form-urlencoded")
    assert status == ok, (status, answer)
    assert headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    if method == "POST":
        assert http_request(daemon.http + target, method, raw=body, content_type="application/x-www-form-urlencoded", headers={"Host": "evil.example"})[0] == 400


def call(daemon, method, path, body=None, ctype="application/json", token="", headers=None):
    return http_request(daemon.http + path, method, body, content_type=ctype or "application/json", token=token, headers=headers)


def test_health_is_open_and_carries_security_headers(daemon):
    for path in ("/healthz", "/readyz"):
        status, _, headers = call(daemon, "GET", path)
        assert status == 200
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("method, path, body, ctype, granted, ok", TABLE, ids=[f"{m} {p}" for m, p, *_ in TABLE])
def test_endpoint_by_role(daemon, method, path, body, ctype, granted, ok):
    """Every endpoint x every role: granted -> the handler's status, else 403;
    no credential or an unknown one -> 401 with WWW-Authenticate (RFC 6750 3)."""
    status, _, headers = call(daemon, method, path, body, ctype)
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="dxa-gateway"'
    status, _, headers = call(daemon, method, path, body, ctype, token="not-a-known-token-at-all")
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    for role, token in ROLE_TOKENS.items():
        status, answer, _ = call(daemon, method, path, body, ctype, token=token)
        if role in granted:
            # the role passed: any refusal now is the handler's own, not the role check's
            assert status != 401 and not (status == 403 and "roles" in str(answer)), (role, status, answer)
            if ok is not None:
                assert status == ok, (role, status, answer)
        else:
            assert status == 403, (role, status, answer)
            assert "roles" in answer["error"]


def test_basic_and_odd_schemes_are_401(daemon):
    status, _, headers = call(daemon, "GET", "/api/exams", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert status == 401 and "invalid_token" in headers["WWW-Authenticate"]


def test_browser_requests_that_change_things_are_refused(daemon):
    """A cross-site page can send text/plain or a form without preflight, and a
    foreign Origin; neither changes anything.  Host is checked (DNS rebinding)."""
    tok = ROLE_TOKENS["orders"]
    before = len(call(daemon, "GET", "/api/worklist?limit=1000", token=tok)[1])
    status, _, _ = http_request(daemon.http + "/api/worklist", "POST", raw=b"{}", content_type="text/plain", token=tok)
    assert status == 415
    status, _, _ = http_request(daemon.http + "/api/worklist", "POST", raw=b"a=1", content_type="application/x-www-form-urlencoded", token=tok)
    assert status == 415
    status, _, _ = call(daemon, "POST", "/api/worklist", {}, "application/dicom+json", token=tok, headers={"Origin": "https://evil.example"})
    assert status == 403
    status, _, _ = call(daemon, "DELETE", "/api/worklist/1", token=tok, headers={"Origin": "null"})
    assert status == 403
    # same origin is fine (the handler answers 422 for an empty dataset)
    status, _, _ = call(daemon, "POST", "/api/worklist", {}, "application/dicom+json", token=tok, headers={"Origin": f"http://127.0.0.1:{daemon.http_port}"})
    assert status == 422
    # DNS rebinding: the page's host name reaches our loopback address
    status, _, _ = call(daemon, "GET", "/api/worklist", token=tok, headers={"Host": f"evil.example:{daemon.http_port}"})
    assert status == 400
    assert call(daemon, "GET", "/healthz", headers={"Host": "evil.example"})[0] == 200
    assert len(call(daemon, "GET", "/api/worklist?limit=1000", token=tok)[1]) == before


def test_audit_actor_is_the_identity_not_a_header(daemon):
    tok = ROLE_TOKENS["orders"]
    status, _, _ = call(daemon, "DELETE", "/api/worklist/999998", token=tok, headers={"X-Actor": "someone-else"})
    assert status == 404
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "PSEC1", "Sec^One", "ACC-SEC-1"
    sps = Dataset()
    sps.ScheduledStationAETitle, sps.Modality, sps.ScheduledProcedureStepStartDate = "DXA1", "BMD", "20260101"
    sps.ScheduledProcedureStepID = "S1"
    ds.ScheduledProcedureStepSequence = [sps]
    ds.RequestedProcedureID = "R1"
    status, body, _ = call(daemon, "POST", "/api/worklist", ds.to_json_dict(), "application/dicom+json", token=tok, headers={"X-Actor": "someone-else"})
    assert status == 201, body
    status, _, _ = call(daemon, "DELETE", f"/api/worklist/{body['id']}", token=tok, headers={"X-Actor": "someone-else"})
    assert status == 204
    rows = call(daemon, "GET", "/api/audit?event=worklist.", token=ROLE_TOKENS["admin"])[1]
    mine = [r for r in rows if r["detail"].get("id") == body["id"]]
    assert {r["event"] for r in mine} == {"worklist.create", "worklist.status"}
    assert {r["actor"] for r in mine} == {"only-orders"}
    failures = wait_for(lambda: call(daemon, "GET", "/api/audit?event=auth.failure", token=ROLE_TOKENS["admin"])[1], 10)
    assert failures and all(r["actor"].startswith("anonymous@") for r in failures)


def _stored_exam(daemon, tmp_path: Path, patient: str) -> dict:
    ds = hologic_sr(known_exam("hologic", HOLOGIC, patient_id=patient, sop_instance_uid=generate_uid(), study_instance_uid=generate_uid()))
    path = tmp_path / f"{patient}.dcm"
    ds.save_as(path, enforce_file_format=True)
    r = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(daemon.dicom_port), str(path)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr

    def find():
        rows = call(daemon, "GET", f"/api/exams?patient={patient}", token=ROLE_TOKENS["viewer"])[1]
        return next((r for r in rows or [] if r["state"] != "settling"), None)  # drafted (reports.settle_seconds)

    return wait_for(find, 15)


def test_report_names_the_signing_identity_and_viewer_cannot_sign(daemon, tmp_path):
    """The reporter on a signed report comes from the identity (name and
    registration); a viewer's token, an unlisted reporter and a typed name are refused."""
    row = _stored_exam(daemon, tmp_path, "PSIGN-SEC")
    sign = f"/api/exams/{row['id']}/sign"
    assert call(daemon, "POST", sign, {}, token=ROLE_TOKENS["viewer"])[0] == 403
    status, body, _ = call(daemon, "POST", sign, {}, token=DR_B["token"])
    assert status == 403 and "reports.reporters" in body["error"]
    assert call(daemon, "POST", sign, {"reporter": "Dr Nobody"}, token=DR_A["token"])[0] == 400
    status, body, _ = call(daemon, "POST", sign, {}, token=DR_A["token"])
    assert status == 201 and body["status"] == "F", body
    assert body["reporter"] == "Dr A Smith (GMC 1234567)"
    exam = call(daemon, "GET", f"/api/exams/{row['id']}", token=ROLE_TOKENS["viewer"])[1]
    assert exam["report"]["reporter"] == "Dr A Smith (GMC 1234567)"
    text = call(daemon, "GET", f"/api/exams/{row['id']}/report", token=ROLE_TOKENS["viewer"])[1]
    assert "Reported by: Dr A Smith (GMC 1234567)" in text and "Dr Nobody" not in text
    audit = call(daemon, "GET", "/api/audit?event=report.final", token=ROLE_TOKENS["admin"])[1]
    assert any(r["detail"]["exam"] == row["id"] and "Dr A Smith" in r["actor"] for r in audit)


def test_nothing_configured_means_401_and_a_hint(tmp_path):
    d = start_daemon(tmp_path, test_token=False)
    try:
        assert call(d, "GET", "/healthz")[0] == 200
        for method, path, body, ctype, *_ in TABLE:
            status, answer, headers = call(d, method, path, body, ctype, token="anything-at-all-0123456789")
            assert status == 401, (method, path)
            assert "dxa-gateway token new" in answer["error"] and "WWW-Authenticate" in headers
        assert wait_for(lambda: "security.no_identities" in d.log_text(), 5)
        assert "dxa-gateway token new NAME --roles" in d.log_text()
    finally:
        d.stop()


def test_metrics_public_and_token_new(tmp_path):
    """``dxa-gateway token new`` prints a token once and a config line with
    only its SHA-256; that line works; ``http.metrics_public`` opens /metrics."""
    out = subprocess.run([sys.executable, "-m", "gateway", "token", "new", "ris", "--roles", "orders,viewer"], capture_output=True, text=True, check=True).stdout
    lines = [line.strip() for line in out.splitlines()]
    token = lines[1]
    entry_line = lines[3]
    assert token not in entry_line and "token_sha256" in entry_line
    import yaml

    entry = yaml.safe_load(entry_line)[0]
    assert entry["roles"] == ["orders", "viewer"]
    bad = subprocess.run([sys.executable, "-m", "gateway", "token", "new", "x", "--roles", "orders,root"], capture_output=True, text=True)
    assert bad.returncode == 2
    d = start_daemon(tmp_path, {"http": {"metrics_public": True}, "security": {"tokens": [entry]}}, test_token=False)
    try:
        assert call(d, "GET", "/metrics")[0] == 200
        assert call(d, "GET", "/api/worklist", token=token)[0] == 200
        assert call(d, "GET", "/api/outbox", token=token)[0] == 403
    finally:
        d.stop()


def test_auto_release_is_preliminary_and_says_so(tmp_path):
    """``reports.auto_release`` releases without a reporter: the report goes out
    preliminary, marked not clinically evaluated, never FINAL."""
    d = start_daemon(tmp_path, {"storage": {"min_free_bytes": 0}, "reports": {"auto_release": True, "settle_seconds": 0.3}})
    try:
        row = _stored_exam_default(d, tmp_path)
        assert row["report"]["status"] == "P"
        text = d.request("GET", f"/api/exams/{row['id']}/report")[1]
        assert "NOT CLINICALLY EVALUATED" in text and "FINAL" not in text
        # a reporter can still sign it final
        status, body, _ = d.request("POST", f"/api/exams/{row['id']}/sign", {})
        assert status == 201 and body["status"] == "F"
    finally:
        d.stop()


def _stored_exam_default(d, tmp_path):
    ds = hologic_sr(known_exam("hologic", HOLOGIC, patient_id="PAUTO", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid()))
    path = tmp_path / "auto.dcm"
    ds.save_as(path, enforce_file_format=True)
    r = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(d.dicom_port), str(path)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    return wait_for(lambda: next((r for r in d.request("GET", "/api/exams?patient=PAUTO")[1] or [] if r["state"] != "settling"), None), 15)
