"""A workbench login over real HTTP(S) without a browser: the login form's
cookie and CSRF token, then the form POST; redirects are not followed, so
each answer's own status and Set-Cookie headers can be asserted."""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []

    def cookie(self, name: str) -> str | None:
        """The raw Set-Cookie line that sets ``name``."""
        return next((c for c in self.set_cookies if c.startswith(name + "=")), None)


@dataclass
class Browserless:
    """One client's cookies against one daemon (``base``: http(s)://host:port)."""

    base: str
    context: ssl.SSLContext | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Answer:
        parts = urllib.parse.urlsplit(self.base)
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=self.context, timeout=15)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=hdrs)
            rsp = conn.getresponse()
            answer = Answer(rsp.status, rsp.headers, rsp.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        for line in answer.set_cookies:
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if value and "max-age=0" not in line.lower():
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post_form(self, path: str, form: dict[str, str]) -> Answer:
        return self.request("POST", path, urllib.parse.urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"})

    def login(self, token: str, next_path: str = "/workbench/") -> Answer:
        """The login form's answer to ``token`` (303 and the session cookie when accepted)."""
        page = self.get("/workbench/login")
        assert page.status == 200, page.status
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.body).group(1)
        return self.post_form("/workbench/login", {"csrf": csrf, "token": token, "next": next_path})

    def csrf(self, path: str) -> str:
        """The session's CSRF token from a page's form."""
        return re.search(r'name="csrf" value="([^"]+)"', self.get(path).body).group(1)
