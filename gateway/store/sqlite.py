"""The SQLite store: WAL, synchronous=FULL, one writer, a reader per thread.

Thread-safe: pynetdicom's handler threads and the asyncio side's executor
both call it (docs/architecture.md rule 4).  Every write is one transaction that is
durable when the method returns (docs/architecture.md rule 1).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from gateway.store.aggregates import Aggregates
from gateway.store.migrations import MIGRATIONS
from gateway.store.records import StoreError
from mappings.worklist import ACTIVE_STATUSES

MAX_IDLE_READERS = 8


T = TypeVar("T")


class _Pending:
    """One caller's work in a group commit."""

    __slots__ = ("work", "result", "error", "done")

    def __init__(self, work: Callable[[sqlite3.Connection], object]) -> None:
        self.work = work
        self.result = None
        self.error: BaseException | None = None
        self.done = False


class SqliteStore(Aggregates):
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
        self._named_mutex = threading.Lock()
        self._named: dict[str, list] = {}  # exclusive(): name -> [lock, holders and waiters]
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

    def _lock(self, conn, name: str) -> None:
        """Nothing to do: SQLite has one writer (BEGIN IMMEDIATE serialises every write)."""

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Work under ``name`` across several calls, one thread at a time (one process).

        A lock per name, dropped when no thread holds or waits for it.
        """
        with self._named_mutex:
            entry = self._named.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._named_mutex:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._named[name]


__all__ = ["SqliteStore", "ACTIVE_STATUSES"]
