"""The store-heavy integration modules again, each daemon on a fresh PostgreSQL database.

Each module here star-imports one module of tests/integration (its tests and
fixtures, run a second time); the fixture below makes ``start_daemon`` give
every daemon folder its own database on the session's server (conftest
``postgres_server``: a throwaway cluster, or ``DXA_TEST_DATABASE_URL``).
"""

import os

import pytest

from tests.support import DATABASE_ENV


@pytest.fixture(scope="module", autouse=True)
def on_postgresql(postgres_server):
    """Autouse, so it runs before the module's own daemon fixtures (pytest: autouse first in a scope)."""
    before = os.environ.get(DATABASE_ENV)
    os.environ[DATABASE_ENV] = postgres_server
    yield postgres_server
    if before is None:
        os.environ.pop(DATABASE_ENV, None)
    else:
        os.environ[DATABASE_ENV] = before
