"""Storage Commitment Push Model SCP (PS3.4 Annex J).

N-ACTION asks the gateway to take responsibility for a list of instances.
The request is recorded, answered, and then an N-EVENT-REPORT lists what is
durably in the spool (file present, checksum as stored) and, in the Failed
SOP Sequence, what is not.  The report goes on the same association when the
peer is still there (and ``report_on: same``), else on a new association to
the peer's address from ``dicom.peers``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from gateway.config import DicomSettings
from gateway.dicom.tolerance import note_defects
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.spool import Spool, sha256_of
from gateway.store import Store
from mappings.instances import text_value, valid_uid
from mappings.uids import check_dataset_uids

log = logging.getLogger("gateway.commitment")

COMMITMENT_UID = str(StorageCommitmentPushModel)
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance (PS3.4 J.3.5)
# PS3.4 J.3.3.1.1 Failure Reason values
NO_SUCH_OBJECT = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110
INVALID_ARGUMENT_VALUE = 0x0115  # PS3.7 10.1.4.1.10: N-ACTION action information refused


def _status(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds



def _ref(item, keyword: str) -> str:
    """A reference's UID; a missing one is a KeyError (the action is refused)."""
    if keyword not in item:
        raise KeyError(keyword)
    return text_value(item, keyword, strict=True)

