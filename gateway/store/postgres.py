"""The PostgreSQL store: ``storage.database: postgresql://user@host/db``.

Several gateway replicas share one database (and one spool folder): each
serves the MWL, takes C-STORE, MPPS and HL7, and delivers the outbox.  The
aggregates are the SQLite store's (gateway/store/aggregates.py) over a
psycopg 3 connection pool; what differs is here:

- every write is one transaction, committed (durable) before the method
  returns; there is no group commit (PostgreSQL commits concurrent
  transactions together itself);
- read-modify-write of the worklist (an order change, an MPPS moving its
  step) holds a transaction-scoped advisory lock, as SQLite's one writer does;
- the outbox is claimed ``FOR UPDATE SKIP LOCKED`` with a lease
  (gateway/store/outbox.py): a replica killed mid-delivery leaves rows whose
  lease runs out and another replica takes them; per-study order holds;
- ``exclusive(name)`` (a session advisory lock) serialises work that spans
  several calls across replicas: a study's result reading and drafting
  (gateway/exams.py), the ATNA forwarder's shared cursor (gateway/audit_atna.py).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlsplit, urlunsplit

from gateway.store.aggregates import Aggregates
from gateway.store.db import PgConnection, lock_key
from gateway.store.pg_migrations import pg_migrations
from gateway.store.records import StoreError

T = TypeVar("T")

DEFAULT_LEASE_SECONDS = 60.0  # the dispatcher renews it every third of this while sending
CONNECT_TIMEOUT = 15.0  # seconds at start for the first connection
POOL_SIZE = 16  # the daemon's I/O executor has 16 threads; DICOM handler threads wait their turn


def default_replica_id() -> str:
    """host:pid -- unique per process; a restarted replica's rows come back when their lease runs out."""
    return f"{socket.gethostname()}:{os.getpid()}"


def redacted(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class PostgresStore(Aggregates):
    """The shared store (``storage.database``)."""

    _CLAIM_LOCK = " FOR UPDATE OF o SKIP LOCKED"
    # The same rule as a probe of index outbox_order (ordered, LIMIT 1): without
    # statistics yet (a new database) PostgreSQL planned the NOT EXISTS as a
    # scan of every pending row per row, 280 ms a claim at 1,600 rows.
    _NONE_BEFORE = (
        "(SELECT p.id FROM outbox p WHERE p.destination = o.destination AND p.order_key = o.order_key AND p.id < o.id"
        " AND p.state IN ('pending', 'in_flight') ORDER BY p.destination, p.order_key, p.id LIMIT 1) IS NULL"
    )
    _REFERRED_AT = "(convert_from(item, 'UTF8')::jsonb ->> 'referred_at')"

    def __init__(self, url: str, *, replica_id: str | None = None, lease_seconds: float | None = None, pool_size: int = POOL_SIZE) -> None:
        from psycopg_pool import ConnectionPool, PoolTimeout

        self.url = url
        self.replica_id = replica_id or default_replica_id()
        self.lease_seconds = float(lease_seconds) if lease_seconds else DEFAULT_LEASE_SECONDS
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=False, name="dxagw-store", timeout=30
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self._migrate()
        except PoolTimeout:
            self._pool.close()
            raise StoreError(f"cannot connect to the database {redacted(url)} within {CONNECT_TIMEOUT:g} s") from None
        except BaseException:
            self._pool.close()
            raise

    # -- the database contract (gateway/store/db.py) ---------------------------------

    @contextmanager
    def _read(self) -> Iterator[PgConnection]:
        with self._pool.connection() as conn:
            yield PgConnection(conn)

    @contextmanager
    def _transaction(self) -> Iterator[PgConnection]:
        with self._pool.connection() as conn:
            with conn.transaction():
                yield PgConnection(conn)

    def _grouped(self, work: Callable[[PgConnection], T]) -> T:
        with self._transaction() as conn:
            return work(conn)

    def _lock(self, conn: PgConnection, name: str) -> None:
        """Until this transaction ends, no other replica's holds ``name``."""
        conn.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Work under ``name`` across several calls, one replica (and thread) at a time:
        a session advisory lock on a connection of its own, released at exit or
        when the replica dies (its session ends)."""
        key = lock_key(name)
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    # -- schema ------------------------------------------------------------------------

    def _migrate(self) -> None:
        scripts = pg_migrations()
        with self._pool.connection() as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("migrate"),))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = row[0] if row else 0
                if version > len(scripts):
                    raise StoreError(f"database schema {version} is newer than this gateway ({len(scripts)})")
                for number, script in enumerate(scripts[version:], start=version + 1):
                    conn.execute(script)
                    conn.execute("UPDATE schema_version SET version = %s", (number,))
            conn.execute("ANALYZE outbox, worklist_items, instances")  # fresh statistics for the planner (it samples)

    @property
    def schema_version(self) -> int:
        return self._query_one("SELECT version FROM schema_version")[0]

    def close(self) -> None:
        self._pool.close()

    def ping(self) -> bool:
        return self._query_one("SELECT 1")[0] == 1
