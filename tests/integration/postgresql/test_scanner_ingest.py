"""tests/integration/test_scanner_ingest.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_scanner_ingest import *  # noqa: F403
