"""The signed report's PDF as a DICOM Encapsulated PDF object (PS3.3 A.45.1).

Pure: the exam (patient and study), the PDF bytes and a context in; a
Part 10 file's bytes out (docs/dicom-conformance.md, "Encapsulated PDF
report").  The object joins the exam's study (its Study Instance UID and
the Patient / General Study attributes the scanner sent) in a new series
of its own, Modality ``DOC`` (PS3.3 C.24.1); its Series and SOP Instance
UIDs derive from the exam's SOP Instance UID and the report version, so
one version is one object whatever the destination, and an amendment is a
new object in a new series.

Modules (PS3.3 A.45.1-1): Patient, General Study, Encapsulated Document
Series, General Equipment, SC Equipment (Conversion Type ``WSD``,
PS3.3 C.8.6.1), Encapsulated Document (C.24.2) and SOP Common.  The
document's concept name is LOINC 38269-7 "DXA Bone density Study report",
the code the ORU's report-text OBX carries (mappings/bmd/codes.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from mappings.bmd import codes
from mappings.bmd.models import BmdExam

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"  # PS3.4 B.5
MIME_TYPE = "application/pdf"
SERIES_NUMBER = 9901  # beside the scanner's series; the Series Instance UID is what identifies it
CONVERSION_TYPE = "WSD"  # workstation (PS3.3 C.8.6.1.1)
DOCUMENT_TITLE = "DXA bone densitometry report"
#: Patient / General Study attributes taken from the exam (PS3.3 C.7.1.1, C.7.2.1)
_PATIENT = (("PatientName", "patient_name"), ("PatientID", "patient_id"), ("PatientBirthDate", "patient_birth_date"), ("PatientSex", "patient_sex"))


@dataclass(frozen=True, slots=True)
class PdfObjectContext:
    """What the object needs beyond the exam; no clock is read here."""

    report_id: int  # the released version (one object per version)
    content_date: str  # DA of the release
    content_time: str  # TM of the release
    status: str = "F"  # P / F / C, said in the document title
    manufacturer: str = "dxa-gateway"  # General Equipment: who made the object
    institution: str = ""
    referring_physician: str = ""  # DICOM PN
    issuer_of_patient_id: str = ""
    study_date: str = ""  # when the exam has none
    study_id: str = ""


def object_uids(exam: BmdExam, report_id: int) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of a version's object: derived, so a
    re-render of the same version names the same object."""
    seed = [exam.study_instance_uid, exam.sop_instance_uid, str(report_id)]
    return generate_uid(entropy_srcs=["report-pdf-series", *seed]), generate_uid(entropy_srcs=["report-pdf", *seed])


TITLES = {"P": "PRELIMINARY", "F": "FINAL", "C": "CORRECTED"}


def build_encapsulated_pdf(exam: BmdExam, pdf: bytes, ctx: PdfObjectContext) -> Dataset:
    """The Encapsulated PDF dataset (with its file meta) for one report version."""
    if not exam.study_instance_uid:
        raise ValueError("the exam has no Study Instance UID: an Encapsulated PDF must join the exam's study")
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("not a PDF document")
    series_uid, sop_uid = object_uids(exam, ctx.report_id)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names as the scanner sent them
    # SOP Common (C.12.1)
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = ctx.content_date
    ds.InstanceCreationTime = ctx.content_time
    # Patient (C.7.1.1)
    for keyword, attr in _PATIENT:
        setattr(ds, keyword, getattr(exam, attr) or "")
    if ctx.issuer_of_patient_id:
        ds.IssuerOfPatientID = ctx.issuer_of_patient_id
    # General Study (C.7.2.1): the exam's study
    ds.StudyInstanceUID = exam.study_instance_uid
    ds.StudyDate = exam.exam_date or ctx.study_date
    ds.StudyTime = exam.exam_time
    ds.ReferringPhysicianName = ctx.referring_physician
    ds.StudyID = ctx.study_id
    ds.AccessionNumber = exam.accession_number
    # Encapsulated Document Series (C.24.1)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "DXA report (PDF)"
    # General Equipment (C.7.5.1) and SC Equipment (C.8.6.1)
    ds.Manufacturer = ctx.manufacturer
    if ctx.institution:
        ds.InstitutionName = ctx.institution
    ds.ConversionType = CONVERSION_TYPE
    # Encapsulated Document (C.24.2)
    ds.InstanceNumber = ctx.report_id
    ds.ContentDate = ctx.content_date
    ds.ContentTime = ctx.content_time
    ds.AcquisitionDateTime = ""  # Type 2: nothing was acquired
    ds.BurnedInAnnotation = "YES"  # the document names the patient
    ds.DocumentTitle = f"{DOCUMENT_TITLE} ({TITLES.get(ctx.status, ctx.status)})"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = codes.STUDY_REPORT
    ds.ConceptNameCodeSequence = [concept]
    ds.MIMETypeOfEncapsulatedDocument = MIME_TYPE
    # OB, padded to even length with one NUL (PS3.5 7.1.1); the length says where the PDF ends
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DXAGW"
    ds.file_meta = meta
    return ds


def encapsulated_pdf_bytes(exam: BmdExam, pdf: bytes, ctx: PdfObjectContext) -> bytes:
    """The Part 10 file (PS3.10 7.1) of :func:`build_encapsulated_pdf`: the bytes stored and sent."""
    buf = BytesIO()
    dcmwrite(buf, build_encapsulated_pdf(exam, pdf, ctx), enforce_file_format=True)
    return buf.getvalue()
