"""Builders for SR content items and the SR document shell (PS3.3 C.17.3).

Small helpers shared by the sample builders and tests: coded entries
(PS3.3 Table 8.8-1), CONTAINER / NUM / TEXT / CODE items (Table C.17-5,
C.18.1) and a dataset with file meta ready for ``save_as``.
"""

from __future__ import annotations

import random
from decimal import Decimal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
XRAY_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"

#: Header attributes copied from the order/worklist into every sample object.
HEADER_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
)


def seeded_uid(rng: random.Random) -> str:
    """A UID whose entropy comes from ``rng`` (same seed, same UID)."""
    return generate_uid(entropy_srcs=[f"{rng.getrandbits(128):032x}"])


def code(value: str, scheme: str, meaning: str) -> Dataset:
    """A code sequence item (PS3.3 Table 8.8-1)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _item(value_type: str, name: tuple[str, str, str], relationship: str | None) -> Dataset:
    item = Dataset()
    if relationship:
        item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([code(*name)])
    return item


def container(name: tuple[str, str, str], children=(), relationship: str | None = "CONTAINS") -> Dataset:
    """A CONTAINER item with SEPARATE continuity holding ``children``."""
    item = _item("CONTAINER", name, relationship)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(list(children))
    return item


def num(name: tuple[str, str, str], value: Decimal | str, unit: tuple[str, str, str], relationship: str = "CONTAINS") -> Dataset:
    """A NUM item; the value keeps its exact text in NumericValue (DS)."""
    item = _item("NUM", name, relationship)
    mv = Dataset()
    mv.NumericValue = str(value)
    mv.MeasurementUnitsCodeSequence = Sequence([code(*unit)])
    item.MeasuredValueSequence = Sequence([mv])
    return item


def text(name: tuple[str, str, str], value: str, relationship: str = "CONTAINS") -> Dataset:
    """A TEXT item."""
    item = _item("TEXT", name, relationship)
    item.TextValue = value
    return item


def coded(name: tuple[str, str, str], value: tuple[str, str, str], relationship: str = "CONTAINS") -> Dataset:
    """A CODE item."""
    item = _item("CODE", name, relationship)
    item.ConceptCodeSequence = Sequence([code(*value)])
    return item


def sr_document(
    header: Dataset,
    *,
    sop_class: str,
    series_uid: str,
    sop_uid: str,
    title: tuple[str, str, str],
    content,
    device: dict[str, str],
    series_number: int = 900,
) -> Dataset:
    """An SR document (PS3.3 A.35) with ``header``'s patient/study and file meta."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for kw in HEADER_KEYWORDS:
        setattr(ds, kw, getattr(header, kw, "") or "")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "SR"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.StudyID = ""
    ds.ReferringPhysicianName = getattr(header, "ReferringPhysicianName", "") or ""
    if "PatientAge" in header:
        ds.PatientAge = header.PatientAge
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    for kw, value in device.items():
        setattr(ds, kw, value)
    # SR Document General Module (PS3.3 C.17.2)
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    # SR Document Content Module root (PS3.3 C.17.3)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code(*title)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = Sequence(list(content))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
