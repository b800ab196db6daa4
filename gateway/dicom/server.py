"""The DICOM listener: one pynetdicom AE serving the gateway's SCP roles.

pynetdicom runs each association in its own thread; handlers here stay
synchronous, read or write through the thread-safe store and answer the
peer (docs/architecture.md rule 4).
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
import weakref

from typing import Callable

import dicomext
from dicomext import association, incoming
from dicomext import transport as pdu_transport
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    Verification,
)

from gateway.config import DicomSettings
from gateway.dicom.commitment import CommitmentScp
from gateway.dicom.mpps import MppsScp
from gateway.dicom.mwl import MWL_UID, WorklistFindHandler
from gateway.dicom.storage import StorageScp
from gateway.logs import fields
from gateway.security import tls
from gateway.security.peers import PeerCertificate, dicom_refusal
from gateway.metrics import Metrics
from gateway.spool import Spool
from gateway.store import Store
from mappings.instances import STORAGE_SOP_CLASSES
from routes.rules import Rule

log = logging.getLogger("gateway.dicom")

# Which service each abstract syntax belongs to, for per-service access.
SERVICE_OF = {
    str(Verification): "verification",
    str(ModalityWorklistInformationFind): "worklist",
    str(ModalityPerformedProcedureStep): "mpps",
    str(StorageCommitmentPushModel): "commitment",
}
# What a DXA scanner sends objects in (PS3.5 Annex A): stored as received.
STORAGE_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
]


def use_spool_for_incoming(spool: Spool) -> None:
    """Have pynetdicom stream C-STORE datasets into the spool's incoming/.

    With STORE_RECV_CHUNKED_DATASET pynetdicom writes each dataset (with file
    meta) to a NamedTemporaryFile as it arrives; an :class:`IncomingFile` on
    the spool's file system takes its place, so the handler keeps it by a
    link, without a copy, and has its sha256 without reading it back.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    incoming.use(spool.incoming_file)


def no_dataset_logging() -> None:
    """Stop pynetdicom formatting what its logger (at WARNING here) would drop.

    By default it decodes every C-FIND request identifier again and
    pretty-prints it and every response identifier, and binds "standard"
    handlers that format each PDU and DIMSE message, whatever the log level:
    ~0.2 ms of CPU per worklist response on a 2-core VM (a 22-match station
    query: 82 -> 78 ms).  Those lines carry patient data, which our logs
    never do (docs/architecture.md rule 8); warnings and errors are still logged.
    """
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


class ConnectionLimit:
    """At most ``per_address`` open connections from one source address.

    Installed as the server's ``verify_request`` (the socketserver hook run
    on each accepted socket): a connection over the cap is closed at once,
    before pynetdicom gives it a thread or an association slot, so one
    address holding idle sockets cannot use up ``maximum_associations``.
    A socket counts until it is closed (pynetdicom closes it when the
    association ends).
    """

    def __init__(self, per_address: int, metrics: Metrics) -> None:
        self.per_address = per_address
        self.metrics = metrics
        self._open: dict[str, weakref.WeakSet] = {}
        self._lock = threading.Lock()

    def __call__(self, request, client_address) -> bool:
        host = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        with self._lock:
            if len(self._open) > 1000:  # forget addresses with nothing open
                self._open = {h: held for h, held in self._open.items() if self._live(held)}
            held = self._open.setdefault(host, weakref.WeakSet())
            if self._live(held) >= self.per_address:
                refused = True
            else:
                held.add(request)
                refused = False
        if refused:
            self.metrics.dicom_connections_refused.labels("per_address_limit").inc()
            log.warning("dicom.connection_refused", extra=fields(reason="max_connections_per_address", peer=host, limit=self.per_address))
        return not refused

    @staticmethod
    def _live(held: weakref.WeakSet) -> int:
        for sock in list(held):
            if sock.fileno() == -1:
                held.discard(sock)
        return len(held)



