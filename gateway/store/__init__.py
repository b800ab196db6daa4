"""The store interface: what the daemon keeps, whatever database holds it.

:class:`Store` is the contract, split by aggregate (worklist, instances,
MPPS, commitment, outbox, audit, exams, service KPIs, priors, QA);
:class:`~gateway.store.sqlite.SqliteStore` is the embedded default and
:class:`~gateway.store.postgres.PostgresStore` the shared one: the same
aggregate code over either (gateway/store/db.py).
"""

from __future__ import annotations

from typing import ContextManager, Protocol

from gateway.store.records import (  # noqa: F401  (the records, re-exported)
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
from gateway.store.audit import AuditAggregate
from gateway.store.commitment import CommitmentAggregate
from gateway.store.exams import ExamsAggregate
from gateway.store.instances import InstancesAggregate
from gateway.store.mpps import MppsAggregate
from gateway.store.outbox import OutboxAggregate
from gateway.store.priors import PriorsAggregate
from gateway.store.qa import QaAggregate
from gateway.store.service import ServiceAggregate
from gateway.store.worklist import WorklistAggregate


class Store(
    WorklistAggregate, InstancesAggregate, MppsAggregate, CommitmentAggregate, OutboxAggregate,
    AuditAggregate, ExamsAggregate, ServiceAggregate, PriorsAggregate, QaAggregate, Protocol,
):  # fmt: skip
    """Thread-safe; every write is durable when the call returns.

    The union of the aggregates' complete interfaces (each module's
    ``...Aggregate`` protocol lists every method callers use).
    """

    schema_version: int

    def exclusive(self, name: str) -> ContextManager[None]: ...  # work under a name, one replica at a time
    def ping(self) -> bool: ...
    def close(self) -> None: ...


def open_store(path: str, database: str | None = None, *, replica_id: str | None = None, lease_seconds: float | None = None) -> "Store":
    """The store: SQLite under ``storage.path`` (the embedded default), or the
    PostgreSQL database ``storage.database`` (postgresql://user@host/db)
    shared by several replicas."""
    from pathlib import Path

    if database:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(database, replica_id=replica_id, lease_seconds=lease_seconds)
    from gateway.store.sqlite import SqliteStore

    return SqliteStore(Path(path) / "gateway.sqlite3")
