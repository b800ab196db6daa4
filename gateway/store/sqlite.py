"""The SQLite store: WAL, synchronous=FULL, one writer, a reader per thread.

Thread-safe: pynetdicom's handler threads and the asyncio side's executor
both call it (DESIGN.md rule 4).  Every write is one transaction that is
durable when the method returns (DESIGN.md rule 1).
"""

from __future__ import annotations

import dataclasses
import queue
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import orjson

from gateway.store import (
    DuplicateInstance,
    InboundMessage,
    InboundResult,
    InstanceRecord,
    InstanceRow,
    MppsRow,
    NoSuchInstance,
    OutboxRow,
    StoreError,
    UnknownOrder,
    WorklistRow,
)
from gateway.store.exams import RESULT_KINDS, ExamStore
from gateway.store.service import ServiceStore
from gateway.store.priors import PriorStore
from gateway.store.qa import QaStore
from gateway.store.migrations import MIGRATIONS
from mappings.mpps import StepKeys
from mappings.hl7_orders import Action, MergePatient, OrderKey, SetOrderStatus, UpdatePatient, UpsertOrder
from mappings.mwl import IndexFilter
from mappings.worklist import ACTIVE_STATUSES, HELD, SCHEDULED, STATUSES, WorklistItem

_OPEN = ("SCHEDULED", "IN PROGRESS")
MAX_IDLE_READERS = 8


T = TypeVar("T")


# Open rows whose Scheduled Station AE Title has several values (index
# wl_multi_station, migration 4, has this WHERE word for word).
_MULTI_STATION = "status IN ('SCHEDULED', 'IN PROGRESS') AND instr(station_ae, '\\') > 0"


class _Pending:
    """One caller's work in a group commit."""

    __slots__ = ("work", "result", "error", "done")

    def __init__(self, work: Callable[[sqlite3.Connection], object]) -> None:
        self.work = work
        self.result = None
        self.error: BaseException | None = None
        self.done = False


