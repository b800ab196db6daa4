"""tests/integration/test_routes.py again, on PostgreSQL (see conftest.py here)."""

from tests.integration.test_routes import *  # noqa: F403

# The PACS-down test waits out a two-minute outage: it tests the retry
# schedule, which does not depend on the store, so it runs once (on SQLite)
# to keep the suite within its budget.  The kill -9 and ordering tests run here.
del test_pacs_down_then_back_everything_arrives_in_order  # noqa: F821
