"""The Store protocol is the store's complete interface : every method the
daemon calls is declared by an aggregate's protocol, and both databases implement each."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.store import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> set[str]:
    names: set[str] = set()
    for cls in Store.__mro__:
        if cls is object:
            continue
        names |= {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return names | {"schema_version"}


def _public(cls) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")} - {"replica_id", "lease_seconds"}


def test_both_stores_implement_exactly_the_protocol():
    declared = _declared()
    assert _public(SqliteStore) == declared
    assert _public(PostgresStore) == declared


def test_every_store_call_of_the_daemon_is_declared():
    called = set()
    for path in [*ROOT.glob("gateway/**/*.py"), *ROOT.glob("routes/**/*.py")]:
        if "gateway/store/" in path.as_posix():
            continue
        called |= set(re.findall(r"(?:^|[^\w.\"]|self\.)store\.([a-z]\w*)\b", path.read_text(), re.M))
    assert called, "no store calls found"
    assert called - _declared() == set()
