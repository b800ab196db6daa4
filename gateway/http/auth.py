"""Who may call the HTTP side: Host check, browser safety, bearer identities, roles.

Every answer carries the security headers.  For each request, in order:

1. ``Host`` must be one of ``http.allowed_hosts`` (default: the bind address
   and localhost), which stops DNS rebinding from reading PHI.  400 else.
2. A request that changes anything (POST, PUT, PATCH, DELETE) must carry no
   foreign ``Origin`` (403) and, when it has a body or is not a DELETE, a
   JSON content type (415): a cross-site form or ``text/plain`` POST is refused.
   Workbench pages (``/workbench/...``) also take an HTML form
   (``application/x-www-form-urlencoded``).
3. ``Authorization: Bearer <token>``: a static token from ``security.tokens``
   or an OIDC access token.  Missing or bad: 401 with ``WWW-Authenticate``
   (RFC 6750 section 3).  Without the header, a workbench session cookie
   (gateway/http/sessions.py) stands for the identity that logged in, on
   pages and on ``/api/`` alike; a request that changes anything must then
   carry the session's CSRF token (``X-CSRF-Token`` or, on a page's form,
   the ``csrf`` field): 403 else.  A page asked for without any credential
   answers 401 with a link to the login page.
4. The route's roles (gateway/security/roles.py): none held -> 403.

Failures are audited (rate-limited per source and reason); the handler finds
the caller's identity with :func:`identity`.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Awaitable, Callable
from urllib.parse import quote, urlsplit

from aiohttp import web

from gateway.http.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, SessionStore
from gateway.logs import fields
from gateway.security.roles import OPEN, required_roles
from gateway.security.tokens import Identity, TokenRegistry

log = logging.getLogger("gateway.http.auth")

JSON_TYPES = frozenset({"application/json", "application/dicom+json", "application/fhir+json"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PAGES = "/workbench"  # the workbench's pages (gateway/http/workbench.py)
REALM = 'Bearer realm="dxa-gateway"'
HOW_TO_ADD = "no HTTP identity is configured: run `dxa-gateway token new NAME --roles r1,r2` and add the line it prints under security.tokens"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# (event, actor, detail) -> None; records an audit event (store and ATNA).
AuditFn = Callable[[str, str, dict], Awaitable[None]]
# token -> Identity or None (raises OidcError with a reason for a bad JWT).
OidcFn = Callable[[str], Awaitable[Identity | None]]


def identity(request: web.Request) -> Identity:
    """The authenticated caller of a request that passed the middleware."""
    return request["identity"]


def actor(request: web.Request) -> str:
    """The name the audit trail records for this request's caller."""
    ident = request.get("identity")
    return ident.name if ident is not None else f"anonymous@{request.remote or '?'}"


