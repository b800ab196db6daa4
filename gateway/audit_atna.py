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

The messages themselves are built in mappings/atna.py.  The events:
user authentication (success, failure), patient record (order created,
updated, merged, cancelled), DICOM instances transferred (in and out),
query (MWL C-FIND), export (report sent), security alert (refused
association, bad credential, refused sender, forbidden).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from gateway.logs import fields
from mappings.atna import events_for, to_xml

log = logging.getLogger("gateway.audit")

AUDIT_GAP_WAIT = 10.0  # seconds a gap in the audit ids may take to fill (a transaction still committing)
PRI = 10 * 8 + 5  # RFC 5424 6.2.1: facility 10 (security/authorization), severity 5 (notice)
BOM = "\ufeff"  # RFC 5424 6.4: MSG as UTF-8 starts with a BOM


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
        self._gaps: dict[int, float] = {}  # audit id not seen yet -> when its gap was first seen
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
        """Send what is new; False when the collector could not be reached.

        Replicas on one database (storage.database) share the cursor file in
        the shared folder: they forward in turn, under the store's
        ``exclusive("atna")``, so each row is sent once.
        """
        with self.store.exclusive("atna"):
            return self._forward_rows()

    def _contiguous(self, cursor: int, rows: list[dict]) -> list[dict]:
        """The rows up to the first gap in the ids that may still fill.

        PostgreSQL hands out ids when rows are inserted, not when they are
        committed: a gap is a transaction still running (its row comes) or
        one rolled back (it never does).  A gap is waited for up to
        AUDIT_GAP_WAIT seconds, then passed.
        """
        out, expect = [], cursor + 1
        for row in rows:
            if row["id"] != expect:
                first_seen = self._gaps.setdefault(expect, time.monotonic())
                if time.monotonic() - first_seen < AUDIT_GAP_WAIT:
                    break
                self._gaps.pop(expect, None)
            out.append(row)
            expect = row["id"] + 1
        for filled in [k for k in self._gaps if k < expect]:
            del self._gaps[filled]
        return out

    def _forward_rows(self) -> bool:
        cursor = self._load_cursor()
        while not self._stop.is_set():
            rows = self._contiguous(cursor, self.store.audit_since(cursor, 200))
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
