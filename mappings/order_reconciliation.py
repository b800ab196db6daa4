"""Order reconciliation: which stored steps a message changes, and what they keep.

Pure (no I/O): both stores (gateway/store/worklist.py, over SQLite or
PostgreSQL) look the rows up and write what these functions decide.
The rules are docs/hl7-interface.md, "Orders in" (ORM^O01, ADT^A08/A31/A40).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mappings.hl7_orders import MergePatient, OrderKey, UpdatePatient
from mappings.worklist import HELD, SCHEDULED, WorklistItem

#: Statuses of the steps a patient update or merge moves ("open steps").
OPEN_STATUSES = ("SCHEDULED", "IN PROGRESS")


def lookup_keys(key: OrderKey) -> tuple[tuple[str, str], ...]:
    """How a change finds its order, in the order tried: placer order number
    (ORC-2), filler order number (ORC-3), accession number; the first that
    finds rows of the same sender wins."""
    return tuple((field, value) for field, value in (("placer", key.placer), ("filler", key.filler), ("accession", key.accession)) if value)


def kept_status(current: WorklistItem, change: WorklistItem) -> str:
    """A changed step's status (ORC-1 XO, a FHIR update).

    A HELD step takes the change's status (SCHEDULED once the referrer is
    entitled); a step already released (justified) stays released unless
    the change names another referrer who is not entitled; otherwise the
    step keeps its progress.
    """
    if current.status == HELD:
        return change.status
    if change.status == HELD:
        same = (current.referrer_id, current.requesting_physician) == (change.referrer_id, change.requesting_physician)
        return current.status if same or current.status != SCHEDULED else HELD
    return current.status if current.status != SCHEDULED else change.status


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One step of an order as it is to be stored: a new row (``row_id`` None) or an update."""

    row_id: int | None
    item: WorklistItem


def reconcile_order(existing: Sequence[tuple[int, WorklistItem]], items: Sequence[WorklistItem]) -> list[StepWrite]:
    """ORC-1 NW / XO: each step of the message (one per OBR) against the stored ones.

    A step is the same step when its Requested Procedure ID and Scheduled
    Procedure Step ID are; it keeps its Study Instance UID (the scanner may
    have used it already) and its status by :func:`kept_status`; a step no
    longer HELD loses its hold reason.  Other steps are new rows.
    """
    out: list[StepWrite] = []
    for item in items:
        match = next(
            ((row_id, cur) for row_id, cur in existing if cur.requested_procedure_id == item.requested_procedure_id and cur.sps_id == item.sps_id),
            None,
        )
        if match is None:
            out.append(StepWrite(None, item))
            continue
        row_id, current = match
        kept = item.replace(study_instance_uid=current.study_instance_uid or item.study_instance_uid, status=kept_status(current, item))
        if kept.status != HELD:
            kept = kept.replace(hold_reason="")
        out.append(StepWrite(row_id, kept))
    return out


def patient_selection(action: UpdatePatient | MergePatient) -> tuple[str, str]:
    """(patient ID, issuer) whose open steps the ADT message changes: PID-3 for
    A08/A31, the prior patient MRG-1 for A40.  An empty issuer matches any;
    a stored step without an issuer matches any issuer."""
    if isinstance(action, UpdatePatient):
        return action.demographics.patient_id, action.demographics.issuer_of_patient_id
    return action.prior_patient_id, action.prior_issuer


def patient_changes(action: UpdatePatient | MergePatient) -> dict:
    """What the open steps take: the new demographics (PID-5, -7, -8, -22), and
    for a merge (A40) the surviving patient ID and issuer (the prior's issuer
    when PID-3 names none)."""
    changes = action.demographics.changes()
    if isinstance(action, MergePatient):
        changes.update(patient_id=action.patient_id, issuer_of_patient_id=action.issuer or action.prior_issuer)
    return changes
