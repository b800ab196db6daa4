"""OIDC bearer tokens from a real OpenID provider (npm ``oidc-provider`` on
this machine's node; issue 13): JWKS fetched and cached, key rotation, iss,
aud, exp with leeway, roles from the claim."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from base64 import b64encode
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.orthanc import wait_for
from tests.support import free_port, http_request, start_daemon, wait_port

PROVIDER = Path(__file__).resolve().parents[1] / "oidc"
CLIENTS = [
    {"client_id": "ris", "client_secret": "ris-secret-0123456789", "roles": ["orders", "viewer"]},
    {"client_id": "ward", "client_secret": "ward-secret-0123456789", "roles": ["viewer", "not-a-gateway-role"]},
    {"client_id": "elsewhere", "client_secret": "elsewhere-secret-0123", "roles": ["admin"], "audience": "urn:another-service"},
    {"client_id": "brief", "client_secret": "brief-secret-0123456789", "roles": ["admin"], "ttl": 1},
]


def _node_ready() -> bool:
    if shutil.which("node") is None:
        return False
    if not (PROVIDER / "node_modules" / "oidc-provider").exists():
        if shutil.which("npm") is None:
            return False
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=PROVIDER, capture_output=True, timeout=300)
        if r.returncode != 0:
            return False
    return True


pytestmark = pytest.mark.skipif(not _node_ready(), reason="node and the npm package oidc-provider (tests/oidc) are needed")


def _key(kid: str) -> dict:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(k))
    jwk.update(kid=kid, alg="RS256", use="sig")
    return jwk


class Provider:
    def __init__(self, work: Path, port: int, keys: list[dict], clients: list[dict] | None = None) -> None:
        work.mkdir(parents=True, exist_ok=True)
        (work / "keys.json").write_text(json.dumps({"keys": keys}))
        (work / "clients.json").write_text(json.dumps(CLIENTS if clients is None else clients))
        self.issuer = f"http://127.0.0.1:{port}"
        self.log = open(work / "provider.log", "ab")
        self.proc = subprocess.Popen(["node", "provider.mjs", str(port), str(work / "keys.json"), str(work / "clients.json")], cwd=PROVIDER, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(port)

    def token(self, client: str) -> str:
        c = next(c for c in CLIENTS if c["client_id"] == client)
        req = urllib.request.Request(
            self.issuer + "/token", data=b"grant_type=client_credentials&scope=api", method="POST",
            headers={"Authorization": "Basic " + b64encode(f"{c['client_id']}:{c['client_secret']}".encode()).decode(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return json.loads(rsp.read())["access_token"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def test_oidc_tokens(tmp_path):
    port = free_port()
    key_a, key_b = _key("key-a"), _key("key-b")
    idp = Provider(tmp_path / "idp1", port, [key_a])
    d = start_daemon(tmp_path / "gw", {"security": {"oidc": {"issuer": idp.issuer, "audience": "urn:dxa-gateway", "leeway": 0, "jwks_cache": 1}}}, test_token=False)
    try:
        ris = idp.token("ris")
        assert http_request(d.http + "/api/worklist", token=ris)[0] == 200
        assert http_request(d.http + "/api/outbox", token=ris)[0] == 403  # roles from the claim: orders, viewer
        assert http_request(d.http + "/api/worklist", token=idp.token("ward"))[0] == 200
        assert http_request(d.http + "/api/worklist", "POST", {}, content_type="application/dicom+json", token=idp.token("ward"))[0] == 403
        # wrong audience
        status, _, headers = http_request(d.http + "/api/outbox", token=idp.token("elsewhere"))
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        # a token we sign ourselves with another key under the provider's kid, or with the right key but another issuer
        forged = jwt.encode({"iss": idp.issuer, "aud": "urn:dxa-gateway", "sub": "x", "roles": ["admin"], "exp": int(time.time()) + 300}, jwt.PyJWK(_key("key-a")).key, algorithm="RS256", headers={"kid": "key-a"})
        assert http_request(d.http + "/api/outbox", token=forged)[0] == 401
        other_iss = jwt.encode({"iss": "http://127.0.0.1:1", "aud": "urn:dxa-gateway", "sub": "x", "roles": ["admin"], "exp": int(time.time()) + 300}, jwt.PyJWK(key_a).key, algorithm="RS256", headers={"kid": "key-a"})
        assert http_request(d.http + "/api/outbox", token=other_iss)[0] == 401
        unsigned = jwt.encode({"iss": idp.issuer, "aud": "urn:dxa-gateway", "sub": "x", "roles": ["admin"], "exp": int(time.time()) + 300}, None, algorithm="none", headers={"kid": "key-a"})
        assert http_request(d.http + "/api/outbox", token=unsigned)[0] == 401
        # expiry, with leeway 0 (the provider's token lives 1 s)
        brief = idp.token("brief")
        assert http_request(d.http + "/api/outbox", token=brief)[0] == 200
        assert wait_for(lambda: http_request(d.http + "/api/outbox", token=brief)[0] == 401, 10)
        # the provider rotates its key: new tokens are accepted, the old key's are not
        idp.stop()
        idp = Provider(tmp_path / "idp2", port, [key_b])
        new = idp.token("ris")
        assert jwt.get_unverified_header(new)["kid"] == "key-b"
        assert wait_for(lambda: http_request(d.http + "/api/worklist", token=new)[0] == 200, 15)
        assert http_request(d.http + "/api/worklist", token=ris)[0] == 401
        assert "oidc.jwks_fetched" in d.log_text()
        import sqlite3

        def actors():
            with sqlite3.connect(d.dir / "data" / "gateway.sqlite3") as conn:
                return {row[0] for row in conn.execute("SELECT actor FROM audit WHERE event = 'auth.success'")}

        assert wait_for(lambda: {"ris", "ward", "brief"} <= actors(), 10)  # the audit names the provider's subject
    finally:
        d.stop()
        idp.stop()
