"""The store contract's unit tests run on both databases.

``open_test_store()`` opens a store of the test's backend: SQLite in the
test's folder, or PostgreSQL on a fresh database of the session's server
(tests/conftest.py ``postgres_server``: ``DXA_TEST_DATABASE_URL`` or a
throwaway cluster; skipped, with the reason, only when PostgreSQL is not
installed).  A second call opens the same database again (a restart).
"""

from __future__ import annotations

import pytest

BACKENDS = ["sqlite", "postgresql"]


def _opener(request, tmp_path, backend: str):
    opened = []
    database = None
    if backend == "postgresql":
        from tests.postgres import fresh_database

        database = fresh_database(request.getfixturevalue("postgres_server"))

    def open_(**options):
        from gateway.store import open_store

        store = open_store(str(tmp_path), database, **options)
        opened.append(store)
        return store

    open_.backend = backend
    open_.database = database
    return open_, opened


def _close(opened) -> None:
    for store in opened:
        try:
            store.close()
        except Exception:
            pass


@pytest.fixture(params=BACKENDS)
def open_test_store(request, tmp_path):
    open_, opened = _opener(request, tmp_path, request.param)
    yield open_
    _close(opened)


@pytest.fixture
def open_pg_store(request, tmp_path):
    """As ``open_test_store``, PostgreSQL only: replicas sharing one database."""
    open_, opened = _opener(request, tmp_path, "postgresql")
    yield open_
    _close(opened)


@pytest.fixture
def store(open_test_store):
    return open_test_store()
