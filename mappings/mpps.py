"""Modality Performed Procedure Step rules (PS3.4 Annex F.7), pure.

Checks an N-CREATE, applies an N-SET and finds the worklist keys of a
performed step; the MPPS SCP in gateway/ does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
FINAL = (COMPLETED, DISCONTINUED)

# PS3.4 Table F.7.2-1, N-CREATE type 1 attributes (the SCU must send a value)
CREATE_TYPE1 = (
    "ScheduledStepAttributesSequence",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus",
    "Modality",
)
# Attributes N-SET may not change (PS3.4 Table F.7.2-1, "Not allowed" for N-SET)
SET_NOT_ALLOWED = (
    "ScheduledStepAttributesSequence",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedStationName",
    "PerformedLocation",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "Modality",
    "StudyID",
)

# PS3.4 F.7.2.1.2 / F.7.2.2.2 status codes
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
INVALID_ATTRIBUTE_VALUE = 0x0106
NO_SUCH_INSTANCE = 0x0112
DUPLICATE_INSTANCE = 0x0111
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124


class MppsError(ValueError):
    """An N-CREATE or N-SET the SCP refuses, with its DIMSE status."""

    def __init__(self, status: int, comment: str, tag: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.tag = tag


@dataclass(frozen=True, slots=True)
class StepKeys:
    """How a performed step names its scheduled step (Scheduled Step Attributes Sequence)."""

    study_uid: str
    accession: str
    requested_procedure_id: str
    sps_id: str


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def check_create(ds: Dataset) -> str:
    """Refuse an N-CREATE missing what PS3.4 F.7.2.1 requires; return its status."""
    for keyword in CREATE_TYPE1:
        if keyword not in ds:
            raise MppsError(MISSING_ATTRIBUTE, f"{keyword} is required", ds_tag(keyword))
        value = ds[keyword].value
        if value is None or value == "" or (keyword.endswith("Sequence") and len(value) == 0):
            raise MppsError(MISSING_ATTRIBUTE_VALUE, f"{keyword} must have a value", ds_tag(keyword))
    for item in ds.ScheduledStepAttributesSequence:
        if not _text(item, "StudyInstanceUID"):
            raise MppsError(MISSING_ATTRIBUTE_VALUE, "StudyInstanceUID is required in each scheduled step", ds_tag("StudyInstanceUID"))
    status = _text(ds, "PerformedProcedureStepStatus")
    if status != IN_PROGRESS:
        # PS3.4 F.7.2.1.1: an MPPS is created IN PROGRESS
        raise MppsError(INVALID_ATTRIBUTE_VALUE, "PerformedProcedureStepStatus must be IN PROGRESS on N-CREATE", ds_tag("PerformedProcedureStepStatus"))
    return status


def apply_set(current: Dataset, modification: Dataset) -> Dataset:
    """The step after an N-SET (PS3.4 F.7.2.2): attributes replaced whole."""
    status = _text(current, "PerformedProcedureStepStatus")
    if status in FINAL:
        raise MppsError(PROCESSING_FAILURE, f"Performed Procedure Step is {status} and may no longer be updated")
    for keyword in SET_NOT_ALLOWED:
        if keyword in modification:
            raise MppsError(PROCESSING_FAILURE, f"{keyword} may not be changed by N-SET", ds_tag(keyword))
    new_status = _text(modification, "PerformedProcedureStepStatus") if "PerformedProcedureStepStatus" in modification else status
    if new_status not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
        raise MppsError(INVALID_ATTRIBUTE_VALUE, f"PerformedProcedureStepStatus {new_status[:16]!r} is not valid", ds_tag("PerformedProcedureStepStatus"))
    out = Dataset()
    for elem in current:
        out.add(elem)
    for elem in modification:
        out.add(elem)
    return out


def status_of(ds: Dataset) -> str:
    return _text(ds, "PerformedProcedureStepStatus")


def step_keys(ds: Dataset) -> list[StepKeys]:
    """The scheduled steps this performed step reports on."""
    keys = []
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        keys.append(
            StepKeys(
                study_uid=_text(item, "StudyInstanceUID"),
                accession=_text(item, "AccessionNumber"),
                requested_procedure_id=_text(item, "RequestedProcedureID"),
                sps_id=_text(item, "ScheduledProcedureStepID"),
            )
        )
    return keys


def ds_tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(keyword) or 0
