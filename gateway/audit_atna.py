"""The audit trail a hospital can collect: IHE ATNA over syslog.

Every security-relevant event is first a row in the store's ``audit`` table
(written in the same transaction as what it records, where there is one).
:class:`AuditForwarder` tails that table and sends each row it knows as a
DICOM audit message (PS3.15 A.5, the XML of A.5.1) in an RFC 5424 syslog
message over UDP (RFC 5426), TCP (RFC 6587 octet counting) or TLS
(RFC 5425), as IHE ITI-20 asks: facility authpriv (10), severity notice (5),
MSGID ``IHE+RFC-3881``.  Its cursor (the last row sent) is kept in a file
next to the store, so an outage of the collector loses nothing: the rows
wait in the table.  ``record_later`` takes events (MWL queries) whose row
need not be committed before the peer is answered.

The events (PS3.15 A.5.3, codes from PS3.16 CID 400-403):
user authentication (success, failure), patient record (order created,
updated, merged, cancelled), DICOM instances transferred (in and out),
query (MWL C-FIND), export (report sent), security alert (refused
association, bad credential, refused sender, forbidden).
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import quoteattr

from gateway.logs import fields

log = logging.getLogger("gateway.audit")

PRI = 10 * 8 + 5  # RFC 5424 6.2.1: facility 10 (security/authorization), severity 5 (notice)
BOM = "\ufeff"  # RFC 5424 6.4: MSG as UTF-8 starts with a BOM


@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1: csd-code, codeSystemName, originalText)."""

    code: str
    system: str
    meaning: str

    def xml(self, tag: str) -> str:
        return f"<{tag} csd-code={quoteattr(self.code)} codeSystemName={quoteattr(self.system)} originalText={quoteattr(self.meaning)}/>"


# PS3.16 CID 400 Audit Event ID
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
PATIENT_RECORD = Code("110110", "DCM", "Patient Record")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
QUERY = Code("110112", "DCM", "Query")
EXPORT = Code("110106", "DCM", "Export")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
# CID 401 Audit Event Type Code
LOGIN = Code("110122", "DCM", "Login")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")
# CID 402 Audit Active Participant Role ID
SOURCE = Code("110153", "DCM", "Source Role ID")
DESTINATION = Code("110152", "DCM", "Destination Role ID")
APPLICATION = Code("110150", "DCM", "Application")
# PS3.15 A.5.2 / RFC 3881 Participant Object ID Type Codes
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
STUDY_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
NODE_ID = Code("110182", "DCM", "Node ID")
REPORT_NUMBER = Code("9", "RFC-3881", "Report Number")

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"


@dataclass(frozen=True)
class Participant:
    """PS3.15 A.5.2.2 ActiveParticipant."""

    user_id: str
    requestor: bool
    role: Code | None = None
    address: str = ""  # NetworkAccessPointID (IP address, type 2)

    def xml(self) -> str:
        attrs = f"UserID={quoteattr(self.user_id or '-')} UserIsRequestor={quoteattr('true' if self.requestor else 'false')}"
        if self.address:
            attrs += f" NetworkAccessPointID={quoteattr(self.address)} NetworkAccessPointTypeCode=\"2\""
        inner = self.role.xml("RoleIDCode") if self.role else ""
        return f"<ActiveParticipant {attrs}>{inner}</ActiveParticipant>"


@dataclass(frozen=True)
class ParticipantObject:
    """PS3.15 A.5.2.5 ParticipantObjectIdentification."""

    object_id: str
    type_code: str  # 1 person, 2 system object, 3 organization, 4 other
    role: str  # e.g. 1 patient, 3 report, 4 domain resource, 13 security resource, 24 query
    id_type: Code
    name: str = ""
    query: bytes = b""
    details: tuple[tuple[str, str], ...] = ()
    descriptions: tuple[str, ...] = ()

    def xml(self) -> str:
        attrs = f"ParticipantObjectID={quoteattr(self.object_id or '-')} ParticipantObjectTypeCode={quoteattr(self.type_code)} ParticipantObjectTypeCodeRole={quoteattr(self.role)}"
        inner = self.id_type.xml("ParticipantObjectIDTypeCode")
        if self.name:
            inner += f"<ParticipantObjectName>{_text(self.name)}</ParticipantObjectName>"
        if self.query:
            inner += f"<ParticipantObjectQuery>{base64.b64encode(self.query).decode()}</ParticipantObjectQuery>"
        for key, value in self.details:
            inner += f"<ParticipantObjectDetail type={quoteattr(key)} value={quoteattr(base64.b64encode(value.encode()).decode())}/>"
        for text in self.descriptions:
            inner += f"<ParticipantObjectDescription>{_text(text)}</ParticipantObjectDescription>"
        return f"<ParticipantObjectIdentification {attrs}>{inner}</ParticipantObjectIdentification>"


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class AuditEvent:
    event_id: Code
    action: str  # C R U D E
    at: str
    outcome: str
    participants: tuple[Participant, ...]
    objects: tuple[ParticipantObject, ...] = ()
    type_code: Code | None = None
    outcome_description: str = ""


