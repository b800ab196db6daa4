"""tests/integration/test_routes.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_routes import *  # noqa: F403
