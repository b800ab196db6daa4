"""The simulators' TLS client context (MLLP/TLS, DICOM TLS toward the gateway)."""

from __future__ import annotations

import ssl


def client_tls(ca: str, cert: str = "", key: str = "") -> ssl.SSLContext:
    """TLS 1.2+ toward the gateway: its CA, and our client certificate if given."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key or None)
    return ctx