def host_only(value: str) -> str:
    """The host part of a Host header or netloc, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def default_allowed_hosts(bind: str) -> set[str]:
    hosts = {"localhost", "127.0.0.1", "::1"}
    if bind not in ("0.0.0.0", "::", ""):
        hosts.add(bind.lower())
    return hosts


def _problem(status: int, message: str, headers: dict | None = None) -> web.Response:
    import orjson

    return web.Response(body=orjson.dumps({"error": message}), status=status, content_type="application/json", headers=headers)


def _page(status: int, title: str, body_html: str, headers: dict | None = None, refresh: str = "") -> web.Response:
    """A minimal HTML answer for a browser on a workbench page (no patient data)."""
    meta = f'<meta http-equiv="refresh" content="0;url={html.escape(refresh)}">' if refresh else ""
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>{html.escape(title)}</title>'
        f'<link rel="stylesheet" href="/workbench/static/workbench.css"></head><body><main><h1>{html.escape(title)}</h1>{body_html}</main></body></html>'
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=headers)


def login_url(request: web.Request) -> str:
    path = request.path_qs if request.method == "GET" else "/workbench/"
    return "/workbench/login?next=" + quote(path, safe="")


class HttpAuth:
    """The middleware and its settings; ``install`` puts it on an app."""

    def __init__(
        self,
        tokens: TokenRegistry,
        *,
        allowed_hosts: set[str],
        metrics_public: bool = False,
        oidc: OidcFn | None = None,
        audit: AuditFn | None = None,
        tls: bool = False,
        audit_interval: float = 60.0,
        sessions: SessionStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.tokens = tokens
        self.allowed_hosts = {host_only(h) for h in allowed_hosts}
        self.metrics_public = metrics_public
        self.oidc = oidc
        self.audit = audit
        self.tls = tls
        self.audit_interval = audit_interval
        self._last_audit: dict[tuple, float] = {}

    @property
    def configured(self) -> bool:
        return len(self.tokens) > 0 or self.oidc is not None

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self._headers)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith(PAGES + "/"):
            # A page's form POST carries its Origin only when the referrer
            # policy lets it: "no-referrer" makes Chrome send "Origin: null".
            response.headers.setdefault("Referrer-Policy", "same-origin")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if self.tls:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")

    async def _record(self, event: str, who: str, detail: dict, key: tuple | None = None) -> None:
        """Audit an event; with ``key``, at most once per ``audit_interval``."""
        if self.audit is None:
            return
        if key is not None:
            now = time.monotonic()
            if now - self._last_audit.get(key, -1e9) < self.audit_interval:
                return
            if len(self._last_audit) > 10000:
                self._last_audit.clear()
            self._last_audit[key] = now
        try:
            await self.audit(event, who, detail)
        except Exception:
            log.exception("auth.audit_failed")

    async def record(self, event: str, who: str, detail: dict) -> None:
        """Audit an event (the workbench's logins and page views)."""
        await self._record(event, who, detail)

    async def _refuse(self, request: web.Request, status: int, reason: str, message: str, headers: dict | None = None) -> web.Response:
        remote = request.remote or "?"
        log.warning("http.refused", extra=fields(status=status, reason=reason, method=request.method, path=request.path, remote=remote))
        event = "auth.failure" if status == 401 else "http.refused"
        await self._record(event, f"anonymous@{remote}", {"reason": reason, "status": status, "method": request.method, "path": request.path, "remote": remote}, key=(event, remote, reason))
        return _problem(status, message, headers)

    async def _authenticate(self, request: web.Request) -> tuple[Identity | None, str]:
        """(identity, "") or (None, why)."""
        header = request.headers.get("Authorization", "")
        if not header:
            return None, "missing"
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, "not a bearer credential"
        ident = self.tokens.lookup(token)
        if ident is not None:
            return ident, ""
        if self.oidc is not None and token.count(".") == 2:
            try:
                ident = await self.oidc(token)
            except Exception as exc:  # OidcError and transport errors: the reason, never the token
                return None, f"oidc: {exc}"[:200]
            if ident is not None:
                return ident, ""
        return None, "unknown token"

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        route = request.match_info.route
        resource = route.resource
        pattern = resource.canonical if resource is not None else None
        needed = required_roles(request.method, pattern, metrics_public=self.metrics_public) if pattern else None
        page = pattern is not None and (pattern == PAGES or pattern.startswith(PAGES + "/"))
        if needed is not None and not needed and not page:
            return await handler(request)
        # 1. Host (DNS rebinding)
        if host_only(request.host or "") not in self.allowed_hosts:
            return await self._refuse(request, 400, "host not allowed", "this Host is not served here (http.allowed_hosts)")
        # 2. browser safety
        if request.method in CHANGING:
            origin = request.headers.get("Origin")
            if origin is not None and not self._same_origin(origin, request):
                return await self._refuse(request, 403, "foreign origin", "a cross-origin request cannot change anything")
            if request.headers.get("Sec-Fetch-Site") == "cross-site":
                return await self._refuse(request, 403, "cross-site", "a cross-site request cannot change anything")
            has_body = request.can_read_body or request.content_length not in (None, 0)
            allowed = JSON_TYPES | FORM_TYPES if page else JSON_TYPES
            if (request.method != "DELETE" or has_body) and request.content_type not in allowed:
                return await self._refuse(
                    request, 415, "not json", "a request that changes something must be application/json, application/dicom+json or application/fhir+json"
                )
        if needed is not None and not needed:  # a page anyone may open: the login form, its static files
            return await handler(request)
        # 3. identity
        if not self.configured:
            return await self._refuse(request, 401, "no identities configured", HOW_TO_ADD, {"WWW-Authenticate": REALM})
        session = None
        if "Authorization" not in request.headers and self.sessions is not None and COOKIE in request.cookies:
            session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            ident = session.identity
            if request.method in CHANGING:
                presented = request.headers.get(CSRF_HEADER)
                if presented is None and page and request.content_type in FORM_TYPES:
                    presented = (await request.post()).get(CSRF_FIELD)
                if not session.csrf_ok(presented if isinstance(presented, str) else None):
                    return await self._refuse(request, 403, "csrf", "this request needs the session's CSRF token")
            request["session"] = session
        else:
            ident, why = await self._authenticate(request)
            if ident is None:
                challenge = REALM if why == "missing" else f'{REALM}, error="invalid_token"'
                if page and why == "missing":
                    await self._refuse(request, 401, why, "")
                    to = login_url(request)
                    return _page(401, "Please sign in", f'<p><a href="{html.escape(to)}">Sign in to the workbench</a></p>', {"WWW-Authenticate": REALM}, refresh=to)
                return await self._refuse(request, 401, why, "a valid bearer token is required", {"WWW-Authenticate": challenge})
        request["identity"] = ident
        await self._record("auth.success", ident.name, {"via": "session" if session else ident.via, "remote": request.remote or "?"}, key=("ok", ident.name))
        # 4. roles
        if needed is None:
            if resource is None or route.handler is None or pattern is None:
                return await handler(request)  # 404 / 405 from the router
            return await self._refuse(request, 403, "route not in the role table", "no role grants this endpoint")
        if not needed & ident.roles:
            log.warning("http.forbidden", extra=fields(identity=ident.name, method=request.method, path=request.path))
            await self._record("http.forbidden", ident.name, {"method": request.method, "path": request.path, "needs": sorted(needed)}, key=("403", ident.name, pattern))
            message = f"this needs one of the roles: {', '.join(sorted(needed))}"
            if page and session is not None:
                return _page(403, "Not for your role", f'<p>{html.escape(message)}.</p><p><a href="/workbench/">Back to the workbench</a></p>')
            return _problem(403, message)
        return await handler(request)

    def _same_origin(self, origin: str, request: web.Request) -> bool:
        if origin == "null":
            return False
        parts = urlsplit(origin)
        return bool(parts.netloc) and parts.netloc.lower() == (request.host or "").lower() and host_only(parts.netloc) in self.allowed_hosts