def _kept_status(current: WorklistItem, change: WorklistItem) -> str:
    """A changed order's step status (ORC-1 XO, a FHIR update).

    A HELD step takes the change's status (SCHEDULED once the referrer is
    entitled); a step already released (justified) stays released unless
    the change names another referrer who is not entitled; otherwise the
    step keeps its progress.
    """
    if current.status == HELD:
        return change.status
    if change.status == HELD:
        same = (current.referrer_id, current.requesting_physician) == (change.referrer_id, change.requesting_physician)
        return current.status if same or current.status != SCHEDULED else HELD
    return current.status if current.status != SCHEDULED else change.status


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class SqliteStore(ExamStore, ServiceStore, PriorStore, QaStore):
    """The embedded default store (``storage.path``/gateway.sqlite3)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._group = threading.Condition()
        self._group_pending: list[_Pending] = []
        self._group_leader = False
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._closed = False
        self._writer = self._connect()
        self._migrate()

    # -- connections ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # ack means durable
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Borrow a read-only connection from the pool (WAL: readers never block).

        Pooled, not per thread: pynetdicom starts a thread per association,
        and a connection per thread leaked three file descriptors each.
        """
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
        try:
            yield conn
        finally:
            if self._closed or self._idle.qsize() >= MAX_IDLE_READERS:
                conn.close()
            else:
                self._idle.put(conn)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read() as conn:
            return conn.execute(sql, args).fetchall()

    def _query_one(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._read() as conn:
            return conn.execute(sql, args).fetchone()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _grouped(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a transaction shared with other threads' (group commit).

        Concurrent C-STORE handlers each need a durable commit, and each
        commit is an fsync of the WAL.  The first caller to find no commit in
        progress becomes the leader: it runs every pending ``work`` under its
        own SAVEPOINT (a failure rolls back that one only) and commits them
        all with one fsync; the others wait for that commit and return.  When
        this returns, the caller's rows are as durable as with
        :meth:`_transaction`.
        """
        slot = _Pending(work)
        with self._group:
            self._group_pending.append(slot)
            while not slot.done and self._group_leader:
                self._group.wait()
            if not slot.done:
                self._group_leader = True
                batch, self._group_pending = self._group_pending, []
            else:
                batch = []
        if batch:
            try:
                self._commit_batch(batch)
            finally:
                with self._group:
                    for one in batch:
                        one.done = True
                    self._group_leader = False
                    self._group.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _commit_batch(self, batch: list["_Pending"]) -> None:
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                for one in batch:
                    conn.execute("SAVEPOINT one")
                    try:
                        one.result = one.work(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO one")
                        one.error = exc
                    conn.execute("RELEASE one")
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for one in batch:
                    if one.error is None:
                        one.error, one.result = exc, None
                if not isinstance(exc, Exception):
                    raise

    def _migrate(self) -> None:
        with self._write_lock:
            version = self._writer.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"database schema {version} is newer than this gateway ({len(MIGRATIONS)})")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self._writer.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
            # Fresh statistics for the query planner (cheap: it samples).
            self._writer.execute("PRAGMA analysis_limit = 1000")
            self._writer.execute("ANALYZE")

    @property
    def schema_version(self) -> int:
        return self._query_one("PRAGMA user_version")[0]

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        with self._write_lock:
            self._writer.close()

    def ping(self) -> bool:
        return self._query_one("SELECT 1")[0] == 1

    # -- worklist rows -------------------------------------------------------

    @staticmethod
    def _columns(item: WorklistItem) -> dict:
        return {
            "status": item.status,
            "station_ae": item.station_ae,
            "modality": item.modality,
            "start_date": item.start_date,
            "start_time": item.start_time,
            "patient_id": item.patient_id,
            "issuer": item.issuer_of_patient_id,
            "patient_name_upper": item.patient_name.upper(),
            "accession": item.accession_number,
            "requested_procedure_id": item.requested_procedure_id,
            "sps_id": item.sps_id,
            "study_uid": item.study_instance_uid,
            "placer_order": item.placer_order_number,
            "filler_order": item.filler_order_number,
            "source": item.source,
            "item": orjson.dumps(item.to_json()),
        }

    def _insert(self, conn: sqlite3.Connection, item: WorklistItem, sender: str, now: str) -> int:
        if item.status not in STATUSES:
            raise StoreError(f"unknown status {item.status!r}")
        cols = self._columns(item)
        cols.update(sender=sender, created_at=now, updated_at=now)
        names = ", ".join(cols)
        marks = ", ".join(f":{k}" for k in cols)
        return conn.execute(f"INSERT INTO worklist_items ({names}) VALUES ({marks})", cols).lastrowid

    def _update(self, conn: sqlite3.Connection, row_id: int, item: WorklistItem, now: str) -> None:
        cols = self._columns(item)
        cols.update(updated_at=now, id=row_id)
        sets = ", ".join(f"{k} = :{k}" for k in cols if k != "id")
        conn.execute(f"UPDATE worklist_items SET {sets} WHERE id = :id", cols)

    @staticmethod
    def _row(row: tuple) -> WorklistRow:
        row_id, created, updated, blob = row
        return WorklistRow(id=row_id, item=WorklistItem.from_json(orjson.loads(blob)), created_at=created, updated_at=updated)

    def add_worklist_items(self, items: list[WorklistItem], *, sender: str = "api", actor: str = "api") -> list[int]:
        now = _now()
        with self._transaction() as conn:
            ids = [self._insert(conn, item, sender, now) for item in items]
            if len(ids) <= 100:
                for row_id in ids:
                    self._audit(conn, now, "worklist.create", actor, {"id": row_id})
            else:
                self._audit(conn, now, "worklist.bulk_create", actor, {"count": len(ids)})
        return ids

    def get_worklist_item(self, row_id: int) -> WorklistRow | None:
        row = self._query_one(
            "SELECT id, created_at, updated_at, item FROM worklist_items WHERE id = ?", (row_id,)
        )
        return self._row(row) if row else None

    def set_worklist_status(self, row_id: int, status: str, *, actor: str) -> bool:
        now = _now()
        with self._transaction() as conn:
            row = conn.execute("SELECT id, created_at, updated_at, item FROM worklist_items WHERE id = ?", (row_id,)).fetchone()
            if row is None:
                return False
            current = self._row(row)
            self._update(conn, row_id, current.item.replace(status=status), now)
            self._audit(conn, now, "worklist.status", actor, {"id": row_id, "status": status})
        return True

    def justify_worklist_item(self, row_id: int, *, actor: str, practitioner: str, note: str) -> str:
        """Release a HELD step to SCHEDULED, audited (IR(ME)R justification).

        Returns '' when done, else why not ("not found", or the status).
        """
        now = _now()
        with self._transaction() as conn:
            row = conn.execute("SELECT id, created_at, updated_at, item FROM worklist_items WHERE id = ?", (row_id,)).fetchone()
            if row is None:
                return "not found"
            current = self._row(row)
            if current.item.status != HELD:
                return current.item.status
            self._update(conn, row_id, current.item.replace(status=SCHEDULED, hold_reason=""), now)
            self._audit(
                conn, now, "worklist.justify", actor,
                {"id": row_id, "patient_id": current.item.patient_id, "practitioner": practitioner,
                 "held_for": current.item.hold_reason.split(":", 1)[0], "note": note[:500]},
            )
        return ""

    def list_worklist(
        self,
        *,
        date: str | None = None,
        station_ae: str | None = None,
        status: str | None = None,
        patient_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[WorklistRow]:
        where, args = [], []
        for column, value in (("start_date", date), ("station_ae", station_ae), ("status", status), ("patient_id", patient_id)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT id, created_at, updated_at, item FROM worklist_items"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_date, start_time, id LIMIT ? OFFSET ?"
        return [self._row(r) for r in self._query(sql, (*args, limit, offset))]

    def find_worklist(self, flt: IndexFilter) -> Iterator[WorklistRow]:
        """Open steps the MWL query may match, narrowed by the indexes.

        A generator over the cursor: the caller stops reading when it has
        enough, so a broad query does not load every row first.
        """
        # The statuses are written into the SQL, not bound: SQLite uses a
        # partial index only when the query's WHERE visibly implies the
        # index's (status IN ('SCHEDULED', 'IN PROGRESS')).
        statuses = [s for s in flt.statuses if s in _OPEN] or list(_OPEN)
        multi_station = None
        where = ["status IN ('SCHEDULED', 'IN PROGRESS')"]
        if len(statuses) == 1:
            where.append("status = 'SCHEDULED'" if statuses[0] == "SCHEDULED" else "status = 'IN PROGRESS'")
        args: list = []
        if flt.station_ae is not None:
            # Scheduled Station AE Title is 1-n (PS3.4 Table K.6-1): a
            # multi-valued one is stored joined by "\\" and matched in full
            # by mappings.mwl: those rows come from a second branch (index
            # wl_multi_station), so the first keeps its station index.
            multi_station = flt.station_ae
        if flt.modality is not None:
            where.append("modality = ?")
            args.append(flt.modality)
        if flt.date_from is not None:
            where.append("start_date >= ?")
            args.append(flt.date_from)
        if flt.date_to is not None:
            where.append("start_date <= ?")
            args.append(flt.date_to)
        if flt.patient_id is not None:
            where.append("patient_id = ?")
            args.append(flt.patient_id)
        if flt.accession is not None:
            where.append("accession = ?")
            args.append(flt.accession)
        if flt.name_prefix:
            where.append("patient_name_upper >= ? AND patient_name_upper < ?")
            args.extend([flt.name_prefix, flt.name_prefix + "\U0010ffff"])
        if flt.study_uids:
            where.append(f"study_uid IN ({', '.join('?' * len(flt.study_uids))})")
            args.extend(flt.study_uids)
        columns = "id, created_at, updated_at, item, start_date, start_time"
        sql = f"SELECT {columns} FROM worklist_items WHERE {' AND '.join(where)}"
        if multi_station is not None:
            sql = (
                f"SELECT {columns} FROM worklist_items WHERE station_ae = ? AND {' AND '.join(where)}"
                f" UNION ALL SELECT {columns} FROM worklist_items INDEXED BY wl_multi_station WHERE {_MULTI_STATION} AND {' AND '.join(where)}"
            )
            args = [multi_station, *args, *args]
        sql += " ORDER BY start_date, start_time, id"
        with self._read() as conn:
            for row in conn.execute(sql, args):
                yield self._row(row[:4])

    def count_worklist_by_status(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) FROM worklist_items GROUP BY status")
        counts = {s: 0 for s in STATUSES}
        counts.update(dict(rows))
        return counts

    # -- inbound messages (HL7, FHIR) -------------------------------------------

    def apply_inbound(self, message: InboundMessage, actions: tuple[Action, ...]) -> InboundResult:
        """Apply a message's actions and keep the raw message, in one commit.

        A message seen before (same source, sender and id) changes nothing and
        returns ``duplicate=True`` with the first answer's ACK code.
        Raises :class:`UnknownOrder` (rolled back) when a change or cancel
        names an order the gateway does not have.
        """
        now = _now()
        with self._transaction() as conn:
            if message.message_id:
                seen = conn.execute(
                    "SELECT ack_code FROM inbound_messages WHERE source = ? AND sender = ? AND message_id = ?",
                    (message.source, message.sender, message.message_id),
                ).fetchone()
                if seen:
                    return InboundResult(duplicate=True, ack_code=seen[0], item_ids=())
            changed: list[int] = []
            for action in actions:
                changed.extend(self._apply(conn, action, message.sender, now))
            if message.message_id:
                conn.execute(
                    "INSERT INTO inbound_messages (source, sender, message_id, message_type, received_at, ack_code, raw)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (message.source, message.sender, message.message_id, message.message_type, now, "AA", message.raw),
                )
            self._audit(
                conn,
                now,
                f"{message.source}.{message.message_type}",
                message.sender,
                {"message_id": message.message_id, "items": changed},
            )
        return InboundResult(duplicate=False, ack_code="AA", item_ids=tuple(changed))

    def _find_order(self, conn: sqlite3.Connection, key: OrderKey, sender: str) -> list[WorklistRow]:
        for column, value in (("placer_order", key.placer), ("filler_order", key.filler), ("accession", key.accession)):
            if value:
                rows = conn.execute(
                    f"SELECT id, created_at, updated_at, item FROM worklist_items WHERE {column} = ? AND sender = ?",
                    (value, sender),
                ).fetchall()
                if rows:
                    return [self._row(r) for r in rows]
        return []

    def _apply(self, conn: sqlite3.Connection, action: Action, sender: str, now: str) -> list[int]:
        if isinstance(action, UpsertOrder):
            existing = self._find_order(conn, action.key, sender)
            if action.is_change and not existing:
                raise UnknownOrder(action.key)
            ids = []
            for item in action.items:
                match = next(
                    (
                        r
                        for r in existing
                        if r.item.requested_procedure_id == item.requested_procedure_id and r.item.sps_id == item.sps_id
                    ),
                    None,
                )
                if match is None:
                    ids.append(self._insert(conn, item, sender, now))
                else:
                    # Keep what the step already had: its Study UID and status.
                    kept = item.replace(
                        study_instance_uid=match.item.study_instance_uid or item.study_instance_uid,
                        status=_kept_status(match.item, item),
                    )
                    if kept.status != HELD:
                        kept = kept.replace(hold_reason="")
                    self._update(conn, match.id, kept, now)
                    ids.append(match.id)
            return ids
        if isinstance(action, SetOrderStatus):
            existing = self._find_order(conn, action.key, sender)
            if not existing:
                raise UnknownOrder(action.key)
            for row in existing:
                self._update(conn, row.id, row.item.replace(status=action.status), now)
            return [r.id for r in existing]
        if isinstance(action, (UpdatePatient, MergePatient)):
            if isinstance(action, UpdatePatient):
                pid, issuer = action.demographics.patient_id, action.demographics.issuer_of_patient_id
            else:
                pid, issuer = action.prior_patient_id, action.prior_issuer
            sql = "SELECT id, created_at, updated_at, item FROM worklist_items WHERE patient_id = ? AND status IN ('SCHEDULED', 'IN PROGRESS')"
            args: tuple = (pid,)
            if issuer:
                sql += " AND issuer IN (?, '')"
                args = (pid, issuer)
            rows = [self._row(r) for r in conn.execute(sql, args)]
            changes = action.demographics.changes()
            if isinstance(action, MergePatient):
                changes.update(patient_id=action.patient_id, issuer_of_patient_id=action.issuer or issuer)
                self._merge_priors(conn, pid, issuer, action.patient_id, action.issuer or issuer)
            for row in rows:
                self._update(conn, row.id, row.item.replace(**changes), now)
            return [r.id for r in rows]
        raise StoreError(f"unknown action {type(action).__name__}")

    # -- the spool index ----------------------------------------------------------

    _INSTANCE_COLUMNS = (
        "sop_instance_uid, sop_class_uid, study_uid, series_uid, patient_id, accession, modality,"
        " manufacturer, kind, transfer_syntax, size, sha256, path, calling_ae"
    )

    def _instance_row(self, row: tuple) -> InstanceRow:
        row_id, received_at, is_current, *values = row
        return InstanceRow(id=row_id, record=InstanceRecord(*values), received_at=received_at, is_current=bool(is_current))

    def current_instances(self, sop_instance_uid: str) -> list[InstanceRow]:
        rows = self._query(
            f"SELECT id, received_at, is_current, {self._INSTANCE_COLUMNS} FROM instances"
            " WHERE sop_instance_uid = ? AND is_current = 1 ORDER BY id",
            (sop_instance_uid,),
        )
        return [self._instance_row(r) for r in rows]

    def study_instances(self, study_uid: str, kinds: tuple[str, ...] = ("image",)) -> list[InstanceRow]:
        """The study's current instances of these kinds, in arrival order (the workbench's images)."""
        marks = ", ".join("?" * len(kinds))
        rows = self._query(
            f"SELECT id, received_at, is_current, {self._INSTANCE_COLUMNS} FROM instances"
            f" WHERE study_uid = ? AND is_current = 1 AND kind IN ({marks}) ORDER BY id",
            (study_uid, *kinds),
        )
        return [self._instance_row(r) for r in rows]

    def get_instance(self, row_id: int) -> InstanceRow | None:
        row = self._query_one(
            f"SELECT id, received_at, is_current, {self._INSTANCE_COLUMNS} FROM instances WHERE id = ?", (row_id,)
        )
        return self._instance_row(row) if row else None

    def add_instance(self, record: InstanceRecord, *, supersede: bool, destinations: tuple[str, ...]) -> int:
        """Index a stored file and queue its deliveries, in one commit.

        ``supersede`` marks earlier copies of the same SOP Instance UID as
        replaced (their files stay where they are).
        """
        now = _now()
        values = dataclasses.astuple(record)

        def work(conn: sqlite3.Connection) -> int:
            if supersede:
                conn.execute(
                    "UPDATE instances SET is_current = 0 WHERE sop_instance_uid = ? AND is_current = 1",
                    (record.sop_instance_uid,),
                )
            # A result carrier is handed to the result reader in this same
            # commit, so an acknowledged object is read even after a crash.
            row_id = conn.execute(
                f"INSERT INTO instances (received_at, is_current, results_state, {self._INSTANCE_COLUMNS})"
                f" VALUES (?, 1, ?, {', '.join('?' * len(values))})",
                (now, "pending" if record.kind in RESULT_KINDS else "", *values),
            ).lastrowid
            self._enqueue(conn, destinations, record.kind, "instances", row_id, record.study_uid, now)
            # PS3.15 A.5.3.7 DICOM Instances Transferred, forwarded by gateway/audit_atna.py
            self._audit(conn, now, "instance.received", record.calling_ae, {"instance": row_id, "study_uid": record.study_uid, "patient_id": record.patient_id, "sop_class": record.sop_class_uid})
            return row_id

        # Many associations store at once: one commit (one fsync) for all.
        return self._grouped(work)

    def instance_totals(self) -> tuple[int, int]:
        """(current instances, their bytes)."""
        row = self._query_one("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances WHERE is_current = 1")
        return row[0], row[1]

    # -- MPPS --------------------------------------------------------------------

    def _mpps_row(self, row: tuple) -> MppsRow:
        return MppsRow(*row[:5], attributes=bytes(row[5]))

    def get_mpps(self, sop_instance_uid: str) -> MppsRow | None:
        row = self._query_one(
            "SELECT id, sop_instance_uid, status, calling_ae, worklist_item_id, attributes FROM mpps WHERE sop_instance_uid = ?",
            (sop_instance_uid,),
        )
        return self._mpps_row(row) if row else None

    def get_mpps_by_id(self, row_id: int) -> tuple[MppsRow, str, str] | None:
        """An MPPS row with its study UID and accession."""
        row = self._query_one(
            "SELECT id, sop_instance_uid, status, calling_ae, worklist_item_id, attributes, study_uid, accession FROM mpps WHERE id = ?",
            (row_id,),
        )
        return (self._mpps_row(row), row[6], row[7]) if row else None

    def _link_step(self, conn: sqlite3.Connection, keys: list[StepKeys]) -> int | None:
        """The worklist item a performed step reports on, if it was scheduled."""
        for key in keys:
            for where, args in (
                ("accession = ? AND requested_procedure_id = ? AND sps_id = ?", (key.accession, key.requested_procedure_id, key.sps_id)),
                ("study_uid = ? AND sps_id = ?", (key.study_uid, key.sps_id)),
                ("study_uid = ?", (key.study_uid,)),
            ):
                if any(not a for a in args):
                    continue
                row = conn.execute(f"SELECT id FROM worklist_items WHERE {where} ORDER BY id LIMIT 1", args).fetchone()
                if row:
                    return row[0]
        return None

    def _set_item_status(self, conn: sqlite3.Connection, item_id: int, status: str, now: str) -> None:
        row = conn.execute("SELECT id, created_at, updated_at, item FROM worklist_items WHERE id = ?", (item_id,)).fetchone()
        if row is not None:
            self._update(conn, item_id, self._row(row).item.replace(status=status), now)

    def mpps_create(
        self,
        sop_instance_uid: str,
        *,
        calling_ae: str,
        status: str,
        attributes: bytes,
        keys: list[StepKeys],
        destinations: dict[str, tuple[str, ...]],
    ) -> MppsRow:
        """Keep a new performed step (IN PROGRESS) and move its worklist item."""
        now = _now()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone():
                raise DuplicateInstance(sop_instance_uid)
            item_id = self._link_step(conn, keys)
            study = keys[0].study_uid if keys else ""
            accession = keys[0].accession if keys else ""
            row_id = conn.execute(
                "INSERT INTO mpps (sop_instance_uid, status, calling_ae, worklist_item_id, study_uid, accession, created_at, updated_at, attributes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sop_instance_uid, status, calling_ae, item_id, study, accession, now, now, attributes),
            ).lastrowid
            if item_id is not None:
                self._set_item_status(conn, item_id, status, now)
            for kind, names in destinations.items():  # "mpps" forwards, "order-status" to the RIS
                self._enqueue(conn, names, kind, "mpps", row_id, study or sop_instance_uid, now)
            self._audit(conn, now, "mpps.create", calling_ae, {"mpps": row_id, "item": item_id, "status": status})
        return MppsRow(row_id, sop_instance_uid, status, calling_ae, item_id, attributes)

    def mpps_update(self, sop_instance_uid: str, update, *, calling_ae: str, destinations: dict[str, tuple[str, ...]]) -> MppsRow:
        """Apply ``update(current attributes) -> (attributes, status)`` atomically."""
        now = _now()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, sop_instance_uid, status, calling_ae, worklist_item_id, attributes, study_uid FROM mpps WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
            if row is None:
                raise NoSuchInstance(sop_instance_uid)
            current = self._mpps_row(row)
            attributes, status = update(current.attributes)
            conn.execute(
                "UPDATE mpps SET status = ?, attributes = ?, updated_at = ? WHERE id = ?",
                (status, attributes, now, current.id),
            )
            if current.worklist_item_id is not None and status != current.status:
                self._set_item_status(conn, current.worklist_item_id, status, now)
            for kind, names in destinations.items():
                self._enqueue(conn, names, kind, "mpps", current.id, row[6] or sop_instance_uid, now)
            self._audit(conn, now, "mpps.set", calling_ae, {"mpps": current.id, "status": status})
        return MppsRow(current.id, sop_instance_uid, status, current.calling_ae, current.worklist_item_id, attributes)

    def count_mpps_by_status(self) -> dict[str, int]:
        return dict(self._query("SELECT status, COUNT(*) FROM mpps GROUP BY status"))

    # -- storage commitment ----------------------------------------------------

    def add_commitment(self, transaction_uid: str, calling_ae: str, refs: list[tuple[str, str]]) -> int:
        now = _now()
        with self._transaction() as conn:
            return conn.execute(
                "INSERT INTO commitments (transaction_uid, calling_ae, requested_at, state, request) VALUES (?, ?, ?, 'requested', ?)",
                (transaction_uid, calling_ae, now, orjson.dumps(refs)),
            ).lastrowid

    def finish_commitment(self, commitment_id: int, *, state: str, failed: int) -> None:
        now = _now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE commitments SET state = ?, failed = ?, reported_at = ? WHERE id = ?",
                (state, failed, now, commitment_id),
            )

    # -- outbox ------------------------------------------------------------------

    @staticmethod
    def _enqueue(
        conn: sqlite3.Connection,
        destinations: tuple[str, ...],
        kind: str,
        ref_table: str,
        ref_id: int,
        order_key: str,
        now: str,
    ) -> None:
        """Outbox rows, in the caller's transaction (DESIGN.md rule 2)."""
        for destination in destinations:
            conn.execute(
                "INSERT INTO outbox (destination, kind, ref_table, ref_id, order_key, state, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (destination, kind, ref_table, ref_id, order_key, now, now, now),
            )

    _OUTBOX_COLUMNS = "id, destination, kind, ref_table, ref_id, order_key, state, attempts, next_attempt_at, last_error"

    def claim_outbox(self, destination: str, now: str, limit: int = 1) -> list[OutboxRow]:
        """Claim due rows for delivery (state in_flight).

        Order is kept per study per destination: a row waits while an
        earlier row of the same order key is pending or in flight; a dead
        letter does not hold the rest back.
        """
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {self._OUTBOX_COLUMNS} FROM outbox o WHERE o.destination = ? AND o.state = 'pending'"
                " AND o.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.destination = o.destination"
                " AND p.order_key = o.order_key AND p.id < o.id AND p.state IN ('pending', 'in_flight'))"
                " ORDER BY o.id LIMIT ?",
                (destination, now, limit),
            ).fetchall()
            for row in rows:
                conn.execute("UPDATE outbox SET state = 'in_flight', updated_at = ? WHERE id = ?", (now, row[0]))
        return [OutboxRow(*r) for r in rows]

    def next_outbox_due(self, destination: str) -> str | None:
        row = self._query_one(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE destination = ? AND state = 'pending'", (destination,)
        )
        return row[0]

    def finish_outbox(self, row_id: int, *, state: str, error: str = "", next_attempt_at: str | None = None) -> None:
        """Record a delivery attempt: done, dead, or pending again at ``next_attempt_at``."""
        now = _now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = CASE WHEN ? = 'done' THEN ? ELSE delivered_at END"
                " WHERE id = ?",
                (state, error[:500], now, next_attempt_at, state, now, row_id),
            )
            if state == "done":  # PS3.15 A.5.3.7 / A.5.3.4: instances transferred out, export
                self._audit_delivery(conn, row_id, now)

    def _audit_delivery(self, conn: sqlite3.Connection, row_id: int, now: str) -> None:
        row = conn.execute("SELECT destination, kind, ref_table, ref_id, order_key FROM outbox WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            return
        destination, kind, ref_table, ref_id, order_key = row
        patient = None
        if ref_table == "instances":
            patient = conn.execute("SELECT patient_id FROM instances WHERE id = ?", (ref_id,)).fetchone()
        elif ref_table == "reports":
            patient = conn.execute("SELECT e.patient_id FROM reports r JOIN exams e ON e.id = r.exam_id WHERE r.id = ?", (ref_id,)).fetchone()
        detail = {"outbox": row_id, "destination": destination, "kind": kind, "ref_table": ref_table, "ref_id": ref_id, "study_uid": order_key, "patient_id": patient[0] if patient else ""}
        self._audit(conn, now, "outbox.delivered", destination, detail)

    def resume_in_flight(self) -> int:
        """After a crash or restart, rows that were being sent go again."""
        now = _now()
        with self._transaction() as conn:
            return conn.execute("UPDATE outbox SET state = 'pending', updated_at = ? WHERE state = 'in_flight'", (now,)).rowcount

    def retry_outbox(self, *, row_id: int | None = None, destination: str | None = None, actor: str = "api") -> int:
        """Requeue dead letters (one row, or all of a destination, or all)."""
        now = _now()
        where, args = ["state = 'dead'"], []
        if row_id is not None:
            where.append("id = ?")
            args.append(row_id)
        if destination:
            where.append("destination = ?")
            args.append(destination)
        with self._transaction() as conn:
            n = conn.execute(
                f"UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE {' AND '.join(where)}",
                (now, now, *args),
            ).rowcount
            self._audit(conn, now, "outbox.retry", actor, {"id": row_id, "destination": destination, "rows": n})
        return n

    def get_outbox(self, row_id: int) -> OutboxRow | None:
        row = self._query_one(f"SELECT {self._OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (row_id,))
        return OutboxRow(*row) if row else None

    def delivered_to(self, ref_table: str, ref_id: int, destinations: list[str]) -> bool:
        """True when every row of the object for these destinations is done."""
        marks = ", ".join("?" * len(destinations))
        rows = self._query(
            f"SELECT state FROM outbox WHERE ref_table = ? AND ref_id = ? AND destination IN ({marks})",
            (ref_table, ref_id, *destinations),
        )
        return bool(rows) and all(r[0] == "done" for r in rows)

    def first_outbox_for(self, destination: str, ref_table: str, ref_id: int) -> int | None:
        row = self._query_one(
            "SELECT MIN(id) FROM outbox WHERE destination = ? AND ref_table = ? AND ref_id = ?", (destination, ref_table, ref_id)
        )
        return row[0]

    def outbox_stats(self) -> dict:
        """Queue depth by destination and state, oldest pending, last success and error."""
        with self._read() as reader:
            depth = reader.execute("SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state").fetchall()
            oldest = dict(reader.execute("SELECT destination, MIN(created_at) FROM outbox WHERE state IN ('pending', 'in_flight') GROUP BY destination").fetchall())
            success = dict(reader.execute("SELECT destination, MAX(delivered_at) FROM outbox WHERE state = 'done' GROUP BY destination").fetchall())
            errors = {}
            for dest, at, err in reader.execute(
                "SELECT destination, updated_at, last_error FROM outbox o WHERE last_error != '' AND updated_at ="
                " (SELECT MAX(updated_at) FROM outbox p WHERE p.destination = o.destination AND p.last_error != '')"
            ):
                errors[dest] = {"at": at, "error": err}
        return {"depth": depth, "oldest_pending": oldest, "last_success": success, "last_error": errors}

    def list_outbox(self, *, state: str | None = None, destination: str | None = None, limit: int = 100) -> list[OutboxRow]:
        where, args = [], []
        if state:
            where.append("state = ?")
            args.append(state)
        if destination:
            where.append("destination = ?")
            args.append(destination)
        sql = "SELECT id, destination, kind, ref_table, ref_id, order_key, state, attempts, next_attempt_at, last_error FROM outbox"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT ?"
        return [OutboxRow(*r) for r in self._query(sql, (*args, limit))]

    # -- audit -----------------------------------------------------------------

    @staticmethod
    def _audit(conn: sqlite3.Connection, at: str, event: str, actor: str, detail: dict) -> None:
        conn.execute(
            "INSERT INTO audit (at, event, actor, detail) VALUES (?, ?, ?, ?)",
            (at, event, actor, orjson.dumps(detail).decode()),
        )

    def audit(self, event: str, actor: str, detail: dict) -> None:
        now = _now()
        with self._transaction() as conn:
            self._audit(conn, now, event, actor, detail)

    def audit_many(self, rows: list[tuple[str, str, dict]]) -> None:
        """Several (event, actor, detail) rows in one commit."""
        now = _now()
        with self._transaction() as conn:
            for event, actor, detail in rows:
                self._audit(conn, now, event, actor, detail)

    def max_audit_id(self) -> int:
        return self._query_one("SELECT COALESCE(MAX(id), 0) FROM audit")[0]

    def audit_since(self, after_id: int, limit: int = 200) -> list[dict]:
        """Audit rows after ``after_id``, oldest first (the ATNA forwarder's tail)."""
        rows = self._query("SELECT id, at, event, actor, detail FROM audit WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return [{"id": r[0], "at": r[1], "event": r[2], "actor": r[3], "detail": orjson.loads(r[4])} for r in rows]

    def list_audit(self, *, event: str | None = None, actor: str | None = None, limit: int = 100) -> list[dict]:
        """The newest audit rows first, optionally of one event (prefix) or actor."""
        where, args = [], []
        if event:
            where.append("event LIKE ?")
            args.append(event.replace("%", "") + "%")
        if actor:
            where.append("actor = ?")
            args.append(actor)
        sql = "SELECT id, at, event, actor, detail FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return [{"id": r[0], "at": r[1], "event": r[2], "actor": r[3], "detail": orjson.loads(r[4])} for r in self._query(sql, (*args, limit))]

    def raw_message(self, source: str, sender: str, message_id: str) -> bytes | None:
        row = self._query_one(
            "SELECT raw FROM inbound_messages WHERE source = ? AND sender = ? AND message_id = ?",
            (source, sender, message_id),
        )
        return bytes(row[0]) if row else None

    def count_inbound(self) -> int:
        return self._query_one("SELECT COUNT(*) FROM inbound_messages")[0]


__all__ = ["SqliteStore", "ACTIVE_STATUSES"]
