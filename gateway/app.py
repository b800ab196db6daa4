"""The daemon: one asyncio process serving DICOM, HL7 MLLP and HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from gateway.audit_atna import AuditForwarder
from gateway.config import Config, open_configured_store, storage_path
from gateway.data_folder import make_private
from gateway.dicom.server import DicomServer
from gateway.exams import ExamService
from gateway.sr_reader import SrReader
from gateway.hl7.intake import Hl7Intake
from gateway.hl7.listener import MllpServer
from gateway.entitlement import Entitlement
from gateway.http import exam_views, exams_api, priors_api, qa_api, service_api
from gateway.http.auth import HOW_TO_ADD, HttpAuth, default_allowed_hosts
from gateway.security import tls
from gateway.security.oidc import OidcVerifier
from gateway.security.tokens import TokenRegistry
from gateway.http.server import HttpServer
from gateway.http.sessions import SessionStore
from gateway.http.workbench import Workbench
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.outbox import Dispatcher
from gateway.priors.service import PriorService
from gateway.qa import QaCollector, QaService
from gateway.spool import Spool
from gateway.store.exams import RESULT_KINDS
from mappings.hl7_orders import OrderOptions
from routes.rules import compile_routes

log = logging.getLogger("gateway")

SHUTDOWN_GRACE = 8.0  # seconds for in-flight work; the process exits within 10 s
STOP_DEADLINE = 9.5  # past this the process exits anyway: what was acknowledged is on disk (docs/architecture.md rule 1)


def _force_exit() -> None:
    log.warning("gateway.stop_forced", extra=fields(after_seconds=STOP_DEADLINE))
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(0)


def known_ae_titles(c: Config) -> set[str]:
    """AE titles the configuration names: the only ones metrics label by name."""
    aes = set(c.dicom.allowed_calling_aes) | set(c.dicom.peers) | {c.worklist.default_station_ae}
    for access in c.dicom.services.values():
        aes |= set(access.allowed_calling_aes)
    for route in c.routes:
        aes |= set(route.match.calling_ae)
    aes |= {d.ae_title for d in c.destinations.values() if d.ae_title}
    return {a for a in aes if a}


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics(known_aes=known_ae_titles(config))
        data = storage_path(config)
        make_private(data)  # files 0600, folders 0700 (gateway/data_folder.py)
        self.store = open_configured_store(config)
        self.metrics.watch_worklist(self.store.count_worklist_by_status)
        self.spool = Spool(data, config.storage.min_free_bytes)
        self.metrics.watch_spool(self.store.instance_totals, self.spool.free_bytes)
        self.rules = compile_routes(config.routes)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Blocking store writes and SCU calls run here, never on the loop.
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dxagw-io")
        self.parse_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dxagw-parse")
        c = config
        self.dicom = DicomServer(c.dicom, self.store, self.metrics, self.spool, self.rules, self._on_stored, self._on_mpps_dose)
        options = OrderOptions(
            default_charset=c.hl7.default_charset,
            station_ae_field=c.hl7.station_ae_field,
            default_station_ae=c.worklist.default_station_ae,
            default_modality=c.worklist.default_modality,
        )
        self.entitlement = Entitlement(c.entitlement)
        self.hl7_intake = Hl7Intake(
            self.store, options, self.executor, self.metrics, allowed_senders=c.hl7.allowed_senders, entitlement=self.entitlement
        )
        self.mllp = MllpServer(
            c.hl7.host, c.hl7.port, self.hl7_intake.handle, self.metrics,
            max_bytes=c.hl7.max_message_bytes, idle_timeout=c.hl7.idle_timeout,
            max_connections=c.hl7.max_connections, max_buffered_bytes=c.hl7.max_buffered_bytes,
            refuse=self.hl7_intake.refuse_frame,
        )
        self.audit_trail = AuditForwarder(self.store, data, c.audit, source_id=c.audit.source_id or c.dicom.ae_title, our_address=c.dicom.host)
        self.dicom.on_security_event = self.audit_trail.record_later
        self.dicom.on_query = self.audit_trail.record_later
        self.mllp_tls = None
        if c.hl7.tls is not None:  # MLLP over TLS beside the plain port
            self.mllp_tls = MllpServer(
                c.hl7.host, c.hl7.tls.port, self.hl7_intake.handle, self.metrics,
                max_bytes=c.hl7.max_message_bytes, idle_timeout=c.hl7.idle_timeout,
                max_connections=c.hl7.max_connections, max_buffered_bytes=c.hl7.max_buffered_bytes,
                refuse=self.hl7_intake.refuse_frame,
            )
            self.mllp_tls.ssl_context = tls.for_listener(c.hl7.tls)
        self.oidc = OidcVerifier(c.security.oidc) if c.security.oidc is not None else None
        # workbench logins (README "The reporting workbench"): in this process's memory
        self.sessions = SessionStore(c.http.session_idle_minutes * 60)
        self.http_auth = HttpAuth(
            TokenRegistry(c.security.tokens),
            oidc=self.oidc.identity if self.oidc is not None else None,
            allowed_hosts=set(c.http.allowed_hosts) or default_allowed_hosts(c.http.host),
            metrics_public=c.http.metrics_public,
            audit=self.audit,
            tls=c.http.tls is not None,
            sessions=self.sessions,
        )
        self.http = HttpServer(
            c.http.host, c.http.port, self.store, self.metrics, self.executor, parse_executor=self.parse_executor,
            ready=self._ready, default_station_ae=c.worklist.default_station_ae,
            default_modality=c.worklist.default_modality, max_body_bytes=c.http.max_body_bytes,
            access=self.http_auth, ssl_context=tls.for_listener(c.http.tls),
        )
        self.metrics.watch_outbox(self.store.outbox_stats)
        self.metrics.watch_service(self.store.service_episodes)
        self.metrics.watch_certificates(
            {
                **{name: t.cert for name, t in (("dicom", c.dicom.tls), ("hl7", c.hl7.tls), ("http", c.http.tls)) if t is not None},
                **{f"destination:{n}": d.tls.cert for n, d in c.destinations.items() if d.tls is not None and d.tls.cert},
            }
        )
        self.sr_reader = SrReader(timeout=c.reports.reader_timeout_seconds, memory_limit_mb=c.reports.reader_memory_limit_mb)
        # One thread reads result objects in arrival order (an RDSR, the SRs and
        # the report images of a study meet here).
        self.exam_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dxagw-exams")
        self.exams = ExamService(
            self.store, data, c.reports, self.rules, self.metrics, self.wake_outbox, self.sr_reader,
            destination_types={name: d.type for name, d in c.destinations.items()},
            hl7_application=c.hl7.application, hl7_facility=c.hl7.facility, defer=self._defer, dose=c.dose,
        )
        self.priors = None
        if c.priors.sources:  # README "Priors from the PACS": earlier studies
            self.priors = PriorService(c, self.store, self.spool, self._on_stored, lambda exam_id: self._exam_submit(lambda: self.exams.priors_done(exam_id)))
            self.exams.priors = self.priors
        # scanner QA (README "Running a DXA service"): phantoms are not routed, not exams; MWL blocked on a fail
        self.qa = QaService(self.store, c.qa)
        self.exams.qa = self.qa
        self.dicom.storage.is_phantom = self.qa.is_phantom
        self.dicom.mwl.blocked_stations = self.qa.blocked_stations
        qa_api.register(self.http.app, self.qa, self.executor)
        self.metrics.registry.register(QaCollector(self.qa))
        exams_api.register(self.http.app, self.exams, self.executor)
        Workbench(
            self.exams, self.executor, self.sessions, self.http_auth, oidc=self.oidc,
            login=c.security.oidc.login if c.security.oidc is not None else None, tls=c.http.tls is not None,
        ).register(self.http.app)
        exam_views.register(self.http.app, self.exams, self.executor, audit=self.audit)  # the workbench's images, trend, PDF
        self.http.entitlement = self.entitlement
        service_api.register(self.http.app, self.store, self.entitlement, self.executor)
        priors_api.register(self.http.app, self.store, self.executor, c.priors)
        self.metrics.registry.register(priors_api.PriorsCollector(self.store))
        self.dispatcher = Dispatcher(c, self.store, data, self.executor, self.metrics, report_payload=self.exams.payload)
        self.http.dispatcher = self.dispatcher
        self.http.destination_config = c.destinations
        self._running = False

    def _ready(self) -> dict[str, bool]:
        return {"dicom": self._running and self.dicom._server is not None, "hl7": self._running and self.mllp._server is not None}

    async def audit(self, event: str, actor: str, detail: dict) -> None:
        """Record a security event in the audit trail (from the loop, without waiting for the disk)."""
        self.audit_trail.record_later(event, actor, detail)

    def wake_outbox(self) -> None:
        """New outbox rows are committed (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.dispatcher.wake)

    def _on_stored(self, kind: str, row_id: int) -> None:
        """Called from a pynetdicom thread after an instance is committed
        (its C-STORE success is answered without waiting for what follows)."""
        self.wake_outbox()
        if kind in RESULT_KINDS:
            self.exam_executor.submit(self.exams.on_stored, kind, row_id)

    def _exam_submit(self, fn) -> None:
        try:
            self.exam_executor.submit(fn)
        except RuntimeError:  # shutting down: the next start takes it up
            pass

    def _defer(self, seconds: float, fn) -> None:
        """Run ``fn`` in the exam thread after ``seconds`` (the settle window)."""

        def submit() -> None:
            try:
                self.exam_executor.submit(fn)
            except RuntimeError:  # shutting down: the next start drafts it
                pass

        timer = threading.Timer(seconds, submit)
        timer.daemon = True
        timer.start()

    def _on_mpps_dose(self, study_uid: str, dose: dict) -> None:
        """An MPPS carried dose attributes (called from a pynetdicom thread)."""
        self.exam_executor.submit(self.exams.on_mpps_dose, study_uid, dose)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.sr_reader.start()
        self.audit_trail.start()
        removed = self.spool.clean_incoming()
        if removed:
            log.warning("spool.partial_files_removed", extra=fields(count=removed))
        # Objects acknowledged before a crash but not read yet, and exams whose
        # settle window was running: taken up before new objects arrive.
        self.exam_executor.submit(self.exams.resume)
        if self.priors is not None:
            self.exam_executor.submit(self.priors.resume)
        await loop.run_in_executor(self.executor, self.dicom.start)
        await self.mllp.start()
        if self.mllp_tls is not None:
            await self.mllp_tls.start()
        await self.http.start()
        await self.dispatcher.start()
        self._running = True
        if not self.http_auth.configured:
            log.warning("security.no_identities", extra=fields(hint=HOW_TO_ADD))
        log.info(
            "gateway.started",
            extra=fields(
                ae_title=self.config.dicom.ae_title, dicom_port=self.dicom.port, hl7_port=self.mllp.port,
                http_port=self.http.port, schema=self.store.schema_version,
                dicom_tls_port=self.dicom.tls_port, hl7_tls_port=self.mllp_tls.port if self.mllp_tls else None, https=self.config.http.tls is not None,
            ),
        )

    async def stop(self) -> None:
        """Stop accepting, finish in-flight work, close the store."""
        self._running = False
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            self.mllp.stop(grace=SHUTDOWN_GRACE),
            *([self.mllp_tls.stop(grace=SHUTDOWN_GRACE)] if self.mllp_tls is not None else []),
            loop.run_in_executor(None, self.dicom.stop, SHUTDOWN_GRACE),
        )
        await self.dispatcher.stop()
        await self.http.stop()
        if self.priors is not None:
            self.priors.close()
        await loop.run_in_executor(None, lambda: self.exam_executor.shutdown(wait=True))
        await loop.run_in_executor(None, self.sr_reader.close)
        self.executor.shutdown(wait=True)
        self.parse_executor.shutdown(wait=True)
        await loop.run_in_executor(None, self.audit_trail.stop)
        self.store.close()
        log.info("gateway.stopped")

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("gateway.stopping")
        # A peer that holds a socket or a thread cannot keep the process up
        # past the README's 10 s (a SIGTERM once waited 41 s).
        watchdog = threading.Timer(STOP_DEADLINE, _force_exit)
        watchdog.daemon = True
        watchdog.start()
        await self.stop()