def to_xml(e: AuditEvent, source_id: str, site_id: str = "") -> str:
    """The AuditMessage of PS3.15 A.5.1 (one line, UTF-8)."""
    ev = f"<EventIdentification EventActionCode={quoteattr(e.action)} EventDateTime={quoteattr(e.at)} EventOutcomeIndicator={quoteattr(e.outcome)}>"
    ev += e.event_id.xml("EventID")
    if e.type_code is not None:
        ev += e.type_code.xml("EventTypeCode")
    if e.outcome_description:
        ev += f"<EventOutcomeDescription>{_text(e.outcome_description)}</EventOutcomeDescription>"
    ev += "</EventIdentification>"
    site = f" AuditEnterpriseSiteID={quoteattr(site_id)}" if site_id else ""
    # A.5.2.3 AuditSourceTypeCode 4: application server process tier
    src = f"<AuditSourceIdentification AuditSourceID={quoteattr(source_id)}{site}><AuditSourceTypeCode csd-code=\"4\" codeSystemName=\"DCM\" originalText=\"Application Server\"/></AuditSourceIdentification>"
    body = ev + "".join(p.xml() for p in e.participants) + src + "".join(o.xml() for o in e.objects)
    return f'<?xml version="1.0" encoding="UTF-8"?><AuditMessage>{body}</AuditMessage>'


# -- from audit rows to audit events ------------------------------------------


def _split_actor(actor: str) -> tuple[str, str]:
    """("name", "address") of "name@address" (the address without a port)."""
    name, _, where = actor.rpartition("@") if "@" in actor else (actor, "", "")
    host = where.rsplit(":", 1)[0] if where.count(":") == 1 else where
    return name, host


def _iso(at: str) -> str:
    return at if ("+" in at[10:] or at.endswith("Z")) else at + "Z"


def events_for(row: dict, us: str, our_address: str = "") -> list[AuditEvent]:
    """The ATNA events of one audit row: a bad credential is a failed user
    authentication and a security alert; most rows are one event; rows ATNA
    does not ask for, none."""
    if row["event"] == "auth.failure":
        alert = event_for({**row, "event": "auth.bad_credential"}, us, our_address)
        return [e for e in (event_for(row, us, our_address), alert) if e is not None]
    one = event_for(row, us, our_address)
    return [one] if one is not None else []


