"""HTTP identities: static bearer tokens from ``security.tokens``.

A token is kept only as its SHA-256 in memory (and in the config when
``token_sha256`` is used); a presented token is hashed and compared in
constant time.  ``new_token`` makes the value ``dxa-gateway token new``
prints.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from gateway.config import TokenEntry


@dataclass(frozen=True)
class Identity:
    """Who made a request: the name the audit records and the roles it holds."""

    name: str
    roles: frozenset[str]
    display_name: str = ""
    registration: str = ""
    via: str = "token"  # token | oidc
    expires_at: float | None = None  # Unix time the credential ends (an OIDC token's exp); None: a static token

    @property
    def reporter(self) -> str:
        """The name on a report this identity signs: display name and registration."""
        name = self.display_name or self.name
        return f"{name} ({self.registration})" if self.registration else name


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A new random bearer token (256 bits, URL-safe)."""
    return "dxa_" + secrets.token_urlsafe(32)


class TokenRegistry:
    """The configured identities, looked up by a presented token."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._by_hash: list[tuple[bytes, Identity]] = []
        for e in entries:
            digest = bytes.fromhex(e.token_sha256) if e.token_sha256 else hashlib.sha256(e.token.encode("utf-8")).digest()
            self._by_hash.append((digest, Identity(e.name, frozenset(e.roles), e.display_name, e.registration)))

    def __len__(self) -> int:
        return len(self._by_hash)

    def names(self) -> set[str]:
        return {ident.name for _, ident in self._by_hash}

    def lookup(self, token: str) -> Identity | None:
        """The identity holding ``token``, or None (every entry is compared)."""
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for known, ident in self._by_hash:
            if hmac.compare_digest(known, digest):
                found = ident
        return found
