"""The workbench's login at the hospital's OpenID provider: the authorization
code flow (RFC 6749 section 4.1) with PKCE S256 (RFC 7636 section 4).

``/workbench/oidc/start`` sends the browser to the provider's
``authorization_endpoint`` with a one-time ``state`` bound to this browser's
login cookie, a ``nonce`` and the code challenge; the provider sends it back
to ``/workbench/oidc/callback`` with a code, which is exchanged (with the
code verifier) at the ``token_endpoint`` for an ID token and an access token.
The ID token must be the provider's, for our client, unexpired and carry the
login's nonce (OpenID Connect Core 1.0 3.1.3.7); the access token is then
checked like any bearer token (gateway/security/oidc.py: signature, issuer,
audience, expiry, roles claim) and becomes the session's identity, the
session ending at its ``exp``.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlencode

from gateway.config import OidcLoginSettings
from gateway.security.oidc import OidcError, OidcVerifier
from gateway.security.tokens import Identity


def code_challenge(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))), no padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(endpoint: str, login: OidcLoginSettings, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
    params = {
        "response_type": "code",
        "client_id": login.client_id,
        "redirect_uri": redirect_uri,
        "scope": login.scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    if login.resource:
        params["resource"] = login.resource  # RFC 8707
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)


async def start(verifier: OidcVerifier, login: OidcLoginSettings, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
    """Where to send the browser."""
    meta = await verifier.metadata()
    endpoint = meta.get("authorization_endpoint")
    if not endpoint:
        raise OidcError("the provider names no authorization_endpoint")
    return authorization_url(endpoint, login, redirect_uri, state, nonce, code_verifier)


async def finish(verifier: OidcVerifier, login: OidcLoginSettings, redirect_uri: str, code: str, code_verifier: str, nonce: str) -> Identity:
    """The identity of the access token the code is exchanged for, once the
    ID token that comes with it is verified (OpenID Connect Core 1.0 3.1.3.7,
    its nonce the one this login sent); OidcError (NonceMismatch) else."""
    meta = await verifier.metadata()
    endpoint = meta.get("token_endpoint")
    if not endpoint:
        raise OidcError("the provider names no token_endpoint")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": code_verifier}
    auth = None
    if login.client_secret:
        auth = (login.client_id, login.client_secret)  # client_secret_basic (RFC 6749 2.3.1)
    else:
        form["client_id"] = login.client_id  # a public client (RFC 6749 4.1.3)
    if login.resource:
        form["resource"] = login.resource
    answer = await verifier.post_form(endpoint, form, auth)
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        raise OidcError("the provider gave no id_token (is openid in security.oidc.login.scope?)")
    await verifier.id_token(id_token, login.client_id, nonce)
    token = answer.get("access_token")
    if not isinstance(token, str) or token.count(".") != 2:
        raise OidcError("the provider gave no JWT access token (set security.oidc.login.resource?)")
    return await verifier.identity(token)