class CommitmentScp:
    def __init__(self, settings: DicomSettings, spool: Spool, store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.spool = spool
        self.store = store
        self.metrics = metrics

    def handle_action(self, event: evt.Event):
        calling = event.assoc.requestor.ae_title.strip()
        req = event.request
        if str(req.RequestedSOPClassUID) != COMMITMENT_UID:
            return _status(0x0122, "SOP class not supported"), None
        if req.ActionTypeID != 1:
            return _status(0x0123, "no such action type"), None
        try:
            info = event.action_information
            transaction = text_value(info, "TransactionUID")
            refs = [
                (_ref(item, "ReferencedSOPClassUID"), _ref(item, "ReferencedSOPInstanceUID"))
                for item in info.get("ReferencedSOPSequence") or []
            ]
            problem, defects = check_dataset_uids(info)
        except Exception:
            return _status(PROCESSING_FAILURE, "cannot decode the action information"), None
        if problem is not None:
            log.warning("commitment.refused", extra=fields(status="0x0115", reason=f"{problem.path}: {problem.reason}", calling_ae=calling))
            return _status(INVALID_ARGUMENT_VALUE, f"{problem.path.rsplit('.', 1)[-1]}: not a valid UID"), None
        note_defects(self.metrics, defects, service="commitment", calling_ae=calling)
        if not valid_uid(transaction):
            return _status(0x0120, "TransactionUID is required"), None
        if not refs:
            return _status(0x0120, "ReferencedSOPSequence is required"), None
        commitment_id = self.store.add_commitment(transaction, calling, refs)
        self.metrics.commitments.inc()
        log.info("commitment.requested", extra=fields(commitment=commitment_id, instances=len(refs), calling_ae=calling))
        timer = threading.Timer(
            self.settings.commitment.report_delay,
            self._report,
            args=(event.assoc, calling, commitment_id, transaction, refs),
        )
        timer.daemon = True
        timer.start()
        return 0x0000, None

    def _check(self, refs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
        """(committed, failed with reason) for the requested instances."""
        ok, failed = [], []
        for sop_class, sop_instance in refs:
            rows = self.store.current_instances(sop_instance) if valid_uid(sop_instance) else []
            if not rows:
                failed.append((sop_class, sop_instance, NO_SUCH_OBJECT))
                continue
            row = rows[-1]
            if row.record.sop_class_uid != sop_class:
                failed.append((sop_class, sop_instance, CLASS_INSTANCE_CONFLICT))
                continue
            path = self.spool.root / row.record.path
            try:
                intact = path.is_file() and (not self.settings.commitment.verify_checksum or sha256_of(path) == row.record.sha256)
            except OSError:
                intact = False
            if intact:
                ok.append((sop_class, sop_instance, row.id))
            else:
                failed.append((sop_class, sop_instance, PROCESSING_FAILURE))
        return self._confirmed(ok, failed)

    def _confirmed(self, ok, failed):
        """With ``wait_for_destinations``, commit only what they have confirmed.

        Waits (up to ``wait_timeout``) for the outbox rows of each instance
        to those destinations to be done; what is still undelivered then is
        reported failed (0x0110), so the scanner keeps its copy.
        """
        wanted = self.settings.commitment.wait_for_destinations
        if not wanted:
            return [(c, i) for c, i, _ in ok], failed
        deadline = time.monotonic() + self.settings.commitment.wait_timeout
        pending = list(ok)
        while pending and time.monotonic() < deadline:
            pending = [x for x in pending if not self.store.delivered_to("instances", x[2], wanted)]
            if pending:
                time.sleep(0.2)
        confirmed = [(c, i) for c, i, row_id in ok if (c, i, row_id) not in pending]
        return confirmed, failed + [(c, i, PROCESSING_FAILURE) for c, i, _ in pending]

    def _event_info(self, transaction: str, ok, failed) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = transaction
        if ok:
            items = []
            for sop_class, sop_instance in ok:
                item = Dataset()
                item.ReferencedSOPClassUID = sop_class
                item.ReferencedSOPInstanceUID = sop_instance
                items.append(item)
            ds.ReferencedSOPSequence = items
        if failed:
            items = []
            for sop_class, sop_instance, reason in failed:
                item = Dataset()
                item.ReferencedSOPClassUID = sop_class
                item.ReferencedSOPInstanceUID = sop_instance
                item.FailureReason = reason
                items.append(item)
            ds.FailedSOPSequence = items
        return ds

    def _report(self, assoc, calling: str, commitment_id: int, transaction: str, refs) -> None:
        ok, failed = self._check(refs)
        info = self._event_info(transaction, ok, failed)
        event_type = 1 if not failed else 2  # PS3.4 J.3.3: 1 all succeeded, 2 some failed
        self.metrics.commitment_failures.inc(len(failed))
        sent = False
        try:
            if self.settings.commitment.report_on == "same" and assoc.is_established:
                status, _ = assoc.send_n_event_report(info, event_type, COMMITMENT_UID, COMMITMENT_INSTANCE)
                sent = bool(status) and status.Status == 0x0000
            if not sent:
                sent = self._report_on_new_association(calling, info, event_type)
        except Exception:
            log.exception("commitment.report_error", extra=fields(commitment=commitment_id))
        self.store.finish_commitment(commitment_id, state="reported" if sent else "failed", failed=len(failed))
        log.info(
            "commitment.reported" if sent else "commitment.report_failed",
            extra=fields(commitment=commitment_id, committed=len(ok), failed=len(failed), calling_ae=calling),
        )

    def _report_on_new_association(self, calling: str, info: Dataset, event_type: int) -> bool:
        peer = self.settings.peers.get(calling)
        if peer is None or not peer.host or not peer.port:
            log.warning("commitment.no_peer_address", extra=fields(calling_ae=calling))
            return False
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = self.settings.acse_timeout
        ae.dimse_timeout = self.settings.dimse_timeout
        ae.network_timeout = self.settings.network_timeout
        ae.add_requested_context(StorageCommitmentPushModel)
        # PS3.4 J.3.3 / PS3.7 D.3.3.4: we play the SCP role of the SOP class.
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        assoc = ae.associate(peer.host, peer.port, ae_title=calling, ext_neg=[role])
        if not assoc.is_established:
            return False
        try:
            status, _ = assoc.send_n_event_report(info, event_type, COMMITMENT_UID, COMMITMENT_INSTANCE)
            return bool(status) and status.Status == 0x0000
        finally:
            assoc.release()
