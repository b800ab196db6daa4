"""tests/integration/test_orders_worklist.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_orders_worklist import *  # noqa: F403
