"""The audit aggregate: who did what to which data (every access to patient data).

A mixin over the database contract of gateway/store/db.py; ``_audit`` writes
a row in the caller's transaction.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from gateway.store.db import now_iso as _now


class AuditAggregate(Protocol):
    """The audit trail (forwarded as ATNA by gateway/audit_atna.py)."""

    def audit(self, event: str, actor: str, detail: dict) -> None: ...
    def audit_many(self, rows: list[tuple[str, str, dict]]) -> None: ...
    def max_audit_id(self) -> int: ...
    def audit_since(self, after_id: int, limit: int = ...) -> list[dict]: ...
    def list_audit(self, *, event: str | None = ..., actor: str | None = ..., limit: int = ...) -> list[dict]: ...


class AuditStore:
    # -- audit -----------------------------------------------------------------

    @staticmethod
    def _audit(conn, at: str, event: str, actor: str, detail: dict) -> None:
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