def event_for(row: dict, us: str, our_address: str = "") -> AuditEvent | None:
    """The ATNA event of one audit row, or None for rows ATNA does not ask for."""
    event, actor, d, at = row["event"], row["actor"], row["detail"], _iso(row["at"])
    gateway = Participant(us, False, APPLICATION, our_address)
    name, address = _split_actor(actor)

    if event in ("auth.success", "auth.failure"):
        ok = event == "auth.success"
        who = Participant(name if ok else f"unknown ({d.get('reason', '')})", True, None, d.get("remote", address))
        return AuditEvent(USER_AUTHENTICATION, "E", at, SUCCESS if ok else MINOR_FAILURE, (who, gateway), type_code=LOGIN, outcome_description="" if ok else str(d.get("reason", ""))[:200])
    if event in ("auth.bad_credential", "http.refused", "http.forbidden", "dicom.association_refused", "dicom.tls_refused", "hl7.sender_refused"):
        kind = RESTRICTED_FUNCTION if event.startswith("http.") else NODE_AUTHENTICATION
        who = Participant(name, True, None, d.get("remote", address))
        what = ParticipantObject(str(d.get("path") or d.get("called_ae") or d.get("type") or event), "2", "13", NODE_ID, descriptions=(str(d.get("reason", "")) or event,))
        return AuditEvent(SECURITY_ALERT, "E", at, MINOR_FAILURE, (who, gateway), (what,), type_code=kind, outcome_description=str(d.get("reason", event))[:200])
    patient = d.get("patient_id", "")
    if event.startswith(("hl7.", "fhir.")) or event in ("worklist.create", "worklist.bulk_create", "worklist.status"):
        msg_type = event.split(".", 1)[1]
        if event == "worklist.status":
            action, what = "U", f"status {d.get('status', '')}"
        elif "A40" in msg_type or "A34" in msg_type or "A39" in msg_type:
            action, what = "U", "patients merged"
        elif msg_type.startswith("ADT"):
            action, what = "U", "patient updated"
        else:
            action, what = "C", "order created or changed"
        who = Participant(name, True, SOURCE, address)
        items = d.get("items") if isinstance(d.get("items"), list) else [d.get("id")]
        obj = ParticipantObject(patient or ",".join(str(i) for i in items if i is not None) or "-", "1", "1", PATIENT_NUMBER, details=(("worklist_items", ",".join(str(i) for i in items if i is not None)), ("message_id", str(d.get("message_id", "")))), descriptions=(what, msg_type))
        return AuditEvent(PATIENT_RECORD, action, at, SUCCESS, (who, Participant(us, False, DESTINATION, our_address)), (obj,))
    if event == "instance.received":
        who = Participant(name, True, SOURCE, address)
        study = ParticipantObject(d.get("study_uid", ""), "2", "3", STUDY_UID, descriptions=(f"{d.get('count', 1)} instance(s) of {d.get('sop_class', '')}",))
        pat = ParticipantObject(patient or "-", "1", "1", PATIENT_NUMBER)
        return AuditEvent(INSTANCES_TRANSFERRED, "C", at, SUCCESS, (who, Participant(us, False, DESTINATION, our_address)), (study, pat))
    if event == "outbox.delivered":
        dest = Participant(d.get("destination", name), False, DESTINATION, d.get("host", ""))
        src = Participant(us, True, SOURCE, our_address)
        if d.get("kind") == "report":
            report = ParticipantObject(str(d.get("ref_id", "")), "2", "3", REPORT_NUMBER, descriptions=("report sent",))
            pat = ParticipantObject(patient or "-", "1", "1", PATIENT_NUMBER)
            return AuditEvent(EXPORT, "R", at, SUCCESS, (src, dest), (report, pat))
        if d.get("ref_table") == "instances":
            study = ParticipantObject(d.get("study_uid", "") or "-", "2", "3", STUDY_UID, descriptions=(f"{d.get('kind', '')} sent",))
            pat = ParticipantObject(patient or "-", "1", "1", PATIENT_NUMBER)
            return AuditEvent(INSTANCES_TRANSFERRED, "R", at, SUCCESS, (src, dest), (study, pat))
        return None
    if event == "dicom.query":
        who = Participant(name, True, SOURCE, address)
        q = ParticipantObject(d.get("sop_class", ""), "2", "24", SOP_CLASS_UID, query=base64.b64decode(d.get("query", "") or b""), details=(("TransferSyntax", d.get("transfer_syntax", "")),))
        return AuditEvent(QUERY, "E", at, SUCCESS, (who, Participant(us, False, DESTINATION, our_address)), (q,))
    return None


# -- syslog ---------------------------------------------------------------------


