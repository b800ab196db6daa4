"""Every aggregate of the store, as one class both databases derive from.

Each mixin is written once over the database contract of gateway/store/db.py;
gateway/store/sqlite.py and gateway/store/postgres.py supply that contract.
"""

from __future__ import annotations

from gateway.store.audit import AuditStore
from gateway.store.commitment import CommitmentStore
from gateway.store.exams import ExamStore
from gateway.store.instances import InstanceStore
from gateway.store.mpps import MppsStore
from gateway.store.outbox import OutboxStore
from gateway.store.priors import PriorStore
from gateway.store.qa import QaStore
from gateway.store.service import ServiceStore
from gateway.store.worklist import WorklistStore


class Aggregates(WorklistStore, InstanceStore, MppsStore, CommitmentStore, OutboxStore, AuditStore, ExamStore, ServiceStore, PriorStore, QaStore):
    """The store's methods; a database class adds the connections (``_read()`` and the rest of gateway/store/db.py's contract)."""

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read() as conn:
            return conn.execute(sql, args).fetchall()

    def _query_one(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._read() as conn:
            return conn.execute(sql, args).fetchone()
