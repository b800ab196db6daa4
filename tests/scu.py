"""A pynetdicom scanner-side SCU for MPPS and Storage Commitment tests."""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, StorageCommitmentPushModel

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def mpps_create_dataset(*, study_uid: str, accession: str = "", rp_id: str = "", sps_id: str = "", patient_id: str = "P001") -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = accession
    step.RequestedProcedureID = rp_id
    step.ScheduledProcedureStepID = sps_id
    step.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientName = "Test^Patient"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "DXA1"
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20261124"
    ds.PerformedProcedureStepStartTime = "100000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = "DXA hip and spine"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "BMD"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def mpps_final(status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261124"
    ds.PerformedProcedureStepEndTime = "101500"
    ds.PerformedSeriesSequence = []
    return ds


class ScannerScu:
    """One association for MPPS and commitment, accepting reports on it."""

    def __init__(self, port: int, aet: str = "DXA1", aec: str = "DXAGW") -> None:
        self.reports: list[tuple[int, Dataset]] = []
        self.got_report = threading.Event()
        ae = AE(ae_title=aet)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.assoc = ae.associate(
            "127.0.0.1", port, ae_title=aec, ext_neg=[role], evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        if not self.assoc.is_established:
            raise ConnectionError("association not established")

    def _on_report(self, event) -> int:
        self.reports.append((event.request.EventTypeID, event.event_information))
        self.got_report.set()
        return 0x0000, None

    def create(self, ds: Dataset, uid: str | None = None):
        uid = uid or generate_uid()
        status, attrs = self.assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        return uid, status

    def set(self, uid: str, ds: Dataset):
        status, _ = self.assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
        return status

    def commit(self, refs: list[tuple[str, str]], transaction_uid: str | None = None):
        info = Dataset()
        info.TransactionUID = transaction_uid or generate_uid()
        items = []
        for sop_class, sop_uid in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_uid
            items.append(item)
        info.ReferencedSOPSequence = items
        status, _ = self.assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        return info.TransactionUID, status

    def release(self) -> None:
        self.assoc.release()
