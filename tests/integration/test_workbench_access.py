"""The workbench's session cookie and who sees what, over real HTTP(S) to the
real daemon (README "The reporting workbench"): under http.tls the cookie is
Secure, HttpOnly and SameSite=Strict, over plain HTTP it is not Secure; and
each role, logged in through the form, gets from the pages and the exam's
images, trend and PDF exactly what gateway/security/roles.py grants it, with
no patient data in a refusal."""

from __future__ import annotations

import ssl
import subprocess

import pytest
import trustme

from mappings.bmd import samples
from tests.integration.test_exams import ENV
from tests.orthanc import wait_for
from tests.support import dcmtk, http_request, start_daemon
from tests.unit.bmd.helpers import HOLOGIC, known_exam
from tests.workbench_client import Browserless
from gateway.security.roles import required_roles

NAME = ("Quill", "Octavia")  # the patient's family and given names: never in a refusal
PATIENT_ID = "PQUILL7"
ROLES = ("viewer", "radiographer", "reporter", "orders", "admin")
TOKENS = [{"name": f"wb-{r}", "token": f"token-wb-access-{r}-0123456789", "roles": [r]} for r in ROLES]


def token_of(role: str) -> str:
    return next(t["token"] for t in TOKENS if t["roles"] == [role])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A plain-HTTP daemon with one identity per role and one signed exam with report images."""
    tmp = tmp_path_factory.mktemp("wb-access")
    d = start_daemon(tmp / "gw", {"storage": {"min_free_bytes": 0}, "security": {"tokens": TOKENS}})
    try:
        exam = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id=PATIENT_ID, patient_name="^".join(NAME), accession_number="ACC-QUILL")
        files = []
        for i, image in enumerate(samples.hologic_report_images(exam)):
            image.save_as(tmp / f"image{i}.dcm", enforce_file_format=True)
            files.append(str(tmp / f"image{i}.dcm"))
        r = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(d.dicom_port), *files], capture_output=True, text=True, env=ENV)
        assert r.returncode == 0, r.stderr

        def parsed():
            rows = http_request(d.http + f"/api/exams?patient={PATIENT_ID}", token=d.token)[1]
            return next((e for e in rows if e["state"] == "parsed"), None)

        n = wait_for(parsed, 30)["id"]
        status, images, _ = http_request(d.http + f"/api/exams/{n}/images", token=d.token)
        assert status == 200 and images
        status, body, _ = http_request(d.http + f"/api/exams/{n}/sign", "POST", {}, token=token_of("reporter"))
        assert status == 201, body
        yield {"daemon": d, "exam": n, "png": images[0]["url"]}
    finally:
        d.stop()


def test_plain_http_session_cookie_is_httponly_strict_and_not_secure(world):
    """README "The reporting workbench": the session cookie is HttpOnly and
    SameSite=Strict; Secure only under TLS (a browser would not send a Secure
    cookie back over plain HTTP)."""
    answer = Browserless(world["daemon"].http).login(token_of("viewer"))
    assert answer.status == 303
    cookie = attributes(answer.cookie("dxagw_session"))
    assert {"httponly", "samesite=strict", "path=/"} <= cookie and "secure" not in cookie, cookie


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_only_what_roles_py_grants(world, role):
    """gateway/security/roles.py: the queue is the reporter's, the day's list the
    radiographer's, an exam and its images, trend and PDF the readers'
    (viewer, radiographer, reporter); Sign only for a reporter, the context
    form only for a radiographer.  A refusal is 403 and names no patient; a
    refused exam page leaves no record of a read, an opened one does."""
    d, n = world["daemon"], world["exam"]
    client = Browserless(d.http)
    assert client.login(token_of(role)).status == 303
    reads = {
        "/workbench/queue": "/workbench/queue",
        "/workbench/today": "/workbench/today",
        "/workbench/exams/{id}": f"/workbench/exams/{n}",
        "/api/exams/{id}/images": f"/api/exams/{n}/images",
        "/api/exams/{id}/images/{sop_instance_uid}.png": world["png"],
        "/api/exams/{id}/trend.svg": f"/api/exams/{n}/trend.svg",
        "/api/exams/{id}/report.pdf": f"/api/exams/{n}/report.pdf",
    }
    seen = {}
    for pattern, path in reads.items():
        answer = client.get(path)
        granted = role in required_roles("GET", pattern)
        assert answer.status == (200 if granted else 403), (role, path, answer.status)
        if not granted:
            assert not any(part.lower() in answer.body.lower() for part in (*NAME, PATIENT_ID)), (role, path)
        seen[pattern] = answer
    exam_page = seen["/workbench/exams/{id}"]
    if exam_page.status == 200:
        assert NAME[0] in exam_page.body
        assert ('id="sign-form"' in exam_page.body) == (role == "reporter")
        assert ('id="context-form"' in exam_page.body) == (role == "radiographer")
    home = client.get("/workbench/")
    assert home.status in (200, 303)
    assert not any(part in home.body for part in (*NAME, PATIENT_ID))
    # the forms' actions, with the session's own CSRF token
    csrf = client.csrf("/workbench/" if home.status == 200 else home.headers["Location"])
    for action, pattern in (("sign", "/workbench/exams/{id}/sign"), ("context", "/workbench/exams/{id}/context")):
        if role in required_roles("POST", pattern):
            continue  # signing and saving are the browser tests' (tests/integration/test_workbench.py)
        answer = client.post_form(f"/workbench/exams/{n}/{action}", {"csrf": csrf, "comment": "x", "technical_notes": "x", "amendment": "x"})
        assert answer.status == 403, (role, action, answer.status)
        assert not any(part.lower() in answer.body.lower() for part in (*NAME, PATIENT_ID))
    assert http_request(d.http + f"/api/exams/{n}", token=d.token)[1]["report"]["status"] == "F"  # nothing amended

    def readers():
        return {r["actor"] for r in http_request(d.http + "/api/audit?event=workbench.exam&limit=1000", token=d.token)[1]}

    name = f"wb-{role}"
    if exam_page.status == 200:
        assert wait_for(lambda: name in readers(), 10)
    else:
        assert name not in readers()


def test_tls_session_cookie_is_secure_httponly_strict(tmp_path):
    """README "The reporting workbench" and "Security": under http.tls the
    login over HTTPS (certificate from a test CA, checked) sets the session
    cookie Secure, HttpOnly, SameSite=Strict, and the login form's own cookie
    Secure too; the session then opens a page over HTTPS."""
    ca = trustme.CA(organization_name="Hospital Test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "gw.pem"))
    d = start_daemon(
        tmp_path / "gw",
        {"storage": {"min_free_bytes": 0}, "security": {"tokens": TOKENS}, "http": {"tls": {"cert": str(tmp_path / "gw.pem"), "key": str(tmp_path / "gw.key"), "require_client_cert": False}}},
    )
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        client = Browserless(f"https://127.0.0.1:{d.http_port}", context)
        assert wait_for(lambda: _answers(client), 15)
        form = client.get("/workbench/login")
        assert {"secure", "httponly"} <= attributes(form.cookie("dxagw_login"))
        answer = client.login(token_of("reporter"))
        assert answer.status == 303
        cookie = attributes(answer.cookie("dxagw_session"))
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= cookie, cookie
        assert client.get("/workbench/queue").status == 200
    finally:
        d.stop()


def attributes(set_cookie: str | None) -> set[str]:
    """A Set-Cookie line's attributes (after name=value), lower case."""
    assert set_cookie, "no such cookie set"
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


def _answers(client: Browserless) -> bool:
    try:
        return client.get("/healthz").status == 200
    except OSError:
        return False
