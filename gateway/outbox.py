"""The outbox dispatcher: deliver, and keep trying until the receiver has it.

Per destination, ``concurrency`` asyncio workers claim due rows (order kept
per study), turn each into a :class:`~routes.base.Delivery` and hand it to
the destination's sender.  A row is done only on the receiver's success;
failures are retried with exponential backoff and jitter, refusals and
rows past ``max_attempts`` become dead letters (docs/architecture.md rule 2).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from concurrent.futures import Executor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from gateway.config import Config, Destination
from gateway.logs import fields
from gateway.security import tls
from gateway.metrics import Metrics
from gateway.store import OutboxRow, Store
from gateway.store.exams import FLS_PREFIX, REPORT_PDF_PREFIX
from mappings.hl7_status import build_status_message
from routes.base import Delivery, DeliveryError, JsonBody, PathOutsideRoot, Refused, Retry, Sender, idle, path_inside
from routes.dicom_scu import DicomSender
from routes.folder import FolderSender
from routes.hl7_mllp import MllpSender
from routes.http_senders import FhirSender, StowSender

log = logging.getLogger("gateway.outbox")

#: outbox kinds whose payload is stored under "<prefix><destination>" (gateway/store/exams.py)
STORED_UNDER = {"fls": FLS_PREFIX, "report-pdf": REPORT_PDF_PREFIX}
PAYLOAD_FOLDER = "payloads"  # DICOM payloads as files for the senders (under storage.path)

IDLE_POLL = 1.0  # seconds a worker sleeps when nothing is due (a wake-up cuts it short)

ReportPayload = Callable[..., object]


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * 2^(n-1), capped, times 0.5..1."""
    return min(cap, base * (2 ** max(0, attempts - 1))) * rng.uniform(0.5, 1.0)


def make_sender(name: str, dest: Destination, default_calling_ae: str) -> Sender:
    context = tls.for_destination(dest.tls)  # None: plain TCP (or https with the system's CAs)
    if dest.type == "dicom":
        return DicomSender(dest.host, dest.port, dest.ae_title, dest.calling_ae_title or default_calling_ae, timeout=dest.ack_timeout, tls=context)
    if dest.type == "hl7":
        return MllpSender(dest.host, dest.port, timeout=dest.ack_timeout, tls=context)
    if dest.type == "fhir":
        return FhirSender(dest.url, auth=dest.auth, timeout=dest.ack_timeout, tls=context)
    if dest.type == "dicomweb":
        return StowSender(dest.url, auth=dest.auth, timeout=dest.ack_timeout, tls=context)
    return FolderSender(dest.path)


