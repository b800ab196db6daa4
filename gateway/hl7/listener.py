"""MLLP listener on asyncio streams (HL7 v2.5.1 Appendix C, MLLP release 2).

One connection carries many messages; each frame is <VT> message <FS><CR>.
Frames over ``max_message_bytes`` are refused and the connection closed
(the StreamReader limit bounds memory); bytes outside a frame are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.security.peers import PeerCertificate
from mappings.hl7_text import END_BLOCK, START_BLOCK, frame

log = logging.getLogger("gateway.mllp")

Handler = Callable[[bytes, str], Awaitable[bytes]]


class MllpServer:
    def __init__(self, host: str, port: int, handler: Handler, metrics: Metrics, *, max_bytes: int, idle_timeout: float) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self._server: asyncio.base_events.Server | None = None
        self.ssl_context = None  # set for the MLLP/TLS listener (gateway/security/tls.py)
        self._connections: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()

    async def start(self) -> None:
        tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": 30.0} if self.ssl_context is not None else {}
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=self.max_bytes + 2, **tls)
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
        self._connections.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        # Under TLS, what the peer's certificate proved (gateway/security/peers.py).
        cert = {"cert": PeerCertificate.of(writer.get_extra_info("ssl_object"))} if self.ssl_context is not None else {}
        try:
            while True:
                try:
                    junk = await asyncio.wait_for(reader.readuntil(START_BLOCK), self.idle_timeout)
                except asyncio.TimeoutError:
                    break
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        self.metrics.mllp_errors.labels("unframed").inc()
                        log.warning("mllp.unframed_bytes", extra=fields(peer=peer, bytes=len(exc.partial)))
                    break
                except asyncio.LimitOverrunError:
                    self.metrics.mllp_errors.labels("unframed").inc()
                    log.warning("mllp.unframed_bytes", extra=fields(peer=peer, bytes=self.max_bytes))
                    break
                if len(junk) > 1 and junk[:-1].strip():
                    self.metrics.mllp_errors.labels("unframed").inc()
                    log.warning("mllp.unframed_bytes", extra=fields(peer=peer, bytes=len(junk) - 1))
                try:
                    data = await asyncio.wait_for(reader.readuntil(END_BLOCK), self.idle_timeout)
                except asyncio.LimitOverrunError:
                    self.metrics.mllp_errors.labels("too_large").inc()
                    log.warning("mllp.frame_too_large", extra=fields(peer=peer, limit=self.max_bytes))
                    break
                except (asyncio.IncompleteReadError, asyncio.TimeoutError):
                    self.metrics.mllp_errors.labels("incomplete").inc()
                    log.warning("mllp.incomplete_frame", extra=fields(peer=peer))
                    break
                message = data[: -len(END_BLOCK)]
                if START_BLOCK in message:
                    # A new frame started before this one ended: keep the last.
                    message = message.rsplit(START_BLOCK, 1)[1]
                    self.metrics.mllp_errors.labels("nested_start").inc()
                work = asyncio.ensure_future(self.handler(message, peer, **cert))
                self._busy.add(work)
                try:
                    ack = await asyncio.shield(work)
                finally:
                    self._busy.discard(work)
                writer.write(frame(ack))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):
                pass