def syslog_message(xml: str, hostname: str, app: str = "dxa-gateway", at: datetime | None = None) -> bytes:
    """RFC 5424 6: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG."""
    stamp = (at or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{PRI}>1 {stamp} {hostname or '-'} {app} {os.getpid()} IHE+RFC-3881 - "
    return (header + BOM + xml).encode("utf-8")


class SyslogSender:
    """One connection (or socket) to the collector; ``send`` raises OSError on failure."""

    def __init__(self, host: str, port: int, transport: str, context: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        self.host, self.port, self.transport, self.context, self.timeout = host, port, transport, context, timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            if self.transport == "udp":
                self._sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
            else:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                if self.transport == "tls":
                    sock = self.context.wrap_socket(sock, server_hostname=self.host)
                self._sock = sock
        return self._sock

    def _peer_closed(self) -> bool:
        """The collector closed our stream (TCP/TLS): a write would vanish into the buffer."""
        import select

        sock = self._sock
        if sock is None or self.transport == "udp":
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.setblocking(False)
            try:
                return sock.recv(1) == b""  # a collector sends nothing; readable means closed
            finally:
                sock.settimeout(self.timeout)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except OSError:
            return True

    def send(self, message: bytes) -> None:
        try:
            if self._peer_closed():
                self.close()
            sock = self._connect()
            if self.transport == "udp":
                sock.sendto(message, (self.host, self.port))  # RFC 5426: one message per datagram
            else:
                sock.sendall(f"{len(message)} ".encode() + message)  # RFC 5425 4.3 / RFC 6587 3.4.1 octet counting
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


class AuditForwarder:
    """Writes deferred audit rows and forwards audit rows to syslog, in one thread."""

    def __init__(self, store, data_dir: Path, settings, *, source_id: str, our_address: str = "") -> None:
        self.store = store
        self.settings = settings  # gateway.config.AuditSettings
        self.source_id = source_id
        self.our_address = our_address
        self.cursor_file = data_dir / "atna.cursor"
        self._later: queue.Queue = queue.Queue(maxsize=100000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.sender: SyslogSender | None = None
        sl = settings.syslog if settings is not None else None
        if sl is not None:
            context = None
            if sl.transport == "tls":
                from gateway.security.tls import client_context

                context = client_context(sl.ca, sl.cert, sl.key, check_hostname=sl.check_hostname)
            self.sender = SyslogSender(sl.host, sl.port, sl.transport, context)

    # -- from any thread -----------------------------------------------------

    def record_later(self, event: str, actor: str, detail: dict) -> None:
        """Queue an audit row to be written soon (never blocks; counts a drop if full)."""
        try:
            self._later.put_nowait((event, actor, detail))
        except queue.Full:
            log.warning("audit.queue_full", extra=fields(event=event))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- the thread -------------------------------------------------------------

    def start(self) -> None:
        if self.sender is not None and not self.cursor_file.exists():
            # First start with syslog: forward from now on (the table keeps the past).
            self._save_cursor(self.store.max_audit_id())
        self._thread = threading.Thread(target=self._run, name="dxagw-audit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.sender is not None:
            self.sender.close()

    def _load_cursor(self) -> int:
        try:
            return int(self.cursor_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _save_cursor(self, value: int) -> None:
        tmp = self.cursor_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(str(value))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.cursor_file)

    def _write_later(self) -> None:
        rows = []
        while True:
            try:
                rows.append(self._later.get_nowait())
            except queue.Empty:
                break
        if rows:
            self.store.audit_many(rows)

    def _with_patient(self, row: dict) -> dict:
        """A patient-record row with the patient ID of the worklist items it names."""
        d = row["detail"]
        if d.get("patient_id") or not (row["event"].startswith(("hl7.", "fhir.", "worklist."))):
            return row
        ids = d.get("items") if isinstance(d.get("items"), list) else [d.get("id")]
        patients = []
        for item_id in ids[:20]:
            item = self.store.get_worklist_item(item_id) if isinstance(item_id, int) else None
            if item is not None and item.item.patient_id not in patients:
                patients.append(item.item.patient_id)
        return {**row, "detail": {**d, "patient_id": ",".join(patients)}} if patients else row

    def _forward(self) -> bool:
        """Send what is new; False when the collector could not be reached."""
        cursor = self._load_cursor()
        while not self._stop.is_set():
            rows = self.store.audit_since(cursor, 200)
            if not rows:
                return True
            hostname = socket.gethostname()
            for row in rows:
                for event in events_for(self._with_patient(row), self.source_id, self.our_address):
                    xml = to_xml(event, self.source_id, self.settings.site_id)
                    try:
                        self.sender.send(syslog_message(xml, hostname))
                    except OSError as exc:
                        log.warning("audit.syslog_unreachable", extra=fields(error=type(exc).__name__))
                        self._save_cursor(cursor)
                        return False
                    self.sent += 1
                cursor = row["id"]
            self._save_cursor(cursor)
        return True

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._write_later()
                if self.sender is not None:
                    if self._forward():
                        backoff = 1.0
                    else:
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
            except Exception:
                log.exception("audit.forward_error")
                self._stop.wait(1.0)
        try:
            self._write_later()
            if self.sender is not None:
                self._forward()
        except Exception:
            log.exception("audit.forward_error")
