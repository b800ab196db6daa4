"""Workbench sessions: a browser's login, kept in this process's memory.

A session is a random 256-bit id in an HttpOnly, SameSite=Strict cookie
(``Secure`` under TLS) mapped to the identity that logged in and the
session's CSRF token; it ends at logout or after ``http.session_idle_minutes``
without a request, and a session made from an OIDC token (the provider's
login or a pasted access token) also ends at that token's ``exp``, whatever
its use: the provider's lifetime is the longest a login lasts.  The store
is in memory: one gateway process serves the workbench, and a restart logs
everyone out (README "The reporting workbench").
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from gateway.security.tokens import Identity

COOKIE = "dxagw_session"
PRE_COOKIE = "dxagw_login"  # before login: binds the login form's CSRF token and the OIDC state to this browser
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 10000


@dataclass
class Session:
    id: str
    identity: Identity
    csrf: str
    created: float
    last_seen: float
    via: str = "token"  # token | oidc: how the browser logged in
    ends_at: float | None = None  # on the store's clock: the identity's token expiry; None: idle timeout only
    flash: str = ""  # one message for the next page ("Signed and sent.")

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf.encode(), str(presented).encode())

    def over(self, now: float, idle_seconds: float) -> bool:
        """Whether the session has ended at ``now``: idle too long, or its token expired."""
        return now - self.last_seen > idle_seconds or (self.ends_at is not None and now >= self.ends_at)


@dataclass
class PendingLogin:
    """An OIDC authorization request in flight (RFC 7636 code_verifier, OIDC nonce)."""

    state: str
    verifier: str
    nonce: str
    browser: str  # the PRE_COOKIE value of the browser that started it
    next: str
    created: float = field(default_factory=time.monotonic)


class SessionStore:
    def __init__(self, idle_seconds: float, *, clock=time.monotonic, wall=time.time, pending_seconds: float = 600.0) -> None:
        self.idle_seconds = idle_seconds
        self.pending_seconds = pending_seconds
        self._clock = clock
        self._wall = wall  # Unix time, to place a token's exp on the store's clock
        self._sessions: dict[str, Session] = {}
        self._pending: dict[str, PendingLogin] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, identity: Identity, via: str) -> Session:
        """A new session for ``identity``; it ends at the identity's ``expires_at`` if it has one."""
        now = self._clock()
        ends_at = None if identity.expires_at is None else now + (identity.expires_at - self._wall())
        s = Session(secrets.token_urlsafe(32), identity, secrets.token_urlsafe(32), now, now, via, ends_at)
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest idle one goes first
                oldest = min(self._sessions.values(), key=lambda x: x.last_seen)
                self._sessions.pop(oldest.id, None)
            self._sessions[s.id] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session with this id (its idle clock restarts), or None."""
        if not sid:
            return None
        now = self._clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if s.over(now, self.idle_seconds):
                del self._sessions[sid]
                return None
            s.last_seen = now
            return s

    def end(self, sid: str | None) -> Session | None:
        with self._lock:
            return self._sessions.pop(sid, None) if sid else None

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._sessions.items() if s.over(now, self.idle_seconds)]:
            del self._sessions[sid]
        for st in [k for k, p in self._pending.items() if now - p.created > self.pending_seconds]:
            del self._pending[st]

    # -- OIDC authorization requests in flight -----------------------------------

    def start_login(self, browser: str, next_path: str) -> PendingLogin:
        p = PendingLogin(secrets.token_urlsafe(32), secrets.token_urlsafe(48), secrets.token_urlsafe(24), browser, next_path, self._clock())
        with self._lock:
            self._expire(p.created)
            if len(self._pending) >= MAX_SESSIONS:
                self._pending.clear()
            self._pending[p.state] = p
        return p

    def take_login(self, state: str | None) -> PendingLogin | None:
        """The pending request with this state, once (single use), if not too old."""
        if not state:
            return None
        with self._lock:
            p = self._pending.pop(state, None)
        if p is None or self._clock() - p.created > self.pending_seconds:
            return None
        return p


class LoginThrottle:
    """Failed logins per remote address: after ``limit`` within ``window``
    seconds, that address waits until the oldest failure leaves the window."""

    def __init__(self, limit: int = 10, window: float = 300.0, *, clock=time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, remote: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(remote, ()) if now - t < self.window]
        if kept:
            self._failures[remote] = kept
        else:
            self._failures.pop(remote, None)
        return kept

    def blocked(self, remote: str) -> bool:
        with self._lock:
            return len(self._recent(remote, self._clock())) >= self.limit

    def failed(self, remote: str) -> None:
        with self._lock:
            now = self._clock()
            if len(self._failures) > MAX_SESSIONS:
                self._failures.clear()
            self._failures[remote] = self._recent(remote, now) + [now]
