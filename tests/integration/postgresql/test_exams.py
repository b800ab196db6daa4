"""tests/integration/test_exams.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_exams import *  # noqa: F403
