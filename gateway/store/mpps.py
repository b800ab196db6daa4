"""The MPPS aggregate: performed procedure steps, and the worklist moves they make.

A mixin over the database contract of gateway/store/db.py.
"""

from __future__ import annotations

from typing import Callable, Protocol

from gateway.store.db import now_iso as _now
from gateway.store.records import DuplicateInstance, MppsRow, NoSuchInstance
from mappings.mpps import StepKeys


class MppsAggregate(Protocol):
    """Modality Performed Procedure Steps (PS3.4 F.7)."""

    def get_mpps(self, sop_instance_uid: str) -> MppsRow | None: ...
    def get_mpps_by_id(self, row_id: int) -> tuple[MppsRow, str, str] | None: ...
    def mpps_create(self, sop_instance_uid: str, *, calling_ae: str, status: str, attributes: bytes,
                    keys: list[StepKeys], destinations: dict[str, tuple[str, ...]]) -> MppsRow: ...  # fmt: skip
    def mpps_update(self, sop_instance_uid: str, update: Callable[[bytes], tuple[bytes, str]], *, calling_ae: str,
                    destinations: dict[str, tuple[str, ...]]) -> MppsRow: ...  # fmt: skip
    def count_mpps_by_status(self) -> dict[str, int]: ...


class MppsStore:
    # -- MPPS --------------------------------------------------------------------

    def _mpps_row(self, row: tuple) -> MppsRow:
        return MppsRow(*row[:5], attributes=bytes(row[5]))

    def get_mpps(self, sop_instance_uid: str) -> MppsRow | None:
        row = self._query_one(
            "SELECT id, sop_instance_uid, status, calling_ae, worklist_item_id, attributes FROM mpps WHERE sop_instance_uid = ?",
            (sop_instance_uid,),
        )
        return self._mpps_row(row) if row else None

    def get_mpps_by_id(self, row_id: int) -> tuple[MppsRow, str, str] | None:
        """An MPPS row with its study UID and accession."""
        row = self._query_one(
            "SELECT id, sop_instance_uid, status, calling_ae, worklist_item_id, attributes, study_uid, accession FROM mpps WHERE id = ?",
            (row_id,),
        )
        return (self._mpps_row(row), row[6], row[7]) if row else None

    def _link_step(self, conn, keys: list[StepKeys]) -> int | None:
        """The worklist item a performed step reports on, if it was scheduled."""
        for key in keys:
            for where, args in (
                ("accession = ? AND requested_procedure_id = ? AND sps_id = ?", (key.accession, key.requested_procedure_id, key.sps_id)),
                ("study_uid = ? AND sps_id = ?", (key.study_uid, key.sps_id)),
                ("study_uid = ?", (key.study_uid,)),
            ):
                if any(not a for a in args):
                    continue
                row = conn.execute(f"SELECT id FROM worklist_items WHERE {where} ORDER BY id LIMIT 1", args).fetchone()
                if row:
                    return row[0]
        return None

    def _set_item_status(self, conn, item_id: int, status: str, now: str) -> None:
        row = conn.execute("SELECT id, created_at, updated_at, item FROM worklist_items WHERE id = ?", (item_id,)).fetchone()
        if row is not None:
            self._update(conn, item_id, self._row(row).item.replace(status=status), now)

    def mpps_create(
        self,
        sop_instance_uid: str,
        *,
        calling_ae: str,
        status: str,
        attributes: bytes,
        keys: list[StepKeys],
        destinations: dict[str, tuple[str, ...]],
    ) -> MppsRow:
        """Keep a new performed step (IN PROGRESS) and move its worklist item."""
        now = _now()
        with self._transaction() as conn:
            self._lock(conn, "worklist")  # it moves a worklist item
            if conn.execute("SELECT 1 FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone():
                raise DuplicateInstance(sop_instance_uid)
            item_id = self._link_step(conn, keys)
            study = keys[0].study_uid if keys else ""
            accession = keys[0].accession if keys else ""
            row_id = conn.execute(
                "INSERT INTO mpps (sop_instance_uid, status, calling_ae, worklist_item_id, study_uid, accession, created_at, updated_at, attributes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sop_instance_uid, status, calling_ae, item_id, study, accession, now, now, attributes),
            ).lastrowid
            if item_id is not None:
                self._set_item_status(conn, item_id, status, now)
            for kind, names in destinations.items():  # "mpps" forwards, "order-status" to the RIS
                self._enqueue(conn, names, kind, "mpps", row_id, study or sop_instance_uid, now)
            self._audit(conn, now, "mpps.create", calling_ae, {"mpps": row_id, "item": item_id, "status": status})
        return MppsRow(row_id, sop_instance_uid, status, calling_ae, item_id, attributes)

    def mpps_update(self, sop_instance_uid: str, update, *, calling_ae: str, destinations: dict[str, tuple[str, ...]]) -> MppsRow:
        """Apply ``update(current attributes) -> (attributes, status)`` atomically."""
        now = _now()
        with self._transaction() as conn:
            self._lock(conn, "worklist")  # it moves a worklist item (and N-SETs of one step are serialised)
            row = conn.execute(
                "SELECT id, sop_instance_uid, status, calling_ae, worklist_item_id, attributes, study_uid FROM mpps WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
            if row is None:
                raise NoSuchInstance(sop_instance_uid)
            current = self._mpps_row(row)
            attributes, status = update(current.attributes)
            conn.execute(
                "UPDATE mpps SET status = ?, attributes = ?, updated_at = ? WHERE id = ?",
                (status, attributes, now, current.id),
            )
            if current.worklist_item_id is not None and status != current.status:
                self._set_item_status(conn, current.worklist_item_id, status, now)
            for kind, names in destinations.items():
                self._enqueue(conn, names, kind, "mpps", current.id, row[6] or sop_instance_uid, now)
            self._audit(conn, now, "mpps.set", calling_ae, {"mpps": current.id, "status": status})
        return MppsRow(current.id, sop_instance_uid, status, current.calling_ae, current.worklist_item_id, attributes)

    def count_mpps_by_status(self) -> dict[str, int]:
        return dict(self._query("SELECT status, COUNT(*) FROM mpps GROUP BY status"))
