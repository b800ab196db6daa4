"""Who may talk over DICOM and MLLP: AE titles, senders, addresses, certificates.

Pure decisions (no I/O): the listeners pass what they know of a peer and act
on the refusal returned.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from gateway.config import DicomSettings, Hl7Sender


def address_allowed(address: str, allowed: list[str]) -> bool:
    """``address`` is one of ``allowed`` (addresses or CIDR networks); empty allows any."""
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST", "emailAddress": "E"}


@dataclass(frozen=True)
class PeerCertificate:
    """What the TLS handshake proved about a peer (empty without TLS)."""

    subject: str = ""  # RFC 4514 order, e.g. "CN=dxa1.hospital.example,O=Hospital"
    sha256: str = ""  # of the DER certificate, lower-case hex without colons

    @classmethod
    def of(cls, sock) -> "PeerCertificate":
        """From an ``ssl.SSLSocket`` (or anything without a certificate)."""
        getpeercert = getattr(sock, "getpeercert", None)
        if getpeercert is None:
            return cls()
        try:
            der = getpeercert(binary_form=True)
            info = getpeercert() or {}
        except ValueError:  # no handshake yet
            return cls()
        if not der:
            return cls()
        parts = [f"{_SHORT.get(k, k)}={v}" for rdn in info.get("subject", ()) for k, v in rdn]
        return cls(",".join(reversed(parts)), hashlib.sha256(der).hexdigest())

    def matches_subject(self, wanted: str) -> bool:
        """Every ``K=V`` of ``wanted`` (comma-separated, any order) is in the subject."""
        have = {p.strip() for p in self.subject.split(",") if p.strip()}
        want = {p.strip() for p in wanted.split(",") if p.strip()}
        return bool(have) and want <= have


def _fingerprint(value: str) -> str:
    return value.replace(":", "").strip().lower()


@dataclass(frozen=True)
class Refusal:
    """Why a DICOM association is refused: PS3.8 Table 9-21 reason, and a log text."""

    reason: int  # 0x03 calling AE not recognized, 0x07 called AE not recognized
    text: str


def dicom_refusal(s: DicomSettings, called: str, calling: str, address: str, cert: PeerCertificate) -> Refusal | None:
    """The refusal of an A-ASSOCIATE-RQ, or None when this peer may talk.

    Calling-AE lists per service are applied after this (DicomServer).
    """
    if not s.accept_any_called_ae and called != s.ae_title:
        return Refusal(0x07, "called AE title is not ours")
    peer = s.peers.get(calling)
    if peer is None:
        return None
    if not address_allowed(address, peer.addresses):
        return Refusal(0x03, "source address not allowed for this AE title")
    if peer.tls_subject and not cert.matches_subject(peer.tls_subject):
        return Refusal(0x03, "certificate subject does not match dicom.peers")
    if peer.tls_fingerprint and cert.sha256 != _fingerprint(peer.tls_fingerprint):
        return Refusal(0x03, "certificate fingerprint does not match dicom.peers")
    return None


def _namespace(hd: str) -> str:
    """The namespace ID (first component) of an HD field, e.g. MSH-3."""
    return hd.split("^", 1)[0].strip()


def hl7_sender_refusal(allowed: list[Hl7Sender], application: str, facility: str, address: str, cert: PeerCertificate = PeerCertificate()) -> str | None:
    """Why an MLLP message from MSH-3/MSH-4 at ``address`` (with ``cert``
    under TLS) is refused, or None.  An empty ``hl7.allowed_senders`` allows everyone.
    """
    if not allowed:
        return None
    key = f"{_namespace(application)}^{_namespace(facility)}"
    matching = [a for a in allowed if a.sender == key]
    if not matching:
        return "sender (MSH-3^MSH-4) is not in hl7.allowed_senders"
    matching = [a for a in matching if address_allowed(address, a.addresses)]
    if not matching:
        return "source address not allowed for this sender"
    if not any((not a.tls_subject or cert.matches_subject(a.tls_subject)) and (not a.tls_fingerprint or cert.sha256 == _fingerprint(a.tls_fingerprint)) for a in matching):
        return "certificate does not match hl7.allowed_senders"
    return None
