"""tests/integration/test_mwl_differential.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_mwl_differential import *  # noqa: F403
