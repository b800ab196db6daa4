"""HL7 v2 over MLLP to a RIS or EMR (HL7 v2.5.1 Appendix C).

One connection per worker, reused; each message waits for its ACK, which
must name it (MSA-2 = the MSH-10 sent: a late ACK for another message is
not taken for this one).  AA/CA: delivered; AE/CE: retried; AR/CR: refused.
"""

from __future__ import annotations

import asyncio

from hl7v2.ack import read_msa
from hl7v2.mllp import FrameTooLarge, frame, read_frame
from routes.base import Delivery, Refused, Retry

MAX_ACK_BYTES = 1024 * 1024


class MllpSender:
    def __init__(self, host: str, port: int, *, timeout: float, tls=None) -> None:
        self.host = host
        self.tls = tls  # ssl.SSLContext for MLLP over TLS, or None
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            return
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_ACK_BYTES, ssl=self.tls), self.timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise Retry(f"cannot connect: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):
                pass
        self._reader = self._writer = None

    async def send(self, delivery: Delivery) -> None:
        if delivery.message is None:
            raise Refused(f"{delivery.kind} cannot go to an HL7 destination")
        await self._connect()
        try:
            self._writer.write(frame(delivery.message))
            await self._writer.drain()
            while True:
                data = await asyncio.wait_for(read_frame(self._reader, MAX_ACK_BYTES), self.timeout)
                if data is None:
                    raise ConnectionError("closed")
                code, acked_id, text = read_msa(data)
                if acked_id == delivery.control_id:
                    break
                # An ACK for some other message (a late one): not ours, keep reading.
        except (OSError, FrameTooLarge) as exc:
            await self.close()
            raise Retry(f"connection lost waiting for the ACK: {type(exc).__name__}") from None
        except asyncio.TimeoutError:
            await self.close()
            raise Retry("no ACK within the timeout") from None
        if code in ("AA", "CA"):
            return
        if code in ("AR", "CR"):
            raise Refused(f"{code}: {text}"[:200])
        raise Retry(f"{code or 'no MSA'}: {text}"[:200])
