"""FHIR REST and DICOMweb STOW-RS destinations (aiohttp client).

2xx is delivered; 408, 429 and 5xx are retried; any other 4xx is refused.
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import orjson

from routes.base import Delivery, Refused, Retry


def _outcome(status: int, body: str) -> None:
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        raise Retry(f"HTTP {status}: {body[:150]}")
    raise Refused(f"HTTP {status}: {body[:150]}")


class _HttpSender:
    def __init__(self, url: str, *, auth: str = "", timeout: float = 30, tls=None) -> None:
        self.url = url.rstrip("/")
        self.tls = tls  # ssl.SSLContext for an https URL (our client certificate, the peer's CA), or None
        self.headers = {"Authorization": auth} if auth else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.tls) if self.tls is not None else None
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, url: str, data: bytes, content_type: str) -> None:
        try:
            async with self.session().post(url, data=data, headers={"Content-Type": content_type}) as rsp:
                body = await rsp.text(errors="replace")
                _outcome(rsp.status, body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Retry(f"HTTP request failed: {type(exc).__name__}") from None


class FhirSender(_HttpSender):
    """POST a transaction Bundle to the FHIR base URL (FHIR R4 3.1.0.11)."""

    async def send(self, delivery: Delivery) -> None:
        if delivery.resource_json:
            body = delivery.resource_json
        elif delivery.resource is not None:
            body = orjson.dumps(delivery.resource)
        else:
            raise Refused(f"{delivery.kind} cannot go to a FHIR destination")
        await self._post(self.url, body, "application/fhir+json")


class StowSender(_HttpSender):
    """STOW-RS: POST {base}/studies, multipart/related; type=application/dicom (PS3.18 10.5)."""

    async def send(self, delivery: Delivery) -> None:
        if delivery.path is None:
            raise Refused(f"{delivery.kind} cannot go to a DICOMweb destination")
        boundary = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, delivery.path.read_bytes)
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        await self._post(f"{self.url}/studies", body, f'multipart/related; type="application/dicom"; boundary={boundary}')
