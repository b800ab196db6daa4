"""What a stored instance is: its kind for routing and its index attributes.

Pure: a header dataset (read without pixel data) in, an
:class:`InstanceHeader` out.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from mappings.uids import UidError, check_uid, is_safe_uid

# Storage SOP classes a DXA scanner sends (PS3.4 Annex B.5), by kind.
SOP_CLASS_KIND: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "image",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1": "image",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2": "image",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3": "image",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4": "image",  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.1": "image",  # Computed Radiography (GE Lunar iDXA)
    "1.2.840.10008.5.1.4.1.1.1.1": "image",  # Digital X-Ray, For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": "image",  # Digital X-Ray, For Processing
    "1.2.840.10008.5.1.4.1.1.11.1": "image",  # Grayscale Softcopy Presentation State (Hologic IVA)
    "1.2.840.10008.5.1.4.1.1.88.11": "sr",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22": "sr",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33": "sr",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34": "sr",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.59": "other",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.88.67": "dose",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.104.1": "pdf",  # Encapsulated PDF
}
STORAGE_SOP_CLASSES = tuple(SOP_CLASS_KIND)


# What :func:`read_header` reads: a C-STORE handler need decode nothing else.
HEADER_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "PatientID", "AccessionNumber", "Modality", "Manufacturer",
)


def valid_uid(value: str) -> bool:
    """A UID safe to store and to use as a file name (mappings/uids.py)."""
    return is_safe_uid(value)


def kind_of(sop_class: str) -> str:
    return SOP_CLASS_KIND.get(sop_class, "other")


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    accession: str
    modality: str
    manufacturer: str
    kind: str
    uid_defects: tuple[str, ...] = ()  # tolerated defects of its UIDs (mappings/uids.py)


class HeaderError(ValueError):
    """The dataset is not storable as it is; ``keyword`` names the attribute."""

    def __init__(self, keyword: str, reason: str) -> None:
        super().__init__(f"{keyword}: {reason}")
        self.keyword = keyword
        self.reason = reason


def refuse_file_meta_in_dataset(first: bytes, *, big_endian: bool = False) -> None:
    """File Meta Information (group 0002) belongs to a file, never to a
    dataset on the network (PS3.10 7.1, PS3.7 6.3.1): a dataset that opens
    with group 0002 elements would be read as part of our file meta (and so
    could override the negotiated Transfer Syntax in the stored file, and
    drove pydicom's meta reader to 14 GB from a 2 kB input, found by
    bench/fuzz.py).  Refused: 0xC000."""
    if len(first) >= 2 and int.from_bytes(first[:2], "big" if big_endian else "little") == 0x0002:
        raise HeaderError("FileMetaInformationGroupLength", "the dataset holds File Meta Information (group 0002) elements")


def text_value(ds: Dataset, keyword: str, *, strict: bool = False) -> str:
    """A text attribute of an untrusted dataset, stripped ("" when absent).

    An element that came as a sequence (VR SQ where the attribute is text)
    is "" -- or, ``strict``, a HeaderError -- and its value is never decoded
    or turned into a string: pydicom's ``str`` of a crafted sequence took
    2 kB to 18 GB (found by bench/fuzz.py)."""
    if keyword not in ds:
        return ""
    elem = ds.get_item(keyword)  # raw: the value is not decoded yet
    if elem.VR == "SQ":
        if strict:
            raise HeaderError(keyword, "is a sequence, not a text value")
        return ""
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _s(ds: Dataset, keyword: str) -> str:
    return text_value(ds, keyword, strict=True)


def read_header(ds: Dataset, *, sop_class: str, sop_instance: str) -> InstanceHeader:
    """Check a received dataset against its C-STORE request and index it.

    PS3.4 B.2.3: the dataset's SOP Class and Instance UIDs must be those of
    the request, and the UIDs used to file it must be valid (PS3.5 9.1).
    """
    ds_class, ds_instance = _s(ds, "SOPClassUID"), _s(ds, "SOPInstanceUID")
    if not ds_class or not ds_instance:
        raise HeaderError("SOPCommon", "no SOP Class or Instance UID: not a readable dataset")
    if ds_class != sop_class:
        raise HeaderError("SOPClassUID", "does not match the C-STORE request")
    if ds_instance != sop_instance:
        raise HeaderError("SOPInstanceUID", "does not match the C-STORE request")
    defects: list[str] = []
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            defects += check_uid(_s(ds, keyword)).defects
        except UidError as exc:
            raise HeaderError(keyword, f"missing or not a valid UID: {exc.reason}") from None
    return InstanceHeader(
        sop_class_uid=ds_class,
        sop_instance_uid=ds_instance,
        study_uid=_s(ds, "StudyInstanceUID"),
        series_uid=_s(ds, "SeriesInstanceUID"),
        patient_id=_s(ds, "PatientID"),
        accession=_s(ds, "AccessionNumber"),
        modality=_s(ds, "Modality"),
        manufacturer=_s(ds, "Manufacturer"),
        kind=kind_of(ds_class),
        uid_defects=tuple(defects),
    )
