"""The workbench's pure parts: sessions (idle timeout, one-use OIDC state),
PKCE (RFC 7636), the queue and the pages' views (mappings/workbench.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from gateway.http.oidc_login import authorization_url, code_challenge
from gateway.http.sessions import SessionStore
from gateway.config import OidcLoginSettings
from gateway.security.tokens import Identity
from mappings import workbench as view
from mappings.bmd.classify import classify
from mappings.bmd.report import row_use
from mappings.clinical_context import ClinicalContext
from tests.unit.bmd.helpers import HOLOGIC, known_exam

DR = Identity("dr", frozenset({"reporter"}))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_ends_after_the_idle_timeout_and_each_request_restarts_it():
    clock = Clock()
    store = SessionStore(30 * 60, clock=clock)
    s = store.create(DR, "token")
    clock.now += 29 * 60
    assert store.get(s.id) is s  # used: the idle clock restarts
    clock.now += 29 * 60
    assert store.get(s.id) is s
    clock.now += 30 * 60 + 1
    assert store.get(s.id) is None and len(store) == 0
    other = store.create(DR, "token")
    assert store.end(other.id) is other and store.get(other.id) is None
    assert store.get("") is None and store.get("not-a-session") is None


def test_session_from_an_oidc_token_ends_at_its_exp_however_busy():
    """README "The reporting workbench": a session made from an OIDC token ends
    at the token's exp even while in use; a static token's keeps the idle timeout only."""
    clock = Clock()
    wall = 1_700_000_000.0
    store = SessionStore(30 * 60, clock=clock, wall=lambda: wall + (clock.now - 1000.0))
    oidc = store.create(Identity("dr-oidc", frozenset({"reporter"}), via="oidc", expires_at=wall + 120), "oidc")
    static = store.create(DR, "token")
    clock.now += 119
    assert store.get(oidc.id) is oidc
    clock.now += 1
    assert store.get(oidc.id) is None  # at exp, though used a second ago
    assert store.get(static.id) is static
    clock.now += 29 * 60
    assert store.get(static.id) is static


def test_csrf_token_is_the_sessions_own():
    s = SessionStore(60).create(DR, "token")
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok("") and not s.csrf_ok(None) and not s.csrf_ok(s.csrf + "x") and not s.csrf_ok(s.id)


def test_oidc_state_is_used_once_and_expires():
    clock = Clock()
    store = SessionStore(60, clock=clock, pending_seconds=600)
    p = store.start_login("browser-a", "/workbench/queue")
    assert store.take_login(p.state) is p
    assert store.take_login(p.state) is None  # one use
    late = store.start_login("browser-a", "/workbench/")
    clock.now += 601
    assert store.take_login(late.state) is None
    assert store.take_login(None) is None


def test_pkce_s256_matches_rfc_7636_appendix_b():
    """RFC 7636 Appendix B: the example code verifier and its S256 challenge."""
    assert code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_authorization_url_carries_pkce_state_nonce_and_resource():
    login = OidcLoginSettings(client_id="wb", scope="openid api", resource="urn:dxa-gateway")
    url = authorization_url("https://idp.example/auth", login, "https://gw.example/workbench/oidc/callback", "st", "no", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    assert url.startswith("https://idp.example/auth?response_type=code&client_id=wb&")
    for part in ("state=st", "nonce=no", "code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method=S256", "resource=urn%3Adxa-gateway", "scope=openid+api"):
        assert part in url


@dataclass
class Row:
    id: int
    created_at: str
    exam_date: str = "20240501"
    state: str = "parsed"
    report_status: str = "P"
    patient_id: str = "P1"
    accession: str = "A"
    exam: dict | None = None
    analysis: dict | None = None


def test_queue_is_oldest_first_with_the_time_waited_and_filters():
    now = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    hologic = {"device": {"manufacturer": "HOLOGIC", "model": "Horizon A", "serial": "200123"}, "patient_name": "Bone^Beatrice"}
    lunar = {"device": {"manufacturer": "GE", "model": "iDXA", "serial": "9"}, "flags": ["t_score marked '*'"]}
    rows = [
        Row(3, "2026-12-04T11:58:00+00:00", exam=hologic),
        Row(1, "2026-12-01T08:30:00+00:00", exam=lunar),
        Row(2, "2026-12-04T09:55:00+00:00", exam=hologic, report_status="F"),
        Row(4, "2026-12-04T10:00:00+00:00", state="unparsed"),
    ]
    q = view.queue(rows, view.QueueFilter(), now)
    assert [e.exam_id for e in q] == [1, 3]
    assert [e.waited for e in q] == ["3 d 3 h", "2 min"]
    assert q[1].patient_name == "Bone, Beatrice" and q[1].scanner == "HOLOGIC Horizon A (200123)"
    assert [e.exam_id for e in view.queue(rows, view.QueueFilter(status=""), now)] == [1, 2, 3]
    assert [e.exam_id for e in view.queue(rows, view.QueueFilter(scanner="idxa"), now)] == [1]
    assert [e.exam_id for e in view.queue(rows, view.QueueFilter(flags="yes"), now)] == [1]
    assert [e.exam_id for e in view.queue(rows, view.QueueFilter(flags="no"), now)] == [3]
    assert view.QueueFilter.from_query({"status": "X", "date": "2024-05-01", "flags": "maybe"}) == view.QueueFilter(date="20240501")
    assert view.waited("2026-12-04T10:55:00+00:00", now) == "1 h 05 min" and view.waited("garbage", now) == "-"


def test_site_rows_say_why_a_row_is_not_used():
    """ISCD Official Positions: an excluded vertebra and Ward's area never
    decide; the lowest of the used sites does (Left femoral neck, T -2.5)."""
    exam = known_exam("hologic", HOLOGIC)
    c = classify(exam, age=66, sex="F", menopausal=True, context=ClinicalContext())
    rows = {r.name: r for r in view.site_rows(exam, c, row_use(exam, c))}
    assert rows["Vertebra L3"].use == "excluded" and rows["Vertebra L3"].why == "excluded at the scanner"
    assert rows["Left ward's area"].use == "not used" and "not a diagnostic site" in rows["Left ward's area"].why
    assert rows["Left femoral neck"].use == "lowest" and rows["Left femoral neck"].t_score == "-2.5"
    assert rows["Vertebra L1"].why == "counted in the lumbar total L1,L2,L4"


def test_radiographer_form_becomes_a_context_body():
    form = {"technical_notes": "Movement artefact\r\n\r\n  Re-scanned L4  ", "height_cm": " 160 ", "weight_kg": "", "menopausal": "yes", "fragility_fracture": "no", "glucocorticoids": "", "csrf": "x"}
    assert view.context_from_form(form) == {"technical_notes": ["Movement artefact", "Re-scanned L4"], "height_cm": "160", "menopausal": True, "fragility_fracture": False}
    ctx = ClinicalContext.from_dict(view.context_from_form(form))
    rows = dict(view.context_rows(ctx, "F"))
    assert rows["Menopausal status"] == "postmenopausal" and rows["Weight"] == "not stated" and rows["BMI"] == "not known"
    assert "Menopausal status" not in dict(view.context_rows(ctx, "M"))


def test_session_cookie_is_httponly_strict_and_secure_under_tls():
    """Issue 15 item 4: HttpOnly, SameSite=Strict, Secure when the HTTP port serves TLS."""
    from types import SimpleNamespace

    from aiohttp import web

    from gateway.http.sessions import COOKIE
    from gateway.http.workbench import Workbench, safe_next

    for tls in (True, False):
        wb = Workbench(SimpleNamespace(store=None), None, SessionStore(60), None, tls=tls)
        rsp = web.Response()
        session = wb._start_session(rsp, DR, "token")
        morsel = rsp.cookies[COOKIE]
        assert morsel.value == session.id and morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
        assert bool(morsel["secure"]) is tls
    assert safe_next("/workbench/exams/3") == "/workbench/exams/3"
    for bad in ("https://evil.example/", "//evil.example/workbench/", "/workbench/\\evil", "/api/audit", None):
        assert safe_next(bad) == "/workbench/"


def test_failed_logins_are_throttled_per_address():
    from gateway.http.sessions import LoginThrottle

    clock = Clock()
    t = LoginThrottle(limit=3, window=300, clock=clock)
    for _ in range(3):
        assert not t.blocked("10.0.0.1")
        t.failed("10.0.0.1")
    assert t.blocked("10.0.0.1") and not t.blocked("10.0.0.2")
    clock.now += 301
    assert not t.blocked("10.0.0.1")
