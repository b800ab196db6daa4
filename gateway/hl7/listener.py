"""MLLP listener on asyncio streams (HL7 v2.5.1 Appendix C, MLLP release 2).

One connection carries many messages; each frame is <VT> message <FS><CR>,
cut out by :class:`hl7v2.mllp.MllpFramer`.  Limits (README
"Orders in"): at most ``max_connections`` connections (more are closed at
once), ``max_bytes`` per frame (a bigger one is refused and the connection
closed), ``max_buffered_bytes`` of frames held over all connections (the
connection that would pass it is closed).  A frame holding a stray start
block is refused with an AR naming the reason.  Bytes outside a frame are
dropped and logged.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Awaitable, Callable

from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.security.peers import PeerCertificate
from hl7v2.mllp import Frame, MllpFramer, StrayStart, TooLarge, Unframed, frame

log = logging.getLogger("gateway.mllp")

Handler = Callable[[bytes, str], Awaitable[bytes]]
Refuser = Callable[[bytes, str, str], Awaitable[bytes]]

READ_CHUNK = 64 * 1024
# The StreamReader pauses the socket at twice its limit: with this, what a
# connection holds outside the framer stays under 512 KiB.
STREAM_LIMIT = 256 * 1024
_TRIM_AFTER = 1024 * 1024


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): give freed heap pages back to the system.

    Frame buffers are many 64 KiB chunks from the heap; once freed, glibc
    keeps them in the process (+140 MB was measured held after ten
    large frames).  Elsewhere (musl, macOS) this does nothing.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


give_back_memory = _malloc_trim()


class MllpServer:
    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        metrics: Metrics,
        *,
        max_bytes: int,
        idle_timeout: float,
        max_connections: int = 64,
        max_buffered_bytes: int = 64 * 1024 * 1024,
        refuse: Refuser | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.refuse = refuse
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered = 0  # frame bytes held over all connections
        metrics.watch_mllp(self)
        self._server: asyncio.base_events.Server | None = None
        self.ssl_context = None  # set for the MLLP/TLS listener (gateway/security/tls.py)
        self._connections: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()

    async def start(self) -> None:
        tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": 30.0} if self.ssl_context is not None else {}
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=STREAM_LIMIT, **tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 8.0) -> None:
        """Stop accepting, let messages being processed finish, close the rest."""
        if self._server is None:
            return
        self._server.close()
        if self._busy:
            await asyncio.wait(self._busy, timeout=grace)
            await asyncio.sleep(0.05)  # let the connections write those ACKs
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        if len(self._connections) >= self.max_connections:
            self.metrics.mllp_errors.labels("too_many_connections").inc()
            log.warning("mllp.connection_refused", extra=fields(peer=peer, reason="too many connections", limit=self.max_connections))
            writer.close()
            return
        self._connections.add(task)
        framer = MllpFramer(self.max_bytes)
        held = 0  # this connection's share of self.buffered
        peak = 0
        # Under TLS, what the peer's certificate proved (gateway/security/peers.py).
        cert = {"cert": PeerCertificate.of(writer.get_extra_info("ssl_object"))} if self.ssl_context is not None else {}
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), self.idle_timeout)
                except asyncio.TimeoutError:
                    if framer.buffered:
                        self.metrics.mllp_errors.labels("incomplete").inc()
                        log.warning("mllp.incomplete_frame", extra=fields(peer=peer))
                    break
                if not data:
                    if framer.buffered:
                        self.metrics.mllp_errors.labels("incomplete").inc()
                        log.warning("mllp.incomplete_frame", extra=fields(peer=peer))
                    break
                if self.buffered + len(data) > self.max_buffered_bytes:
                    self.metrics.mllp_errors.labels("buffer_full").inc()
                    log.warning("mllp.buffer_full", extra=fields(peer=peer, limit=self.max_buffered_bytes))
                    break
                events = framer.feed(data)
                self.buffered += framer.buffered - held
                held = framer.buffered
                peak = max(peak, held)
                for event in events:
                    if isinstance(event, Unframed):
                        self.metrics.mllp_errors.labels("unframed").inc()
                        log.warning("mllp.unframed_bytes", extra=fields(peer=peer, bytes=event.size))
                    elif isinstance(event, TooLarge):
                        self.metrics.mllp_errors.labels("too_large").inc()
                        log.warning("mllp.frame_too_large", extra=fields(peer=peer, limit=self.max_bytes))
                    elif isinstance(event, StrayStart):
                        self.metrics.mllp_errors.labels("nested_start").inc()
                        log.warning("mllp.stray_start_block", extra=fields(peer=peer, offset=len(event.message)))
                        if self.refuse is not None:
                            await self._answer(writer, self.refuse(event.message, "frame holds a start block (0x0B) before its end", peer), len(event.message))
                    elif isinstance(event, Frame):
                        peak = max(peak, len(event.message))
                        await self._answer(writer, self.handler(event.message, peer, **cert), len(event.message))
                if framer.broken:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.buffered -= held
            self._connections.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):
                pass
            if peak >= _TRIM_AFTER:
                give_back_memory()

    async def _answer(self, writer: asyncio.StreamWriter, handling: Awaitable[bytes], size: int) -> None:
        """Run one message's handling (counted as buffered) and write its ACK."""
        self.buffered += size
        work = asyncio.ensure_future(handling)
        self._busy.add(work)
        try:
            ack = await asyncio.shield(work)
        finally:
            self._busy.discard(work)
            self.buffered -= size
        writer.write(frame(ack))
        await writer.drain()
