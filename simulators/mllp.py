"""MLLP framing (HL7 v2.5.1 Appendix C): 0x0B message 0x1C 0x0D."""

from __future__ import annotations

import asyncio
import socket
import ssl

START = b"\x0b"
END = b"\x1c\x0d"
MAX_FRAME = 16 * 1024 * 1024


class FrameTooLarge(Exception):
    pass


def frame(message: bytes) -> bytes:
    return START + message + END


def client_tls(ca: str, cert: str = "", key: str = "") -> ssl.SSLContext:
    """TLS 1.2+ toward the gateway: its CA, and our client certificate if given."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key or None)
    return ctx


class MllpClient:
    """Blocking MLLP client: one connection, many messages, one ACK each
    (over TLS when given an ``ssl.SSLContext``)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, max_frame: int = MAX_FRAME, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        self.buf = b""
        self.max_frame = max_frame

    def send(self, message: bytes) -> None:
        self.sock.sendall(frame(message))

    def receive(self) -> bytes:
        """The next frame's payload; raises ConnectionError on close."""
        while END not in self.buf:
            if len(self.buf) > self.max_frame:
                raise FrameTooLarge(f"frame exceeds {self.max_frame} bytes")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a complete frame")
            self.buf += chunk
        data, self.buf = self.buf.split(END, 1)
        start = data.find(START)
        return data[start + 1 :] if start >= 0 else data

    def request(self, message: bytes) -> bytes:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def read_frame(reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> bytes | None:
    """The next framed message from ``reader``; None at a clean end of stream.

    Bytes before the start block are skipped; a frame longer than
    ``max_frame`` raises :class:`FrameTooLarge` (the caller drops the link).
    """
    buf = bytearray()
    while True:
        try:
            chunk = await reader.readuntil(END)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip() or buf:
                raise ConnectionError("connection closed inside a frame") from None
            return None
        except asyncio.LimitOverrunError as exc:
            # the limit is below the frame: take what is there and go on
            buf += await reader.readexactly(exc.consumed)
            if len(buf) > max_frame:
                raise FrameTooLarge(f"frame exceeds {max_frame} bytes") from None
            continue
        buf += chunk
        if len(buf) > max_frame + 3:
            raise FrameTooLarge(f"frame exceeds {max_frame} bytes")
        data = bytes(buf[:-2])
        start = data.find(START)
        return data[start + 1 :] if start >= 0 else data
