import os

import pytest

from tests.support import DATABASE_ENV, start_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """The real gateway, as a subprocess on free ports, for one test module."""
    d = start_daemon(tmp_path_factory.mktemp("gw"))
    yield d
    d.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server's URL for the session: ``DXA_TEST_DATABASE_URL`` if set,
    else a throwaway cluster (tests/postgres.py); skips when PostgreSQL is not installed."""
    if os.environ.get(DATABASE_ENV):
        yield os.environ[DATABASE_ENV]
        return
    from tests.postgres import pg_bin, start_cluster

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): ./run-tests installs it from Debian")
    cluster = start_cluster()
    yield cluster.url
    cluster.stop()
