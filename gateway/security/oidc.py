"""OIDC bearer tokens: JWT access tokens checked against the issuer's JWKS.

The issuer's discovery document (OpenID Connect Discovery 1.0 section 4)
names its ``jwks_uri``; the key set is cached for ``security.oidc.jwks_cache``
seconds and fetched again at once (at most every ``REFRESH_FLOOR`` seconds)
when a token names a key id it does not hold, which is how a provider's key
rotation reaches us.  A token must carry a known ``kid``, an asymmetric
algorithm, our ``iss`` and ``aud``, and a valid ``exp`` (``nbf``/``iat``
honoured), with ``leeway`` seconds of clock skew (RFC 7519 4.1, RFC 9068 4).
Roles come from ``roles_claim`` (a list or a space-separated string; a
dotted path such as ``realm_access.roles`` reaches into objects); only
the gateway's roles are kept.  Verification is PyJWT's.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import time

import aiohttp
import jwt

from gateway.config import ROLES, OidcSettings
from gateway.logs import fields
from gateway.security.tokens import Identity

log = logging.getLogger("gateway.oidc")

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
REFRESH_FLOOR = 10.0  # seconds between two fetches for an unknown kid


class OidcError(Exception):
    """A token that is not accepted; the message says why (never the token)."""


class NonceMismatch(OidcError):
    """An ID token whose nonce is missing or is not the one this login sent
    (OpenID Connect Core 1.0 15.5.2: a replayed or injected authorization response)."""


def roles_from(claims: dict, claim: str) -> frozenset[str]:
    value: object = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return frozenset()
    return frozenset(r for r in value if isinstance(r, str) and r in ROLES)


class OidcVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -1e9
        self._lock = asyncio.Lock()
        self._ssl = ssl.create_default_context(cafile=str(settings.ca)) if settings.ca else None
        self._jwks_uri: str | None = None
        self._meta: dict | None = None

    async def metadata(self) -> dict:
        """The issuer's discovery document (OpenID Connect Discovery 1.0 section 4), fetched once."""
        if self._meta is None:
            meta = await self._get_json(self.issuer + "/.well-known/openid-configuration")
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcError("the discovery document names another issuer")
            self._meta = meta
        return self._meta

    async def post_form(self, url: str, form: dict[str, str], auth: tuple[str, str] | None = None) -> dict:
        """POST a form to the provider (its token endpoint); the JSON answer, or OidcError."""
        timeout = aiohttp.ClientTimeout(total=10)
        basic = aiohttp.BasicAuth(*auth) if auth else None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, data=form, auth=basic, ssl=self._ssl if self._ssl is not None else True) as rsp:
                body = await rsp.json(content_type=None)
                if rsp.status != 200 or not isinstance(body, dict):
                    error = body.get("error", "") if isinstance(body, dict) else ""
                    raise OidcError(f"the token endpoint answered {rsp.status} {error}".strip())
                return body

    async def _get_json(self, url: str) -> dict:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url, ssl=self._ssl if self._ssl is not None else True) as rsp:
                if rsp.status != 200:
                    raise OidcError(f"{url} answered {rsp.status}")
                return await rsp.json(content_type=None)

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            age = now - self._fetched_at
            floor = min(REFRESH_FLOOR, self.settings.jwks_cache)
            if (not force and age < self.settings.jwks_cache) or (force and age < floor):
                return
            try:
                if self._jwks_uri is None:
                    meta = await self._get_json(self.issuer + "/.well-known/openid-configuration")
                    if meta.get("issuer", "").rstrip("/") != self.issuer:
                        raise OidcError("the discovery document names another issuer")
                    self._jwks_uri = meta["jwks_uri"]
                jwks = await self._get_json(self._jwks_uri)
                keys = {}
                for k in jwks.get("keys", []):
                    if k.get("use", "sig") == "sig" and k.get("kid"):
                        try:
                            keys[k["kid"]] = jwt.PyJWK(k)
                        except jwt.PyJWTError:
                            continue
                self._keys = keys
                self._fetched_at = now
                log.info("oidc.jwks_fetched", extra=fields(keys=sorted(keys)))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError, ValueError) as exc:
                self._fetched_at = now  # do not hammer a provider that is down
                log.warning("oidc.jwks_unavailable", extra=fields(error=type(exc).__name__))

    async def _key_for(self, token: str) -> tuple[jwt.PyJWK, str]:
        """The JWKS key that signed ``token`` and its algorithm; OidcError else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("not a JWT") from None
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in ALGORITHMS:
            raise OidcError(f"algorithm {alg!r} is not accepted")
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)  # the provider may have rotated its keys
        key = self._keys.get(kid)
        if key is None:
            raise OidcError("unknown signing key")
        return key, alg

    def _decode(self, token: str, key: jwt.PyJWK, alg: str, audience: str, require: list[str]) -> dict:
        s = self.settings
        try:
            return jwt.decode(
                token, key=key, algorithms=[alg], audience=audience, issuer=s.issuer,
                leeway=s.leeway, options={"require": require},
            )
        except jwt.ExpiredSignatureError:
            raise OidcError("expired") from None
        except jwt.ImmatureSignatureError:
            raise OidcError("not yet valid") from None
        except jwt.InvalidAudienceError:
            raise OidcError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise OidcError("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise OidcError(f"no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise OidcError(type(exc).__name__) from None

    async def identity(self, token: str) -> Identity:
        """The identity of a valid access token; OidcError otherwise.
        ``expires_at`` is the token's ``exp``: a workbench session made from it ends then."""
        key, alg = await self._key_for(token)
        s = self.settings
        claims = self._decode(token, key, alg, s.audience, ["exp", "iss", "aud"])
        name = str(claims.get(s.name_claim) or claims.get("sub") or "")
        if not name:
            raise OidcError("no subject")
        return Identity(
            name=name, roles=roles_from(claims, s.roles_claim), display_name=str(claims.get("name", "")), via="oidc",
            expires_at=float(claims["exp"]),
        )

    async def id_token(self, token: str, client_id: str, nonce: str) -> dict:
        """The claims of the ID token of the login this browser started; OidcError otherwise.

        OpenID Connect Core 1.0 section 3.1.3.7: signed by the provider (its
        JWKS, an asymmetric algorithm), ``iss`` the issuer, ``aud`` holding our
        ``client_id`` (and ``azp`` it when there are several audiences), ``exp``
        and ``iat`` present and ``exp`` not passed; section 3.1.2.1 / 15.5.2:
        ``nonce`` equal to the one sent with this login's authorization request
        (a missing or other nonce: NonceMismatch, the login is refused).
        """
        key, alg = await self._key_for(token)
        claims = self._decode(token, key, alg, client_id, ["exp", "iat", "iss", "aud", "sub"])
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
            raise OidcError("id_token azp is not our client_id")
        got = claims.get("nonce")
        if not isinstance(got, str) or not got:
            raise NonceMismatch("id_token carries no nonce")
        if not hmac.compare_digest(got.encode(), nonce.encode()):
            raise NonceMismatch("id_token nonce does not match this login's")
        return claims
