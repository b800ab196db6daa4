"""The reporting workbench: server-side HTML pages under /workbench/ (README "The reporting workbench").

Pages are Jinja2 templates (gateway/http/templates/, autoescaped) served by
aiohttp-jinja2, with one local style sheet and one small script
(gateway/http/static/); nothing comes from the internet.  Who may open
which page is in gateway/security/roles.py like every route; the middleware
(gateway/http/auth.py) authenticates the session cookie and checks each
form's CSRF token.  Every page that shows patient data leaves an audit record.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from concurrent.futures import Executor
from datetime import datetime, timezone
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.config import OidcLoginSettings
from gateway.exams import Actor, ExamService, SignError
from gateway.http import auth, oidc_login
from gateway.http.sessions import COOKIE, PRE_COOKIE, LoginThrottle, Session, SessionStore
from gateway.logs import fields
from gateway.security.oidc import NonceMismatch, OidcError, OidcVerifier
from gateway.security.tokens import Identity
from gateway.store.exams import NoSuchExam
from mappings import workbench as view
from mappings.clinical_context import ContextError

log = logging.getLogger("gateway.workbench")

HERE = Path(__file__).resolve().parent
HOME = "/workbench/"


def see_other(url: str) -> web.Response:
    return web.Response(status=303, headers={"Location": url})


def safe_next(value: str | None) -> str:
    """A local workbench path to go to after login (never another site)."""
    value = value or ""
    if value.startswith(HOME) and "//" not in value and "\\" not in value and not any(ord(c) < 32 for c in value):
        return value
    return HOME


class Workbench:
    def __init__(
        self,
        service: ExamService,
        executor: Executor,
        sessions: SessionStore,
        access: auth.HttpAuth,
        *,
        oidc: OidcVerifier | None = None,
        login: OidcLoginSettings | None = None,
        tls: bool = False,
    ) -> None:
        self.service = service
        self.store = service.store
        self.executor = executor
        self.sessions = sessions
        self.access = access
        self.oidc = oidc
        self.login = login if oidc is not None else None
        self.tls = tls
        self._secret = secrets.token_bytes(32)  # binds the login form's CSRF token to its cookie
        self.throttle = LoginThrottle()  # 10 failed logins per address in 5 minutes, then wait

    def register(self, app: web.Application) -> None:
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True, undefined=jinja2.StrictUndefined)
        app.router.add_static("/workbench/static", HERE / "static", name="workbench-static")
        app.add_routes(
            [
                web.get("/workbench/login", self.login_form),
                web.post("/workbench/login", self.login_submit),
                web.get("/workbench/oidc/start", self.oidc_start),
                web.get("/workbench/oidc/callback", self.oidc_callback),
                web.get("/workbench/", self.home),
                web.post("/workbench/logout", self.logout),
                web.get("/workbench/queue", self.queue),
                web.get("/workbench/today", self.today),
                web.get("/workbench/exams/{id}", self.exam),
                web.post("/workbench/exams/{id}/sign", self.sign),
                web.post("/workbench/exams/{id}/context", self.context),
            ]
        )

    # -- helpers ----------------------------------------------------------------

    async def _db(self, fn, *args, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kw))

    def _page(self, request: web.Request, template: str, http_status: int = 200, **values) -> web.Response:
        session: Session | None = request.get("session")
        ident: Identity | None = request.get("identity")
        flash = ""
        if session is not None:
            flash, session.flash = session.flash, ""
        base = {"identity": ident, "roles": ident.roles if ident else frozenset(), "csrf": session.csrf if session else "", "flash": flash, "error": ""}
        return aiohttp_jinja2.render_template(template, request, {**base, **values}, status=http_status)

    def _flash(self, request: web.Request, message: str) -> None:
        session = request.get("session")
        if session is not None:
            session.flash = message

    async def _audit(self, event: str, who: str, detail: dict) -> None:
        await self.access.record(event, who, detail)

    def _login_token(self, browser: str) -> str:
        return hmac.new(self._secret, browser.encode(), hashlib.sha256).hexdigest()

    def _browser(self, request: web.Request) -> tuple[str, bool]:
        """This browser's login cookie value, and whether it is new."""
        value = request.cookies.get(PRE_COOKIE, "")
        if len(value) >= 32:
            return value, False
        return secrets.token_urlsafe(32), True

    def _set_browser(self, response: web.StreamResponse, value: str) -> None:
        # Lax, not Strict: it must come back on the provider's redirect to the callback.
        response.set_cookie(PRE_COOKIE, value, httponly=True, samesite="Lax", secure=self.tls, path="/workbench")

    def _start_session(self, response: web.StreamResponse, ident: Identity, via: str, request: web.Request | None = None) -> Session:
        if request is not None:
            self.sessions.end(request.cookies.get(COOKIE))  # a new login never keeps the old session id
        session = self.sessions.create(ident, via)
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", secure=self.tls, path="/")
        return session

    def _redirect_uri(self, request: web.Request) -> str:
        if self.login is not None and self.login.redirect_uri:
            return self.login.redirect_uri
        return f"{'https' if self.tls else 'http'}://{request.host}/workbench/oidc/callback"

    @staticmethod
    def _exam_id(request: web.Request) -> int | None:
        try:
            return int(request.match_info["id"])
        except ValueError:
            return None

    # -- logging in and out ---------------------------------------------------------

    def _login_page(self, request: web.Request, browser: str, fresh: bool, status: int = 200, error: str = "") -> web.Response:
        response = self._page(
            request, "login.html", http_status=status, error=error, login_csrf=self._login_token(browser),
            next=safe_next(request.query.get("next")), oidc=self.login is not None,
        )
        if fresh:
            self._set_browser(response, browser)
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        browser, fresh = self._browser(request)
        return self._login_page(request, browser, fresh)

    async def login_submit(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        browser, fresh = self._browser(request)
        remote = request.remote or "?"
        if fresh or not hmac.compare_digest(str(form.get("csrf", "")), self._login_token(browser)):
            await self._audit("http.refused", f"anonymous@{remote}", {"reason": "login csrf", "status": 403, "method": "POST", "path": request.path, "remote": remote})
            return self._login_page(request, browser, fresh, 403, "The form has expired: please try again.")
        if self.throttle.blocked(remote):
            await self._audit("http.refused", f"anonymous@{remote}", {"reason": "login throttled", "status": 429, "method": "POST", "path": request.path, "remote": remote})
            return self._login_page(request, browser, fresh, 429, "Too many failed sign-ins from this computer: wait a few minutes.")
        token = str(form.get("token", "")).strip()
        ident, why = None, "unknown token"
        if token:
            ident = self.access.tokens.lookup(token)
            if ident is None and self.access.oidc is not None and token.count(".") == 2:
                try:
                    ident = await self.access.oidc(token)
                except Exception as exc:  # OidcError and transport errors: the reason, never the token
                    why = f"oidc: {exc}"[:200]
        if ident is not None and not ident.roles:
            ident, why = None, "no gateway role"
        if ident is not None and ident.expires_at is not None and ident.expires_at <= time.time():
            ident, why = None, "oidc: expired"  # within the verifier's leeway, but a session would end at once
        if ident is None:
            self.throttle.failed(remote)
            log.warning("workbench.login_refused", extra=fields(reason=why, remote=remote))
            await self._audit("auth.failure", f"anonymous@{remote}", {"reason": f"workbench login: {why}", "remote": remote})
            return self._login_page(request, browser, fresh, 401, "That token is not valid here.")
        response = see_other(safe_next(str(form.get("next", ""))))
        self._start_session(response, ident, "token", request)
        await self._audit("auth.success", ident.name, {"via": "workbench login (token)", "remote": remote})
        log.info("workbench.login", extra=fields(identity=ident.name, via="token"))
        return response

    async def oidc_start(self, request: web.Request) -> web.StreamResponse:
        if self.login is None or self.oidc is None:
            raise web.HTTPNotFound(text="no OpenID provider login is configured (security.oidc.login)")
        browser, fresh = self._browser(request)
        pending = self.sessions.start_login(browser, safe_next(request.query.get("next")))
        try:
            url = await oidc_login.start(self.oidc, self.login, self._redirect_uri(request), pending.state, pending.nonce, pending.verifier)
        except Exception as exc:  # the provider is down or misconfigured
            log.warning("workbench.oidc_unavailable", extra=fields(error=type(exc).__name__))
            return self._login_page(request, browser, fresh, 502, "The hospital's sign-in service cannot be reached: try again, or sign in with a token.")
        response = see_other(url)
        if fresh:
            self._set_browser(response, browser)
        return response

    async def oidc_callback(self, request: web.Request) -> web.StreamResponse:
        browser, fresh = self._browser(request)
        remote = request.remote or "?"
        q = request.query
        pending = self.sessions.take_login(q.get("state"))
        if self.login is None or self.oidc is None or pending is None or fresh or not hmac.compare_digest(pending.browser, browser):
            await self._audit("auth.failure", f"anonymous@{remote}", {"reason": "workbench oidc: unknown or used state", "remote": remote})
            return self._login_page(request, browser, fresh, 400, "This sign-in has expired or was not started here: please sign in again.")
        if q.get("error") or not q.get("code"):
            reason = str(q.get("error", "no code"))[:80]
            await self._audit("auth.failure", f"anonymous@{remote}", {"reason": f"workbench oidc: {reason}", "remote": remote})
            return self._login_page(request, browser, fresh, 401, "The hospital's sign-in did not succeed.")
        try:
            ident = await oidc_login.finish(self.oidc, self.login, self._redirect_uri(request), q["code"], pending.verifier, pending.nonce)
        except NonceMismatch as exc:  # OpenID Connect Core 1.0 15.5.2: an injected or replayed answer
            log.warning("workbench.oidc_refused", extra=fields(reason=f"oidc: {exc}"))
            await self._audit("auth.failure", f"anonymous@{remote}", {"reason": f"workbench oidc: {exc}", "remote": remote})
            return self._login_page(
                request, browser, fresh, 401,
                "The hospital's sign-in answer does not belong to the sign-in started here (its nonce does not match): nobody is signed in. Please sign in again.",
            )
        except (OidcError, OSError, asyncio.TimeoutError, ValueError) as exc:
            reason = f"oidc: {exc}"[:200] if isinstance(exc, OidcError) else type(exc).__name__
            log.warning("workbench.oidc_refused", extra=fields(reason=reason))
            await self._audit("auth.failure", f"anonymous@{remote}", {"reason": f"workbench {reason}", "remote": remote})
            return self._login_page(request, browser, fresh, 401, "The hospital's sign-in did not succeed.")
        if not ident.roles:
            await self._audit("auth.failure", ident.name, {"reason": "workbench oidc: no gateway role", "remote": remote})
            return self._login_page(request, browser, fresh, 403, "Your account holds no role on this gateway.")
        # A page, not a redirect: the Strict session cookie must be used by a
        # navigation this site starts, not by the provider's redirect chain.
        to = pending.next
        response = aiohttp_jinja2.render_template("continue.html", request, {"to": to, "identity": ident, "roles": ident.roles, "csrf": "", "flash": "", "error": ""})
        self._start_session(response, ident, "oidc", request)
        await self._audit("auth.success", ident.name, {"via": "workbench login (oidc)", "remote": remote})
        log.info("workbench.login", extra=fields(identity=ident.name, via="oidc"))
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.end(request.cookies.get(COOKIE)) if request.get("session") is not None else None
        response = see_other("/workbench/login")
        response.del_cookie(COOKIE, path="/")
        if session is not None:
            await self._audit("auth.logout", session.identity.name, {"via": "workbench", "remote": request.remote or "?"})
        return response

    # -- pages ----------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        roles = auth.identity(request).roles
        if "reporter" in roles:
            raise web.HTTPSeeOther("/workbench/queue")
        if "radiographer" in roles:
            raise web.HTTPSeeOther("/workbench/today")
        return self._page(request, "home.html")

    async def queue(self, request: web.Request) -> web.Response:
        f = view.QueueFilter.from_query(dict(request.query))
        rows = await self._db(self.store.report_queue, status=f.status, date=f.date or None, limit=500)
        entries = view.queue(rows, f, datetime.now(timezone.utc))
        who = auth.actor(request)
        await self._audit("workbench.queue", who, {"exams": [e.exam_id for e in entries][:200], "patient_ids": sorted({e.patient_id for e in entries})[:200]})
        return self._page(request, "queue.html", entries=entries, f=f, date_value=view.display_date(f.date))

    async def today(self, request: web.Request) -> web.Response:
        day = "".join(c for c in request.query.get("date", "") if c.isdigit())[:8] or datetime.now().strftime("%Y%m%d")
        rows = await self._db(self.store.list_exams, date=day, limit=1000)
        by_scanner: dict[str, list] = {}
        for r in sorted(rows, key=lambda r: ((r.exam or {}).get("exam_time", ""), r.id)):
            if r.state == "prior":
                continue
            by_scanner.setdefault(view.scanner_label(r.exam), []).append(
                {
                    "id": r.id, "patient_id": r.patient_id, "patient_name": view.display_name((r.exam or {}).get("patient_name", "")),
                    "accession": r.accession, "time": (r.exam or {}).get("exam_time", "")[:4], "state": r.state,
                    "status": view.STATUS_TEXT.get(r.report_status or "P", r.report_status), "notes": bool((r.context or {}).get("technical_notes")),
                    "context": bool(r.context),
                }
            )
        await self._audit("workbench.today", auth.actor(request), {"date": day, "exams": [r.id for r in rows][:200], "patient_ids": sorted({r.patient_id for r in rows})[:200]})
        return self._page(request, "today.html", day=view.display_date(day), scanners=sorted(by_scanner.items()))

    async def exam(self, request: web.Request) -> web.Response:
        n = self._exam_id(request)
        review = await self._db(self.service.review, n) if n is not None else None
        if review is None or review.row.state == "prior":
            return self._page(request, "missing.html", http_status=404)
        row = review.row
        await self._audit("workbench.exam", auth.actor(request), {"exam": row.id, "patient_id": row.patient_id})
        previous = [
            {"id": p.id, "date": view.display_date(p.exam_date), "state": p.state, "category": ((p.analysis or {}).get("classification") or {}).get("category_text", ""), "accession": p.accession}
            for p in await self._db(self.store.list_exams, patient_id=row.patient_id, limit=50) if p.id != row.id
        ] if row.patient_id else []
        exam = review.exam
        item = review.order
        status = row.report_status or "P"
        return self._page(
            request, "exam.html", row=row, exam=exam, status=status, status_text=view.STATUS_TEXT.get(status, status),
            patient_name=view.display_name(exam.patient_name if exam else ""), exam_date=view.display_date(row.exam_date),
            scanner=view.scanner_label(row.exam), referrer=((item.requesting_physician or item.referring_physician) if item else "").replace("^", " ").strip(),
            procedure=item.requested_procedure_description if item else "", indication=review.context.indication,
            context_rows=view.context_rows(review.context, exam.patient_sex if exam else ""), technical_notes=review.context.technical_notes,
            sites=view.site_rows(exam, review.classification, review.uses) if exam else [], c=review.classification, comparison=review.comparison,
            flags=view.exam_flags(row.exam, row.analysis), previous=previous, ctx=review.context,
            may_sign="reporter" in auth.identity(request).roles, may_edit="radiographer" in auth.identity(request).roles,
        )

    # -- actions --------------------------------------------------------------------

    async def sign(self, request: web.Request) -> web.StreamResponse:
        n = self._exam_id(request)
        if n is None:
            raise web.HTTPNotFound()
        form = await request.post()
        who = auth.identity(request)
        settings = self.service.settings
        back = f"/workbench/exams/{n}"
        if settings.reporters and who.name not in settings.reporters:
            self._flash(request, f"{who.name} is not one of the reporters who may sign (reports.reporters).")
            raise web.HTTPSeeOther(back)
        comment, amendment, role = (str(form.get(k, ""))[:4000] for k in ("comment", "amendment", "role"))
        actor = Actor(who.reporter, role[:200], who.name)
        try:
            report_id = await self._db(self.service.sign, n, actor, amendment, comment=comment)
        except NoSuchExam:
            raise web.HTTPNotFound() from None
        except SignError as exc:
            self._flash(request, f"Not signed: {exc}.")
            raise web.HTTPSeeOther(back) from None
        log.info("workbench.signed", extra=fields(exam=n, report=report_id))
        self._flash(request, "Amended and sent." if amendment.strip() else "Signed and sent.")
        raise web.HTTPSeeOther(back)

    async def context(self, request: web.Request) -> web.StreamResponse:
        n = self._exam_id(request)
        if n is None:
            raise web.HTTPNotFound()
        form = await request.post()
        who = auth.identity(request)
        data = view.context_from_form({k: str(v) for k, v in form.items()})
        back = str(form.get("back", ""))
        back = back if back in ("/workbench/today",) else f"/workbench/exams/{n}"
        try:
            await self._db(self.service.set_context, n, data, Actor(who.reporter, "", who.name))
        except NoSuchExam:
            raise web.HTTPNotFound() from None
        except ContextError as exc:
            self._flash(request, f"Not saved: {exc}.")
            raise web.HTTPSeeOther(f"/workbench/exams/{n}") from None
        except SignError as exc:
            self._flash(request, f"Not saved: {exc}.")
            raise web.HTTPSeeOther(f"/workbench/exams/{n}") from None
        self._flash(request, "Saved: the draft report is updated.")
        raise web.HTTPSeeOther(back)
