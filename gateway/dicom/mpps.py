"""Modality Performed Procedure Step SCP (PS3.4 Annex F.7).

N-CREATE opens a step IN PROGRESS, N-SET updates it until it is COMPLETED
or DISCONTINUED; each change moves the linked worklist item and becomes
outbox rows (MPPS forward, order status to the RIS) in the same commit.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from gateway.dicom.tolerance import note_defects
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.store import DuplicateInstance, NoSuchInstance, Store
from mappings.mpps import (
    DUPLICATE_INSTANCE,
    INVALID_ATTRIBUTE_VALUE,
    NO_SUCH_INSTANCE,
    PROCESSING_FAILURE,
    MppsError,
    apply_set,
    check_create,
    status_of,
    step_keys,
)
from mappings.bmd.dose import dose_from_attributes
from mappings.instances import text_value
from mappings.uids import UidError, check_dataset_uids, check_uid
from mappings.bmd.models import BmdExam
from routes.rules import Rule, RoutedObject, destinations_for

log = logging.getLogger("gateway.mpps")

MPPS_UID = str(ModalityPerformedProcedureStep)
# PS3.7 Annex C: the SOP Instance UID is not a valid one (here: not a safe
# one, mappings/uids.py); the step is neither created nor changed.
INVALID_OBJECT_INSTANCE = 0x0117


def _status(status: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


class MppsScp:
    def __init__(
        self, store: Store, rules: tuple[Rule, ...], metrics: Metrics,
        on_dose: Callable[[str, dict], None] = lambda study_uid, dose: None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.metrics = metrics
        self.on_dose = on_dose

    def _report_dose(self, ds: Dataset) -> None:
        """Pass on the Radiation Dose module of the step (PS3.3 C.4.16), per study it reports on."""
        try:
            dose = dose_from_attributes(ds)
        except Exception:  # an attribute pydicom cannot convert: no dose from this step
            return
        if dose is None:
            return
        record = BmdExam("", dose=dataclasses.replace(dose, source="mpps")).to_dict()["dose"]
        for study_uid in sorted({k.study_uid for k in step_keys(ds) if k.study_uid}):
            self.on_dose(study_uid, record)

    def _destinations(self, ds: Dataset, calling: str) -> dict[str, tuple[str, ...]]:
        out = {}
        for kind in ("mpps", "order-status"):
            routed = RoutedObject(kind=kind, sop_class=MPPS_UID, modality=text_value(ds, "Modality"), calling_ae=calling)
            names = destinations_for(self.rules, routed)
            if names:
                out[kind] = names
        return out

    def _check_uids(self, op: str, uid: str, ds: Dataset | None, calling: str) -> Dataset | None:
        """A refusal if the step's UID or a UID in its attributes is unsafe; counts tolerated defects."""
        defects: tuple[str, ...] = ()
        try:
            defects = check_uid(uid).defects
        except UidError as exc:
            log.warning("mpps.refused", extra=fields(op=op, status="0x0117", reason=f"SOP Instance UID: {exc.reason}", calling_ae=calling))
            self.metrics.mpps.labels(op, "refused").inc()
            return _status(INVALID_OBJECT_INSTANCE, f"SOP Instance UID is not a valid UID: {exc.reason}")
        if ds is not None:
            try:
                problem, more = check_dataset_uids(ds)
            except Exception as exc:  # pydicom may raise anything converting a broken value
                log.warning("mpps.refused", extra=fields(op=op, reason=type(exc).__name__, calling_ae=calling))
                return _status(PROCESSING_FAILURE, "cannot decode the attribute list")
            if problem is not None:
                log.warning("mpps.refused", extra=fields(op=op, status="0x0106", reason=f"{problem.path}: {problem.reason}", calling_ae=calling))
                self.metrics.mpps.labels(op, "refused").inc()
                status = _status(INVALID_ATTRIBUTE_VALUE, f"{problem.path.rsplit('.', 1)[-1]}: not a valid UID")
                status.OffendingElement = problem.tag
                return status
            defects += more
        note_defects(self.metrics, defects, service="mpps", calling_ae=calling)
        return None

    def handle_create(self, event: evt.Event):
        calling = event.assoc.requestor.ae_title.strip()
        if str(event.request.AffectedSOPClassUID) != MPPS_UID:
            return _status(0x0122, "SOP class not supported"), None
        uid = str(event.request.AffectedSOPInstanceUID or "") or generate_uid()
        try:
            ds = event.attribute_list
        except Exception as exc:
            log.warning("mpps.refused", extra=fields(op="create", reason=type(exc).__name__, calling_ae=calling))
            return _status(PROCESSING_FAILURE, "cannot decode the attribute list"), None
        refusal = self._check_uids("create", uid, ds, calling)
        if refusal is not None:
            return refusal, None
        try:
            status = check_create(ds)
        except MppsError as exc:
            log.warning("mpps.refused", extra=fields(op="create", status=f"0x{exc.status:04X}", reason=exc.comment, calling_ae=calling))
            self.metrics.mpps.labels("create", "refused").inc()
            return _status(exc.status, exc.comment), None
        except Exception as exc:
            log.warning("mpps.refused", extra=fields(op="create", reason=type(exc).__name__, calling_ae=calling))
            return _status(PROCESSING_FAILURE, "cannot decode the attribute list"), None
        try:
            row = self.store.mpps_create(
                uid,
                calling_ae=calling,
                status=status,
                attributes=ds.to_json().encode(),
                keys=step_keys(ds),
                destinations=self._destinations(ds, calling),
            )
        except DuplicateInstance:
            log.warning("mpps.refused", extra=fields(op="create", status="0x0111", reason="duplicate", calling_ae=calling))
            self.metrics.mpps.labels("create", "duplicate").inc()
            return _status(DUPLICATE_INSTANCE, "an MPPS with this SOP Instance UID exists"), None
        self.metrics.mpps.labels("create", status).inc()
        log.info("mpps.created", extra=fields(mpps=row.id, item=row.worklist_item_id, unscheduled=row.worklist_item_id is None, calling_ae=calling))
        self._report_dose(ds)
        return 0x0000, ds

    def handle_set(self, event: evt.Event):
        calling = event.assoc.requestor.ae_title.strip()
        if str(event.request.RequestedSOPClassUID) != MPPS_UID:
            return _status(0x0122, "SOP class not supported"), None
        uid = str(event.request.RequestedSOPInstanceUID)
        try:
            modification = event.modification_list
        except Exception:
            return _status(PROCESSING_FAILURE, "cannot decode the modification list"), None
        refusal = self._check_uids("set", uid, modification, calling)
        if refusal is not None:
            return refusal, None
        result: dict[str, Dataset] = {}

        def update(current: bytes) -> tuple[bytes, str]:
            new = apply_set(Dataset.from_json(current.decode()), modification)
            result["ds"] = new
            return new.to_json().encode(), status_of(new)

        try:
            row = self.store.mpps_update(uid, update, calling_ae=calling, destinations=self._destinations(modification, calling))
        except NoSuchInstance:
            log.warning("mpps.refused", extra=fields(op="set", status="0x0112", reason="no such instance", calling_ae=calling))
            self.metrics.mpps.labels("set", "unknown").inc()
            return _status(NO_SUCH_INSTANCE, "no MPPS with this SOP Instance UID"), None
        except MppsError as exc:
            log.warning("mpps.refused", extra=fields(op="set", status=f"0x{exc.status:04X}", reason=exc.comment, calling_ae=calling))
            self.metrics.mpps.labels("set", "refused").inc()
            return _status(exc.status, exc.comment), None
        self.metrics.mpps.labels("set", row.status).inc()
        log.info("mpps.updated", extra=fields(mpps=row.id, status=row.status, item=row.worklist_item_id, calling_ae=calling))
        if "ds" in result:
            self._report_dose(result["ds"])
        return 0x0000, modification
