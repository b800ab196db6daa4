"""A throwaway certificate authority for ``dxa-sim demo --tls``.

Made with ``cryptography`` (already installed with PyJWT[crypto]), not
trustme, so the demo needs no test dependency.  ECDSA P-256 keys, SHA-256
signatures, a day's validity: enough for TLS 1.2+ with the BCP 195 suites
the gateway offers (gateway/security/tls.py, DICOM PS3.15 B.9).  Keys are
written 0600 and the CA's key is never
written (no more certificates can be issued under it); nothing here is fit for a real site.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DOMAIN = "demo.invalid"  # RFC 6761: never resolves, so never mistaken for a real host


@dataclass(frozen=True)
class Identity:
    """One party's certificate and key (PEM files)."""

    cert: Path
    key: Path
    subject: str  # e.g. "CN=dxa1.demo.invalid", as dicom.peers tls_subject takes it


@dataclass(frozen=True)
class DemoPki:
    ca: Path
    identities: dict[str, Identity]

    def __getitem__(self, name: str) -> Identity:
        return self.identities[name]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dxa-sim demo"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_demo_pki(folder: Path, parties: dict[str, tuple[bool, bool]]) -> DemoPki:
    """A CA in ``folder`` and, per party ``name: (server, client)``, a
    certificate for ``name.demo.invalid`` valid for 127.0.0.1 and localhost,
    with the server and/or client extended key usage (RFC 5280 4.2.1.12)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("dxa-sim demo CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    identities = {}
    for name, (server, client) in parties.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cn = f"{name}.{DOMAIN}"
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(cn), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        identities[name] = Identity(cert_path, key_path, f"CN={cn}")
    return DemoPki(ca_path, identities)
