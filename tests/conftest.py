import pytest

from tests.support import start_daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """The real gateway, as a subprocess on free ports, for one test module."""
    d = start_daemon(tmp_path_factory.mktemp("gw"))
    yield d
    d.stop()
