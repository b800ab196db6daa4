"""The simulators' TLS contexts: clients toward the gateway (MLLP/TLS, DICOM
TLS) and the PACS' and EMR's listeners the gateway sends to."""

from __future__ import annotations

import ssl


def client_tls(ca: str, cert: str = "", key: str = "") -> ssl.SSLContext:
    """TLS 1.2+ toward the gateway: its CA, and our client certificate if given."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key or None)
    return ctx


def server_tls(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """TLS 1.2+ for a simulated peer's listener (the PACS, the EMR): our
    certificate; with ``ca``, a client certificate under it is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    if ca:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