class DicomServer:
    def __init__(
        self,
        settings: DicomSettings,
        store: Store,
        metrics: Metrics,
        spool: Spool,
        rules: tuple[Rule, ...] = (),
        notify: Callable[[str, int], None] = lambda kind, row_id: None,
        mpps_dose: Callable[[str, dict], None] = lambda study_uid, dose: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.mwl = WorklistFindHandler(store, settings.worklist, metrics)
        self.storage = StorageScp(settings, spool, store, rules, metrics, notify)
        self.mpps = MppsScp(store, rules, metrics, on_dose=mpps_dose)
        self.commitment = CommitmentScp(settings, spool, store, metrics)
        self.storage_classes = set(STORAGE_SOP_CLASSES) | set(settings.storage.extra_sop_classes)
        use_spool_for_incoming(spool)
        no_dataset_logging()
        pdu_transport.set_limit(settings.maximum_pdu_size)
        dicomext.install()  # pynetdicom extensions: logged where one stays off
        self.ae = self._make_ae()
        # (event, actor, detail) -> None, from pynetdicom's threads: the audit trail.
        self.on_security_event: Callable[[str, str, dict], None] = lambda event, actor, detail: store.audit(event, actor, detail)
        self.on_query: Callable[[str, str, dict], None] = lambda event, actor, detail: None  # set by the Gateway
        self._server = None
        self._tls_server = None
        self.port = settings.port
        self.tls_port = settings.tls.port if settings.tls else None

    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_pdu_size = s.maximum_pdu_size
        ae.maximum_associations = s.maximum_associations
        ae.network_timeout = s.network_timeout
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.add_supported_context(Verification)
        ae.add_supported_context(ModalityWorklistInformationFind)
        ae.add_supported_context(ModalityPerformedProcedureStep)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        for uid in sorted(self.storage_classes):
            ae.add_supported_context(uid, STORAGE_TRANSFER_SYNTAXES)
        return ae

    def service_of(self, abstract_syntax: str) -> str:
        if abstract_syntax in self.storage_classes:
            return "storage"
        return SERVICE_OF.get(abstract_syntax, "other")

    def start(self) -> None:
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_connect),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_SOP_EXTENDED, self._on_sop_extended),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_STORE, self.storage.handle),
            (evt.EVT_N_CREATE, self.mpps.handle_create),
            (evt.EVT_N_SET, self.mpps.handle_set),
            (evt.EVT_N_ACTION, self.commitment.handle_action),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        self._server = self.ae.start_server(
            (self.settings.host, self.settings.port), block=False, evt_handlers=handlers
        )
        self._server.verify_request = ConnectionLimit(self.settings.max_connections_per_address, self.metrics)
        self.port = self._server.server_address[1]
        if self.settings.tls is not None:  # DICOM TLS beside the plain port (PS3.15 B.9)
            context = tls.for_listener(self.settings.tls, lazy_handshake=True)
            context.on_failure = self._on_tls_failure
            self._tls_server = self.ae.start_server(
                (self.settings.host, self.settings.tls.port), block=False, evt_handlers=handlers, ssl_context=context
            )
            self._tls_server.verify_request = self._server.verify_request  # one per-address count for both ports
            self.tls_port = self._tls_server.server_address[1]

    def stop(self, grace: float = 8.0) -> None:
        """Stop accepting; let requests in flight finish, then end every association.

        Bounded whatever peers do (README: SIGTERM ends within 10 s): a
        connection still setting up, or an established association with
        nothing in flight, is closed at once; one receiving or serving a
        request gets up to ``grace`` seconds, then is aborted; a peer that
        then neither reads nor closes has its connection shut under it.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        if self._tls_server is not None:
            self._tls_server.shutdown()
            self._tls_server = None
        deadline = time.monotonic() + grace
        for assoc in self.ae.active_associations:
            if not assoc.is_established:
                association.shut_socket(assoc)
        while time.monotonic() < deadline and any(association.in_flight(a) for a in self.ae.active_associations):
            time.sleep(0.05)
        remaining = list(self.ae.active_associations)
        for assoc in remaining:
            if assoc.is_established:
                assoc.abort(block=False)  # PS3.8 7.3: A-ABORT, then close
        end = time.monotonic() + 0.5
        while time.monotonic() < end and any(a.is_alive() for a in remaining):
            time.sleep(0.02)
        for assoc in remaining:
            association.end(assoc)
        end = time.monotonic() + 1.0
        for assoc in remaining:  # DUL threads are not daemons: they must end
            association.join(assoc, end)

    # -- association events --------------------------------------------------

    def _on_connect(self, event: evt.Event) -> None:
        s = self.settings
        # PS3.8 9.1.5: the ARTIM timer bounds the wait for the A-ASSOCIATE-RQ
        # (pynetdicom uses acse_timeout); dicomext/transport.py bounds each
        # read and the whole request by the set-up deadline.
        pdu_transport.set_setup_deadline(
            event.assoc,
            time.monotonic() + s.association_setup_timeout,
            artim_timeout=min(s.acse_timeout, s.association_setup_timeout),
        )
        sock = association.raw_socket(event.assoc)
        if sock is not None:
            try:
                # pynetdicom's accepted sockets block with no timeout, sends included.
                sock.settimeout(s.network_timeout)
                # pynetdicom leaves Nagle on: every response would wait for a delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def _allowed(self, calling: str, service: str) -> bool:
        s = self.settings
        if s.allowed_calling_aes and calling not in s.allowed_calling_aes:
            return False
        access = s.services.get(service)
        return not access or not access.allowed_calling_aes or calling in access.allowed_calling_aes

    def _on_requested(self, event: evt.Event) -> None:
        """Refuse at association a calling AE allowed none of what it asks.

        PS3.8 9.3.4: A-ASSOCIATE-RJ, rejected-permanent, DUL service user,
        "calling AE title not recognized".  Contexts for services it may not
        use are removed, so they are rejected and the rest accepted.
        """
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        if self._refused_peer(assoc, calling):
            return
        proposed = assoc.requestor.primitive.presentation_context_definition_list
        wanted = {self.service_of(str(cx.abstract_syntax)) for cx in proposed}
        allowed = {svc for svc in wanted if svc != "other" and self._allowed(calling, svc)}
        if not allowed:
            log.warning("dicom.association_refused", extra=fields(calling_ae=calling, reason="calling AE not allowed", services=sorted(wanted)))
            self.metrics.associations.labels(self.metrics.ae_label(calling), "refused").inc()
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            association.flush(assoc)
            return
        if allowed != wanted - {"other"}:
            assoc.acceptor.supported_contexts = [
                cx for cx in self.ae.supported_contexts if self.service_of(str(cx.abstract_syntax)) in allowed
            ]

    def _on_tls_failure(self, address: str, reason: str) -> None:
        """A TLS handshake on the DICOM TLS port failed (no or a foreign certificate, not TLS)."""
        log.warning("dicom.tls_refused", extra=fields(address=address, reason=reason))
        self.on_security_event("dicom.tls_refused", f"?@{address}", {"reason": f"TLS: {reason}"[:200]})

    def _find(self, event: evt.Event):
        """MWL C-FIND, audited as a Query (PS3.15 A.5.3.10) with the identifier as received."""
        try:
            identifier = event.request.Identifier
            raw = identifier.getvalue() if identifier is not None else b""
            self.on_query(
                "dicom.query",
                f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}",
                {"sop_class": str(event.request.AffectedSOPClassUID), "transfer_syntax": str(event.context.transfer_syntax), "query": base64.b64encode(raw[:65536]).decode()},
            )
        except Exception:
            log.exception("dicom.audit_failed")
        yield from self.mwl.handle(event)

    def _refused_peer(self, assoc, calling: str) -> bool:
        """Reject (and audit) a called AE that is not ours, or a known calling
        AE from an address or certificate dicom.peers does not allow it
        (gateway/security/peers.py; PS3.8 9.3.4 reasons 0x07 / 0x03)."""
        called = assoc.requestor.primitive.called_ae_title.strip()
        address = assoc.requestor.address
        cert = PeerCertificate.of(association.raw_socket(assoc))
        refusal = dicom_refusal(self.settings, called, calling, address, cert)
        if refusal is None:
            return False
        log.warning("dicom.association_refused", extra=fields(calling_ae=calling, called_ae=called, address=address, reason=refusal.text))
        self.metrics.associations.labels(self.metrics.ae_label(calling), "refused").inc()
        try:
            self.on_security_event("dicom.association_refused", f"{calling}@{address}", {"called_ae": called, "reason": refusal.text, "tls_subject": cert.subject})
        except Exception:
            log.exception("dicom.audit_failed")
        assoc.acse.send_reject(0x01, 0x01, refusal.reason)
        association.flush(assoc)
        return True

    @staticmethod
    def _on_close(event: evt.Event) -> None:
        assoc = event.assoc
        incoming.discard_partial(assoc)
        if assoc.is_acceptor and not assoc.is_established:
            # A connection closed before any A-ASSOCIATE-RQ (a load balancer's
            # health check, a port scan): its association thread would wait
            # out the whole ACSE timeout, counting against maximum_associations.
            association.wake_unestablished(assoc)

    def _on_accepted(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.ae_title.strip()
        self.metrics.associations.labels(self.metrics.ae_label(calling), "accepted").inc()

    def _on_rejected(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.ae_title.strip()
        self.metrics.associations.labels(self.metrics.ae_label(calling), "rejected").inc()
        log.warning("dicom.association_rejected", extra=fields(calling_ae=calling))

    def _on_aborted(self, event: evt.Event) -> None:
        calling = (event.assoc.requestor.ae_title or "").strip()
        self.metrics.associations.labels(self.metrics.ae_label(calling), "aborted").inc()

    @staticmethod
    def _on_sop_extended(event: evt.Event) -> dict:
        """Accept the C-FIND extended negotiation bytes we implement.

        PS3.4 B.3.1 / Table K.3-1: byte 1 relational queries (no), byte 2
        combined date-time matching (yes), byte 3 fuzzy semantic matching of
        person names (yes: case-insensitive).
        """
        out = {}
        for uid, info in (event.app_info or {}).items():
            if str(uid) == MWL_UID and info:
                data = bytearray(info[:3].ljust(3, b"\x00"))
                data[0] = 0
                out[uid] = bytes(data)
        return out

    @staticmethod
    def _on_echo(event: evt.Event) -> int:
        return 0x0000  # PS3.7 9.3.5: Success

