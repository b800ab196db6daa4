"""What the aggregate mixins need of a database, and the PostgreSQL side of it.

Every aggregate (worklist.py, instances.py, mpps.py, commitment.py,
outbox.py, audit.py, exams.py, priors.py, qa.py, service.py) is written once
in SQL both databases run, with ``?`` (or ``:name``) placeholders, over:

- ``_transaction()``: a connection in one write transaction, durable at exit;
- ``_grouped(work)``: ``work(conn)`` in a transaction another thread's may share;
- ``_read()``, ``_query()``, ``_query_one()``: reads outside a transaction;
- ``_lock(conn, name)``: serialise read-modify-write of one aggregate
  (SQLite has one writer already; PostgreSQL takes an advisory lock).

:class:`PgConnection` gives a psycopg connection the sqlite3 calls the
mixins use (``execute`` returning a cursor with ``lastrowid`` and
``rowcount``), translating the placeholders once per statement.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime, timezone
from functools import lru_cache

#: Tables whose rows have an ``id`` (an INSERT returns it as ``lastrowid``).
ID_TABLES = frozenset({
    "inbound_messages", "worklist_items", "audit", "instances", "mpps", "commitments", "outbox",
    "exams", "reports", "report_payloads", "backfill_runs", "qa_scans",
})  # fmt: skip


def now_iso() -> str:
    """The stores' timestamps: UTC ISO 8601 with milliseconds (text, ordered as strings)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


_TOKEN = re.compile(r"'(?:[^']|'')*'|(?<!:):([A-Za-z_][A-Za-z0-9_]*)|\?|%")
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+([a-z_]+)", re.I)


@lru_cache(maxsize=1024)
def translate(sql: str, named: bool) -> tuple[str, bool]:
    """(psycopg SQL, whether ``RETURNING id`` was added) for an sqlite3 statement."""

    def sub(m: re.Match) -> str:
        token = m.group(0)
        if token.startswith("'"):
            return token.replace("%", "%%")
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return f"%({m.group(1)})s" if named else token

    out = _TOKEN.sub(sub, sql)
    out = re.sub(r"\s+INDEXED BY \w+", "", out)  # a SQLite planner hint
    insert = _INSERT.match(out)
    returning = bool(insert and insert.group(1) in ID_TABLES and " RETURNING " not in out.upper())
    if returning:
        out += " RETURNING id"
    return out, returning


class PgCursor:
    """The part of an sqlite3 cursor the stores use."""

    __slots__ = ("_cur", "lastrowid", "rowcount")

    def __init__(self, cur, lastrowid: int | None) -> None:
        self._cur = cur
        self.lastrowid = lastrowid
        self.rowcount = cur.rowcount

    def fetchone(self):
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list:
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self):
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection that takes sqlite3-style statements."""

    __slots__ = ("raw",)

    def __init__(self, raw) -> None:
        self.raw = raw

    def execute(self, sql: str, args=()) -> PgCursor:
        named = isinstance(args, dict)
        text, returning = translate(sql, named)
        cur = self.raw.execute(text, args if named else tuple(args))
        lastrowid = None
        if returning:
            row = cur.fetchone()
            lastrowid = row[0] if row else None
        return PgCursor(cur, lastrowid)


def lock_key(name: str) -> int:
    """A stable 32-bit advisory lock key for an aggregate's name."""
    return zlib.crc32(f"dxagw:{name}".encode())
