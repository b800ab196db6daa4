"""The storage commitment aggregate: each N-ACTION request and its report.

A mixin over the database contract of gateway/store/db.py.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from gateway.store.db import now_iso as _now


class CommitmentAggregate(Protocol):
    """Storage Commitment Push Model transactions (PS3.4 J.3)."""

    def add_commitment(self, transaction_uid: str, calling_ae: str, refs: list[tuple[str, str]]) -> int: ...
    def finish_commitment(self, commitment_id: int, *, state: str, failed: int) -> None: ...


class CommitmentStore:
    # -- storage commitment ----------------------------------------------------

    def add_commitment(self, transaction_uid: str, calling_ae: str, refs: list[tuple[str, str]]) -> int:
        now = _now()
        with self._transaction() as conn:
            return conn.execute(
                "INSERT INTO commitments (transaction_uid, calling_ae, requested_at, state, request) VALUES (?, ?, ?, 'requested', ?)",
                (transaction_uid, calling_ae, now, orjson.dumps(refs)),
            ).lastrowid

    def finish_commitment(self, commitment_id: int, *, state: str, failed: int) -> None:
        now = _now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE commitments SET state = ?, failed = ?, reported_at = ? WHERE id = ?",
                (state, failed, now, commitment_id),
            )
