"""The scanner-QA aggregate of the store (README "Running a DXA service"): phantom scans.

A mixin over the database contract of gateway/store/db.py (``_transaction``,
``_query``, and the exams' ``_set_results``).  A phantom's BMD is recorded in the same
commit that marks its object read, so a crash never loses or doubles one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol


@dataclass(frozen=True, slots=True)
class QaScanRow:
    id: int
    serial: str
    instance_id: int
    station_ae: str
    manufacturer: str
    model: str
    patient_id: str
    site: str
    bmd: str
    scanned_at: str
    received_at: str


_COLS = "id, serial, instance_id, station_ae, manufacturer, model, patient_id, site, bmd, scanned_at, received_at"


class QaAggregate(Protocol):
    """Scanner QA: phantom scans by scanner."""

    def add_qa_scan(self, row: QaScanRow) -> int: ...  # fmt: skip
    def qa_scans(self, serial: str) -> list[QaScanRow]: ...  # fmt: skip
    def qa_serials(self) -> list[str]: ...  # fmt: skip


class QaStore:
    def add_qa_scan(self, row: QaScanRow) -> int:
        """Record a phantom scan and mark its object read (``results_state = none``)."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO qa_scans (serial, instance_id, station_ae, manufacturer, model, patient_id, site, bmd, scanned_at, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance_id) DO NOTHING",
                (row.serial, row.instance_id, row.station_ae, row.manufacturer, row.model, row.patient_id, row.site, row.bmd, row.scanned_at, now),
            )
            self._set_results(conn, row.instance_id, "none", "phantom scan (QA)", None)
            return cur.lastrowid if cur.rowcount else 0

    def qa_scans(self, serial: str) -> list[QaScanRow]:
        """The scanner's phantom scans in time order."""
        rows = self._query(f"SELECT {_COLS} FROM qa_scans WHERE serial = ? ORDER BY scanned_at, id", (serial,))
        return [QaScanRow(*r) for r in rows]

    def qa_serials(self) -> list[str]:
        """Every scanner with a phantom scan, first seen first."""
        return [r[0] for r in self._query("SELECT serial FROM qa_scans GROUP BY serial ORDER BY MIN(id)")]
