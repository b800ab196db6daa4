"""The instances aggregate: the spool index of stored objects.

A mixin over the database contract of gateway/store/db.py.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from gateway.store.db import now_iso as _now
from gateway.store.exams import RESULT_KINDS
from gateway.store.records import InstanceRecord, InstanceRow


class InstancesAggregate(Protocol):
    """Stored DICOM objects, each indexed with its deliveries queued in the same commit."""

    def current_instances(self, sop_instance_uid: str) -> list[InstanceRow]: ...
    def study_instances(self, study_uid: str, kinds: tuple[str, ...] = ...) -> list[InstanceRow]: ...
    def get_instance(self, row_id: int) -> InstanceRow | None: ...
    def add_instance(self, record: InstanceRecord, *, supersede: bool, destinations: tuple[str, ...]) -> int: ...
    def instance_totals(self) -> tuple[int, int]: ...


class InstanceStore:
    # -- the spool index ----------------------------------------------------------

    _INSTANCE_COLUMNS = (
        "sop_instance_uid, sop_class_uid, study_uid, series_uid, patient_id, accession, modality,"
        " manufacturer, kind, transfer_syntax, size, sha256, path, calling_ae"
    )

    def _instance_row(self, row: tuple) -> InstanceRow:
        row_id, received_at, is_current, *values = row
        return InstanceRow(id=row_id, record=InstanceRecord(*values), received_at=received_at, is_current=bool(is_current))

    def current_instances(self, sop_instance_uid: str) -> list[InstanceRow]:
        rows = self._query(
            f"SELECT id, received_at, is_current, {self._INSTANCE_COLUMNS} FROM instances"
            " WHERE sop_instance_uid = ? AND is_current = 1 ORDER BY id",
            (sop_instance_uid,),
        )
        return [self._instance_row(r) for r in rows]

    def study_instances(self, study_uid: str, kinds: tuple[str, ...] = ("image",)) -> list[InstanceRow]:
        """The study's current instances of these kinds, in arrival order (the workbench's images)."""
        marks = ", ".join("?" * len(kinds))
        rows = self._query(
            f"SELECT id, received_at, is_current, {self._INSTANCE_COLUMNS} FROM instances"
            f" WHERE study_uid = ? AND is_current = 1 AND kind IN ({marks}) ORDER BY id",
            (study_uid, *kinds),
        )
        return [self._instance_row(r) for r in rows]

    def get_instance(self, row_id: int) -> InstanceRow | None:
        row = self._query_one(
            f"SELECT id, received_at, is_current, {self._INSTANCE_COLUMNS} FROM instances WHERE id = ?", (row_id,)
        )
        return self._instance_row(row) if row else None

    def add_instance(self, record: InstanceRecord, *, supersede: bool, destinations: tuple[str, ...]) -> int:
        """Index a stored file and queue its deliveries, in one commit.

        ``supersede`` marks earlier copies of the same SOP Instance UID as
        replaced (their files stay where they are).
        """
        now = _now()
        values = dataclasses.astuple(record)

        def work(conn) -> int:
            if supersede:
                conn.execute(
                    "UPDATE instances SET is_current = 0 WHERE sop_instance_uid = ? AND is_current = 1",
                    (record.sop_instance_uid,),
                )
            # A result carrier is handed to the result reader in this same
            # commit, so an acknowledged object is read even after a crash.
            row_id = conn.execute(
                f"INSERT INTO instances (received_at, is_current, results_state, {self._INSTANCE_COLUMNS})"
                f" VALUES (?, 1, ?, {', '.join('?' * len(values))})",
                (now, "pending" if record.kind in RESULT_KINDS else "", *values),
            ).lastrowid
            self._enqueue(conn, destinations, record.kind, "instances", row_id, record.study_uid, now)
            # PS3.15 A.5.3.7 DICOM Instances Transferred, forwarded by gateway/audit_atna.py
            self._audit(conn, now, "instance.received", record.calling_ae, {"instance": row_id, "study_uid": record.study_uid, "patient_id": record.patient_id, "sop_class": record.sop_class_uid})
            return row_id

        # Many associations store at once: one commit (one fsync) for all.
        return self._grouped(work)

    def instance_totals(self) -> tuple[int, int]:
        """(current instances, their bytes)."""
        row = self._query_one("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances WHERE is_current = 1")
        return int(row[0]), int(row[1])  # PostgreSQL's SUM of a BIGINT is a numeric (Decimal)