class Dispatcher:
    def __init__(
        self,
        config: Config,
        store: Store,
        data_dir: Path,
        executor: Executor,
        metrics: Metrics,
        report_payload: ReportPayload | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.data_dir = data_dir
        self.executor = executor
        self.metrics = metrics
        self.report_payload = report_payload
        self.rng = random.Random()
        self._tasks: list[asyncio.Task] = []
        self._events: dict[str, list[asyncio.Event]] = {}
        self._senders: list[Sender] = []
        self._stopping = False
        self._busy: set[asyncio.Future] = set()

    async def _db(self, fn, *args, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kw))

    async def start(self) -> None:
        resumed = await self._db(self.store.resume_in_flight)
        if resumed:
            log.warning("outbox.resumed_in_flight", extra=fields(rows=resumed))
        for name, dest in self.config.destinations.items():
            events = []
            for n in range(dest.concurrency):
                sender = make_sender(name, dest, self.config.dicom.ae_title)
                event = asyncio.Event()
                events.append(event)
                self._senders.append(sender)
                self._tasks.append(asyncio.create_task(self._worker(name, dest, sender, event), name=f"outbox-{name}-{n}"))
            self._events[name] = events

    def wake(self) -> None:
        """New rows may be due (call on the loop)."""
        for events in self._events.values():
            for event in events:
                event.set()

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping = True
        self.wake()
        if self._busy:
            await asyncio.wait(self._busy, timeout=grace)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        for sender in self._senders:
            try:
                await asyncio.wait_for(sender.close(), 2.0)
            except (Exception, asyncio.TimeoutError):
                pass

    async def _worker(self, name: str, dest: Destination, sender: Sender, event: asyncio.Event) -> None:
        while not self._stopping:
            try:
                rows = await self._db(self.store.claim_outbox, name, _iso(datetime.now(timezone.utc)), 1)
            except Exception:
                log.exception("outbox.claim_error", extra=fields(destination=name))
                rows = []
            if not rows:
                await idle(sender)
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), IDLE_POLL)
                except asyncio.TimeoutError:
                    pass
                continue
            work = asyncio.ensure_future(self._deliver(name, dest, sender, rows[0]))
            self._busy.add(work)
            try:
                await asyncio.shield(work)
            finally:
                self._busy.discard(work)

    async def _keep_lease(self, name: str, row: OutboxRow) -> None:
        """Renew the row's lease while it is being sent (replicas on PostgreSQL:
        gateway/store/outbox.py); a replica that dies stops renewing, and
        another takes the row when the lease runs out."""
        lease = getattr(self.store, "lease_seconds", None)
        if lease is None:
            return
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await self._db(self.store.renew_outbox_lease, row.id):
                    log.warning("outbox.lease_lost", extra=fields(destination=name, outbox=row.id))
                    return
            except Exception:
                log.exception("outbox.lease_error", extra=fields(destination=name, outbox=row.id))

    async def _deliver(self, name: str, dest: Destination, sender: Sender, row: OutboxRow) -> None:
        started = time.perf_counter()
        self.metrics.outbox_attempts.labels(name).inc()
        lease = asyncio.ensure_future(self._keep_lease(name, row))
        try:
            await self._attempt(name, dest, sender, row, started)
        finally:
            lease.cancel()

    async def _attempt(self, name: str, dest: Destination, sender: Sender, row: OutboxRow, started: float) -> None:
        try:
            delivery = await self._delivery(row, dest)
            await asyncio.wait_for(sender.send(delivery), dest.ack_timeout * 2 + 5)
        except (DeliveryError, asyncio.TimeoutError, Exception) as exc:
            if isinstance(exc, DeliveryError):
                error = exc
            elif isinstance(exc, asyncio.TimeoutError):
                error = Retry("delivery timed out")
            else:
                log.exception("outbox.sender_error", extra=fields(destination=name, outbox=row.id))
                error = Retry(f"{type(exc).__name__}")
            attempts = row.attempts + 1
            reason = "refused" if error.permanent else "transient"
            self.metrics.outbox_failures.labels(name, reason).inc()
            if error.permanent or attempts >= dest.max_attempts:
                await self._db(self.store.finish_outbox, row.id, state="dead", error=error.reason)
                self.metrics.outbox_dead.labels(name).inc()
                log.warning("outbox.dead_letter", extra=fields(destination=name, outbox=row.id, attempts=attempts, reason=error.reason))
            else:
                delay = backoff(attempts, dest.retry_base, dest.retry_cap, self.rng)
                due = _iso(datetime.now(timezone.utc) + timedelta(seconds=delay))
                await self._db(self.store.finish_outbox, row.id, state="pending", error=error.reason, next_attempt_at=due)
                log.info("outbox.retry_later", extra=fields(destination=name, outbox=row.id, attempts=attempts, delay=round(delay, 2), reason=error.reason))
            return
        if not await self._db(self.store.finish_outbox, row.id, state="done"):  # another replica took it over
            log.warning("outbox.lease_lost", extra=fields(destination=name, outbox=row.id))
        self.metrics.outbox_latency.labels(name).observe(time.perf_counter() - started)
        log.info("outbox.delivered", extra=fields(destination=name, outbox=row.id, kind=row.kind, attempts=row.attempts + 1))

    def _payload_file(self, stored) -> Path:
        """A stored DICOM payload as a Part 10 file the senders stream (C-STORE,
        STOW-RS, folder): ``<data>/payloads/<SOP Instance UID>.dcm``, written
        once (temp, fsync, rename) from the stored bytes and checked against
        their sha256 before every attempt."""
        try:
            target = path_inside(self.data_dir / PAYLOAD_FOLDER, f"{stored.control_id}.dcm")
        except PathOutsideRoot as exc:
            raise Refused(f"payload file name {exc}") from None
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == stored.sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        with open(temp, "wb") as f:
            f.write(stored.body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
        return target

    async def _delivery(self, row: OutboxRow, dest: Destination) -> Delivery:
        """What to send for ``row``, built from the store at delivery time."""
        if row.ref_table == "instances":
            inst = await self._db(self.store.get_instance, row.ref_id)
            if inst is None:
                raise Refused("the instance is no longer indexed")
            return Delivery(outbox_id=row.id, kind=row.kind, path=self.data_dir / inst.record.path)
        if row.ref_table == "mpps":
            found = await self._db(self.store.get_mpps_by_id, row.ref_id)
            if found is None:
                raise Refused("the MPPS is no longer stored")
            mpps, study_uid, accession = found
            if dest.type == "hl7":
                item_row = await self._db(self.store.get_worklist_item, mpps.worklist_item_id) if mpps.worklist_item_id else None
                control_id = f"DXAGW{row.id}"
                message = build_status_message(
                    item_row.item if item_row else None,
                    mpps_status=mpps.status,
                    study_uid=study_uid,
                    accession=accession,
                    control_id=control_id,
                    timestamp=datetime.now().strftime("%Y%m%d%H%M%S"),
                    sending_application=self.config.hl7.application,
                    sending_facility=self.config.hl7.facility,
                )
                return Delivery(outbox_id=row.id, kind=row.kind, message=message.encode("utf-8"), control_id=control_id)
            first = await self._db(self.store.first_outbox_for, row.destination, "mpps", row.ref_id)
            return Delivery(
                outbox_id=row.id,
                kind=row.kind,
                mpps_operation="create" if first == row.id else "set",
                mpps_uid=mpps.sop_instance_uid,
                mpps_attributes=mpps.attributes,
            )
        if row.ref_table == "reports":
            # docs/architecture.md rule 9: the bytes rendered when the version was released
            # a fracture liaison notification is stored as "fls:<destination>" (gateway/fls.py),
            # an Encapsulated PDF as "report-pdf:<destination>" (gateway/exams.py)
            key = STORED_UNDER.get(row.kind, "") + row.destination
            stored = await self._db(self.store.report_payload, row.ref_id, key)
            if stored is None and row.kind in STORED_UNDER:
                raise Refused(f"no {row.kind} payload stored for this version")
            if stored is not None:
                if stored.format == "dicom-pdf":
                    path = await self._db(self._payload_file, stored)
                    return Delivery(outbox_id=row.id, kind=row.kind, path=path, control_id=stored.control_id)
                if stored.format in ("fhir-bundle", "fls-fhir-task"):
                    return Delivery(outbox_id=row.id, kind=row.kind, resource_json=stored.body, control_id=stored.control_id)
                return Delivery(outbox_id=row.id, kind=row.kind, message=stored.body, control_id=stored.control_id)
        if self.report_payload is not None:
            control_id = f"DXAGW{row.id}"
            payload = await self._db(self.report_payload, self.store, row.ref_table, row.ref_id, dest.type, control_id, datetime.now())
            if isinstance(payload, JsonBody):
                return Delivery(outbox_id=row.id, kind=row.kind, resource_json=payload.data, control_id=control_id)
            if isinstance(payload, dict):
                return Delivery(outbox_id=row.id, kind=row.kind, resource=payload, control_id=control_id)
            if isinstance(payload, bytes):
                return Delivery(outbox_id=row.id, kind=row.kind, message=payload, control_id=control_id)
        raise Refused(f"no payload for {row.ref_table} rows")
