"""TLS contexts for every port and every outbound destination.

DICOM PS3.15 B.9 (BCP 195 TLS Secure Transport Connection Profile) and B.12
ask for TLS 1.2 or later with the cipher suites RFC 9325 (BCP 195) section
4.2 recommends: ECDHE with AES-GCM or ChaCha20-Poly1305, forward secrecy,
no compression, no renegotiation.  TLS 1.3 suites are OpenSSL's defaults.
"""

from __future__ import annotations

import ssl
from pathlib import Path

# RFC 9325 4.2: the recommended TLS 1.2 suites (and their DHE siblings).
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS"


class _ReportingSocket(ssl.SSLSocket):
    """Reports the first TLS failure on a connection (a refused certificate,
    a plain-TCP peer) to its context's ``on_failure(address, reason)``."""

    def _report(self, exc: ssl.SSLError) -> None:
        hook = getattr(self.context, "on_failure", None)
        if hook is None or getattr(self, "_dxagw_reported", False):
            return
        self._dxagw_reported = True
        try:
            address = self.getpeername()[0]
        except OSError:
            address = "?"
        try:
            hook(address, getattr(exc, "reason", None) or type(exc).__name__)
        except Exception:
            pass

    def recv_into(self, buffer, nbytes=None, flags=0):  # noqa: D102
        try:
            return super().recv_into(buffer, nbytes, flags)
        except ssl.SSLError as exc:
            self._report(exc)
            raise

    def recv(self, buflen=1024, flags=0):  # noqa: D102
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            self._report(exc)
            raise


class _LazyHandshake(ssl.SSLContext):
    """Server-side sockets handshake on first read, in the connection's own
    thread: pynetdicom wraps accepted sockets in its accept loop, where a
    peer that never finishes the handshake would stall every other one.
    ``on_failure`` (set by the listener) hears of failed handshakes."""

    sslsocket_class = _ReportingSocket
    on_failure = None

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, *args, **kwargs):  # noqa: D102
        return super().wrap_socket(sock, server_side, do_handshake_on_connect and not server_side, *args, **kwargs)


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(cert: Path, key: Path, ca: Path | None = None, *, require_client_cert: bool = True, lazy_handshake: bool = False) -> ssl.SSLContext:
    """A listener's context: our certificate, and the CA its clients' chain to."""
    ctx = _harden((_LazyHandshake if lazy_handshake else ssl.SSLContext)(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    if require_client_cert:
        if ca is None:
            raise ValueError("require_client_cert needs a ca to check client certificates against")
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_OPTIONAL if ca is not None else ssl.CERT_NONE
    return ctx


def client_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None, *, check_hostname: bool = True) -> ssl.SSLContext:
    """An outbound context: the peer's CA (else the system's), our client certificate."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    else:
        ctx.load_default_certs()
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


def for_listener(settings, *, lazy_handshake: bool = False) -> ssl.SSLContext | None:
    """The context of a ``tls:`` block (gateway.config.TlsSettings), or None."""
    if settings is None:
        return None
    return server_context(settings.cert, settings.key, settings.ca, require_client_cert=settings.require_client_cert, lazy_handshake=lazy_handshake)


def for_destination(settings) -> ssl.SSLContext | None:
    """The context of a destination's ``tls:`` block (gateway.config.ClientTls), or None."""
    if settings is None:
        return None
    return client_context(settings.ca, settings.cert, settings.key, check_hostname=settings.check_hostname)
