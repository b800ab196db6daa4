"""The worklist aggregate: scheduled steps, and the HL7/FHIR messages that change them.

A mixin over the database contract of gateway/store/db.py; what a message
changes is decided by mappings/order_reconciliation.py (pure).
"""

from __future__ import annotations

from typing import Iterator, Protocol

import orjson

from gateway.store.db import now_iso as _now
from gateway.store.records import InboundMessage, InboundResult, StoreError, UnknownOrder, WorklistRow
from mappings.hl7_orders import Action, MergePatient, OrderKey, SetOrderStatus, UpdatePatient, UpsertOrder
from mappings.mwl import IndexFilter
from mappings.order_reconciliation import lookup_keys, patient_changes, patient_selection, reconcile_order
from mappings.worklist import HELD, SCHEDULED, STATUSES, WorklistItem

_OPEN = ("SCHEDULED", "IN PROGRESS")

# Open rows whose Scheduled Station AE Title has several values (index
# wl_multi_station, migration 4, has this WHERE word for word; PostgreSQL's
# migration 1 defines instr()).
_MULTI_STATION = "status IN ('SCHEDULED', 'IN PROGRESS') AND instr(station_ae, '\\') > 0"

# worklist_items columns of OrderKey's fields (mappings.order_reconciliation.lookup_keys)
_KEY_COLUMNS = {"placer": "placer_order", "filler": "filler_order", "accession": "accession"}


class WorklistAggregate(Protocol):
    """Scheduled procedure steps (the MWL) and the inbound messages that change them."""

    def apply_inbound(self, message: InboundMessage, actions: tuple[Action, ...]) -> InboundResult: ...
    def add_worklist_items(self, items: list[WorklistItem], *, sender: str = ..., actor: str = ...) -> list[int]: ...
    def get_worklist_item(self, row_id: int) -> WorklistRow | None: ...
    def set_worklist_status(self, row_id: int, status: str, *, actor: str) -> bool: ...
    def justify_worklist_item(self, row_id: int, *, actor: str, practitioner: str, note: str) -> str: ...
    def list_worklist(self, *, date: str | None = ..., station_ae: str | None = ..., status: str | None = ...,
                      patient_id: str | None = ..., limit: int = ..., offset: int = ...) -> list[WorklistRow]: ...  # fmt: skip
    def find_worklist(self, flt: IndexFilter) -> Iterator[WorklistRow]: ...
    def count_worklist_by_status(self) -> dict[str, int]: ...
    def raw_message(self, source: str, sender: str, message_id: str) -> bytes | None: ...
    def count_inbound(self) -> int: ...


class WorklistStore:
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

    def _insert(self, conn, item: WorklistItem, sender: str, now: str) -> int:
        if item.status not in STATUSES:
            raise StoreError(f"unknown status {item.status!r}")
        cols = self._columns(item)
        cols.update(sender=sender, created_at=now, updated_at=now)
        names = ", ".join(cols)
        marks = ", ".join(f":{k}" for k in cols)
        return conn.execute(f"INSERT INTO worklist_items ({names}) VALUES ({marks})", cols).lastrowid

    def _update(self, conn, row_id: int, item: WorklistItem, now: str) -> None:
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
            self._lock(conn, "worklist")
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
            self._lock(conn, "worklist")
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
            self._lock(conn, "worklist")  # replicas: one message at a time changes the worklist
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

    def _find_order(self, conn, key: OrderKey, sender: str) -> list[WorklistRow]:
        for field, value in lookup_keys(key):
            rows = conn.execute(
                f"SELECT id, created_at, updated_at, item FROM worklist_items WHERE {_KEY_COLUMNS[field]} = ? AND sender = ?",
                (value, sender),
            ).fetchall()
            if rows:
                return [self._row(r) for r in rows]
        return []

    def _apply(self, conn, action: Action, sender: str, now: str) -> list[int]:
        if isinstance(action, UpsertOrder):
            existing = self._find_order(conn, action.key, sender)
            if action.is_change and not existing:
                raise UnknownOrder(action.key)
            ids = []
            for write in reconcile_order([(r.id, r.item) for r in existing], action.items):
                if write.row_id is None:
                    ids.append(self._insert(conn, write.item, sender, now))
                else:
                    self._update(conn, write.row_id, write.item, now)
                    ids.append(write.row_id)
            return ids
        if isinstance(action, SetOrderStatus):
            existing = self._find_order(conn, action.key, sender)
            if not existing:
                raise UnknownOrder(action.key)
            for row in existing:
                self._update(conn, row.id, row.item.replace(status=action.status), now)
            return [r.id for r in existing]
        if isinstance(action, (UpdatePatient, MergePatient)):
            pid, issuer = patient_selection(action)
            sql = "SELECT id, created_at, updated_at, item FROM worklist_items WHERE patient_id = ? AND status IN ('SCHEDULED', 'IN PROGRESS')"
            args: tuple = (pid,)
            if issuer:
                sql += " AND issuer IN (?, '')"
                args = (pid, issuer)
            rows = [self._row(r) for r in conn.execute(sql, args)]
            changes = patient_changes(action)
            if isinstance(action, MergePatient):
                self._merge_priors(conn, pid, issuer, changes["patient_id"], changes["issuer_of_patient_id"])
            for row in rows:
                self._update(conn, row.id, row.item.replace(**changes), now)
            return [r.id for r in rows]
        raise StoreError(f"unknown action {type(action).__name__}")

    def raw_message(self, source: str, sender: str, message_id: str) -> bytes | None:
        row = self._query_one(
            "SELECT raw FROM inbound_messages WHERE source = ? AND sender = ? AND message_id = ?",
            (source, sender, message_id),
        )
        return bytes(row[0]) if row else None

    def count_inbound(self) -> int:
        return self._query_one("SELECT COUNT(*) FROM inbound_messages")[0]
