"""tests/integration/test_report_release.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_report_release import *  # noqa: F403
