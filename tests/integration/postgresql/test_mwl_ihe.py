"""tests/integration/test_mwl_ihe.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_mwl_ihe import *  # noqa: F403
