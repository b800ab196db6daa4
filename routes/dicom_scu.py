"""A DICOM destination: C-STORE SCU to a PACS, and MPPS forwarding.

pynetdicom is blocking, so each sender owns one thread (a one-worker
executor): its association is reused between objects and only ever used
from that thread (docs/architecture.md rule 4).  Statuses per PS3.4 B.2.3: success and
warnings are delivered; 0xA7xx (out of resources) is retried; 0xA9xx and
0xCxxx are refused.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from pydicom import dcmread
from pydicom.dataset import Dataset
import socket

from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from mappings.mpps import SET_NOT_ALLOWED
from routes.base import Delivery, Refused, Retry

IDLE_RELEASE = 5.0  # seconds an unused association is kept open
MAX_CONTEXTS = 100  # of the 128 an association may propose (PS3.8 9.3.2.2)
COMMON_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def _nodelay(event) -> None:
    """pynetdicom leaves Nagle on; each response would wait for a delayed ACK."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def store_outcome(status: int) -> None:
    if status == 0x0000 or status & 0xF000 == 0xB000:
        return
    if status & 0xFF00 == 0xA700:
        raise Retry(f"C-STORE status 0x{status:04X} (out of resources)")
    raise Refused(f"C-STORE status 0x{status:04X}")


class DicomSender:
    def __init__(self, host: str, port: int, called_ae: str, calling_ae: str, *, timeout: float, tls=None) -> None:
        self.host = host
        self.tls = tls  # ssl.SSLContext for DICOM TLS (PS3.15 B.9), or None
        self.port = port
        self.called_ae = called_ae
        self.calling_ae = calling_ae
        self.timeout = timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"scu-{called_ae}")
        self._assoc = None
        self._last_used = 0.0
        self._contexts: dict[tuple[str, str], None] = {}  # (SOP class, transfer syntax), most recent last
        # Send files as stored, read in chunks (bounded memory), process-wide.
        _config.STORE_SEND_CHUNKED_DATASET = True

    # -- runs on the sender's own thread -------------------------------------

    def _associate(self, want: tuple[str, str] | None) -> None:
        if want is not None:
            self._contexts.pop(want, None)
            self._contexts[want] = None
            while len(self._contexts) > MAX_CONTEXTS:
                self._contexts.pop(next(iter(self._contexts)))
        self._release()
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        by_class: dict[str, list[str]] = {}
        for sop_class, syntax in self._contexts:
            by_class.setdefault(sop_class, []).append(syntax)
        for sop_class, syntaxes in by_class.items():
            # The file's own syntax in a context of its own, so the PACS
            # cannot pick another one: we send what we stored, unchanged.
            for syntax in syntaxes:
                ae.add_requested_context(sop_class, [syntax])
        ae.add_requested_context(ModalityPerformedProcedureStep)
        tls_args = (self.tls, self.host) if self.tls is not None else None
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)], tls_args=tls_args)
        if not assoc.is_established:
            reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
            raise Retry(f"association {reason}")
        self._assoc = assoc

    def _release(self) -> None:
        if self._assoc is not None:
            try:
                if self._assoc.is_established:
                    self._assoc.release()
            except Exception:
                pass
            self._assoc = None

    def _has_context(self, sop_class: str, syntax: str) -> bool:
        if self._assoc is None or not self._assoc.is_established:
            return False
        return any(
            cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == syntax for cx in self._assoc.accepted_contexts
        )

    def _store(self, delivery: Delivery) -> None:
        header = dcmread(delivery.path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        sop_class = str(header.file_meta.MediaStorageSOPClassUID)
        syntax = str(header.file_meta.TransferSyntaxUID)
        if not self._has_context(sop_class, syntax):
            self._associate((sop_class, syntax))
            if not self._has_context(sop_class, syntax):
                self._release()
                raise Refused(f"the PACS accepts no context for {sop_class} in {syntax}")
        status = self._assoc.send_c_store(delivery.path)
        if not status:
            self._release()
            raise Retry("no C-STORE response (connection lost or timed out)")
        store_outcome(status.Status)

    def _mpps(self, delivery: Delivery) -> None:
        if self._assoc is None or not self._assoc.is_established:
            self._associate(None)
        ds = Dataset.from_json(delivery.mpps_attributes.decode())
        if delivery.mpps_operation == "create":
            ds.PerformedProcedureStepStatus = "IN PROGRESS"
            status, _ = self._assoc.send_n_create(ds, ModalityPerformedProcedureStep, delivery.mpps_uid)
            ok = {0x0000, 0x0111}  # already there counts as delivered
        else:
            for keyword in SET_NOT_ALLOWED:
                if keyword in ds:
                    delattr(ds, keyword)
            status, _ = self._assoc.send_n_set(ds, ModalityPerformedProcedureStep, delivery.mpps_uid)
            ok = {0x0000}
        if not status:
            self._release()
            raise Retry("no MPPS response")
        if status.Status not in ok and status.Status & 0xF000 != 0xB000:
            raise Refused(f"MPPS status 0x{status.Status:04X}")

    def _send(self, delivery: Delivery) -> None:
        self._last_used = time.monotonic()
        try:
            if delivery.path is not None:
                self._store(delivery)
            elif delivery.mpps_operation:
                self._mpps(delivery)
            else:
                raise Refused(f"{delivery.kind} cannot go to a DICOM destination")
        except (Retry, Refused):
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            self._release()
            raise Retry(f"{type(exc).__name__}: {exc}"[:200]) from None

    # -- the asyncio side -------------------------------------------------------

    async def send(self, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._send, delivery)

    async def idle(self) -> None:
        """Release an association nobody has used for a while (a PACS may
        not shut down, or may run out of slots, while we hold it open)."""
        if self._assoc is not None and time.monotonic() - self._last_used > IDLE_RELEASE:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._release)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._release)
        self._thread.shutdown(wait=False)
