"""The workbench login's ID token checks (OpenID Connect Core 1.0 3.1.3.7),
with PyJWT signing real RS256 tokens under a key the verifier holds as if
fetched from the provider's JWKS; the nonce against the real provider is in
tests/integration/test_workbench.py."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.config import OidcSettings
from gateway.security.oidc import NonceMismatch, OidcError, OidcVerifier

ISSUER = "https://idp.hospital.example/realms/h"
CLIENT = "dxa-workbench"


@pytest.fixture(scope="module")
def keys():
    def make():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return make(), make()


def verifier(private) -> OidcVerifier:
    v = OidcVerifier(OidcSettings(issuer=ISSUER, audience="dxa-gateway", leeway=0))
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    v._keys = {"k1": jwt.PyJWK(jwk)}  # as fetched from the JWKS: no refresh within jwks_cache
    v._fetched_at = time.monotonic()
    return v


def id_token(private, **changes) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "dr-a", "iat": now, "exp": now + 300, "nonce": "n-123"}
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, private, algorithm="RS256", headers={"kid": "k1"})


def check(v: OidcVerifier, token: str, nonce: str = "n-123") -> dict:
    return asyncio.run(v.id_token(token, CLIENT, nonce))


def test_a_valid_id_token_for_this_login_is_accepted(keys):
    assert check(verifier(keys[0]), id_token(keys[0]))["sub"] == "dr-a"
    assert check(verifier(keys[0]), id_token(keys[0], aud=[CLIENT, "other"], azp=CLIENT))["sub"] == "dr-a"


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"nonce": "n-other"}, "nonce does not match"),
        ({"nonce": None}, "carries no nonce"),
        ({"aud": "dxa-gateway"}, "wrong audience"),  # an access token's audience, not our client
        ({"aud": [CLIENT, "other"]}, "azp"),  # several audiences and no azp naming us
        ({"iss": "https://idp.elsewhere.example"}, "wrong issuer"),
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"iat": None}, "no iat claim"),
    ],
)
def test_an_id_token_not_for_this_login_is_refused(keys, changes, reason):
    with pytest.raises(OidcError, match=reason) as caught:
        check(verifier(keys[0]), id_token(keys[0], **changes))
    assert isinstance(caught.value, NonceMismatch) == ("nonce" in reason)


def test_an_id_token_signed_by_another_key_is_refused(keys):
    with pytest.raises(OidcError, match="InvalidSignatureError"):
        check(verifier(keys[0]), id_token(keys[1]))
