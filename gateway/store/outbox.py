"""The outbox aggregate: every delivery owed to a destination (docs/architecture.md rule 2).

A mixin over the database contract of gateway/store/db.py.  Rows are
written in the transaction of what they deliver (``_enqueue``).  A claim
takes a lease (``claimed_by``, ``lease_until``): on PostgreSQL, where
several replicas share the outbox, rows are claimed ``FOR UPDATE SKIP
LOCKED`` and a row whose lease has run out (its replica died) is claimable
again; on SQLite (one process) the lease never runs out and
``resume_in_flight`` at start sends again what was in flight.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from gateway.store.db import now_iso as _now
from gateway.store.records import OutboxRow


class OutboxAggregate(Protocol):
    """Deliveries: claimed, finished, retried; their queue depth."""

    def claim_outbox(self, destination: str, now: str, limit: int = 1) -> list[OutboxRow]: ...
    def renew_outbox_lease(self, row_id: int) -> bool: ...
    def next_outbox_due(self, destination: str) -> str | None: ...
    def finish_outbox(self, row_id: int, *, state: str, error: str = ..., next_attempt_at: str | None = ...) -> bool: ...
    def resume_in_flight(self) -> int: ...
    def retry_outbox(self, *, row_id: int | None = ..., destination: str | None = ..., actor: str = ...) -> int: ...
    def get_outbox(self, row_id: int) -> OutboxRow | None: ...
    def delivered_to(self, ref_table: str, ref_id: int, destinations: list[str]) -> bool: ...
    def first_outbox_for(self, destination: str, ref_table: str, ref_id: int) -> int | None: ...
    def outbox_stats(self) -> dict: ...
    def list_outbox(self, *, state: str | None = ..., destination: str | None = ..., limit: int = ...) -> list[OutboxRow]: ...


class OutboxStore:
    @staticmethod
    def _enqueue(
        conn,
        destinations: tuple[str, ...],
        kind: str,
        ref_table: str,
        ref_id: int,
        order_key: str,
        now: str,
    ) -> None:
        """Outbox rows, in the caller's transaction (docs/architecture.md rule 2)."""
        for destination in destinations:
            conn.execute(
                "INSERT INTO outbox (destination, kind, ref_table, ref_id, order_key, state, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (destination, kind, ref_table, ref_id, order_key, now, now, now),
            )

    _OUTBOX_COLUMNS = "id, destination, kind, ref_table, ref_id, order_key, state, attempts, next_attempt_at, last_error"

    # Set by the database class: who claims (replica id), for how long
    # (seconds; None: leases never run out, one process), and the row lock.
    replica_id: str = "local"
    lease_seconds: float | None = None
    _CLAIM_LOCK = ""
    #: no earlier row of the same study for the destination is pending or in flight
    _NONE_BEFORE = (
        "NOT EXISTS (SELECT 1 FROM outbox p WHERE p.destination = o.destination"
        " AND p.order_key = o.order_key AND p.id < o.id AND p.state IN ('pending', 'in_flight'))"
    )

    def claim_outbox(self, destination: str, now: str, limit: int = 1) -> list[OutboxRow]:
        """Claim due rows for delivery (state in_flight, leased to this replica).

        Order is kept per study per destination: a row waits while an
        earlier row of the same order key is pending or in flight (leased,
        or with a lease run out: that one goes first); a dead letter does
        not hold the rest back.
        """
        due = "(o.state = 'pending' AND o.next_attempt_at <= ?)"
        args: tuple = (destination, now)
        if self.lease_seconds is not None:
            due = f"({due} OR (o.state = 'in_flight' AND o.lease_until <= ?))"
            args = (destination, now, now)
            until = (datetime.fromisoformat(now) + timedelta(seconds=self.lease_seconds)).isoformat(timespec="milliseconds")
        else:
            until = None
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {self._OUTBOX_COLUMNS} FROM outbox o WHERE o.destination = ? AND {due} AND {self._NONE_BEFORE}"
                f" ORDER BY o.id LIMIT ?{self._CLAIM_LOCK}",
                (*args, limit),
            ).fetchall()
            for row in rows:
                conn.execute(
                    "UPDATE outbox SET state = 'in_flight', claimed_by = ?, lease_until = ?, updated_at = ? WHERE id = ?",
                    (self.replica_id, until, now, row[0]),
                )
        return [OutboxRow(*r) for r in rows]

    def renew_outbox_lease(self, row_id: int) -> bool:
        """A delivery still under way keeps its lease (the dispatcher calls this
        every third of the lease); False when the lease was lost."""
        if self.lease_seconds is None:
            return True
        now = datetime.fromisoformat(_now())
        until = (now + timedelta(seconds=self.lease_seconds)).isoformat(timespec="milliseconds")
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE outbox SET lease_until = ? WHERE id = ? AND state = 'in_flight' AND claimed_by = ?", (until, row_id, self.replica_id)
            ).rowcount == 1

    def next_outbox_due(self, destination: str) -> str | None:
        row = self._query_one(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE destination = ? AND state = 'pending'", (destination,)
        )
        return row[0]

    def finish_outbox(self, row_id: int, *, state: str, error: str = "", next_attempt_at: str | None = None) -> bool:
        """Record a delivery attempt: done, dead, or pending again at ``next_attempt_at``.

        Only the replica holding the row's lease records it; False when the
        lease was lost (it ran out and another replica claimed the row).
        """
        now = _now()
        with self._transaction() as conn:
            n = conn.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = CASE WHEN ? = 'done' THEN ? ELSE delivered_at END,"
                " claimed_by = '', lease_until = NULL"
                " WHERE id = ? AND state = 'in_flight' AND claimed_by = ?",
                (state, error[:500], now, next_attempt_at, state, now, row_id, self.replica_id),
            ).rowcount
            if n and state == "done":  # PS3.15 A.5.3.7 / A.5.3.4: instances transferred out, export
                self._audit_delivery(conn, row_id, now)
        return bool(n)

    def _audit_delivery(self, conn, row_id: int, now: str) -> None:
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
        """At start, rows this replica was sending go again.

        One process (no lease expiry): every row in flight.  Replicas: only
        the rows leased to this replica id; another replica's live leases
        are left alone (their rows come back when the lease runs out).
        """
        now = _now()
        sql, args = "UPDATE outbox SET state = 'pending', claimed_by = '', lease_until = NULL, updated_at = ? WHERE state = 'in_flight'", (now,)
        if self.lease_seconds is not None:
            sql, args = sql + " AND claimed_by = ?", (now, self.replica_id)
        with self._transaction() as conn:
            return conn.execute(sql, args).rowcount

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
