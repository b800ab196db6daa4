"""The report PDF (mappings/bmd/report_pdf.py) and its Encapsulated PDF object
(mappings/bmd/encapsulated_pdf.py)."""

from __future__ import annotations

import re
import zlib
from datetime import datetime, timezone
from io import BytesIO

import pytest
from pydicom import dcmread

from mappings.bmd.classify import classify
from mappings.bmd.encapsulated_pdf import ENCAPSULATED_PDF, PdfObjectContext, build_encapsulated_pdf, encapsulated_pdf_bytes
from mappings.bmd.report import ReportDetails, render_report, report_values
from mappings.bmd.report_pdf import PdfContext, latin, report_pdf
from tests.unit.bmd.helpers import HOLOGIC, known_exam

RELEASED = datetime(2024, 5, 2, 9, 30, 0, tzinfo=timezone.utc)


def _report(reporter: str = "Dr Test Reporter"):
    exam = known_exam("hologic", HOLOGIC)
    c = classify(exam, age=66, sex="F", menopausal=True)
    details = ReportDetails(reporter=reporter, reporter_role="Consultant radiologist", signed_on="2024-05-02")
    return exam, render_report(exam, c, status="F", details=details), report_values(exam, c, status="F", details=details)


def pdf_text(pdf: bytes) -> str:
    """The text shown by the PDF's content streams (fpdf2 writes Tj strings, Flate-compressed)."""
    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            data = zlib.decompress(stream)
        except zlib.error:
            data = stream
        out += [m.decode("cp1252") for m in re.findall(rb"\((.*?)(?<!\\)\)\s*Tj", data, re.S)]
    return "\n".join(s.replace("\\(", "(").replace("\\)", ")").replace("\\\\", "\\") for s in out)


def test_the_pdf_is_the_report_text_laid_out():
    """docs/architecture.md rule 9: the PDF shows the text as signed -- every line of it,
    the results table and the signature -- with the patient block on each page."""
    _, text, values = _report()
    pdf = report_pdf(text, values, PdfContext(created=RELEASED, author="Dr Test Reporter"))
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    shown = pdf_text(pdf)
    flowing = " ".join(shown.split())  # long lines wrap
    for line in text.splitlines():
        if line.strip():
            assert " ".join(line.split()) in flowing, line
    for line in values["results_table"].splitlines():
        assert line.rstrip() in shown.splitlines()  # the table keeps its columns (fixed-width, never wrapped)
    assert "Smith Anne M   ID PAT-001" in shown  # the patient block
    assert "Reported by: Dr Test Reporter, Consultant radiologist, 2024-05-02" in shown
    assert b"/CreationDate (D:20240502093000Z" in pdf or b"/CreationDate (D:20240502093000+00'00'" in pdf


def test_the_same_inputs_give_the_same_bytes():
    """The hash stored at release is reproducible: creation date from the
    release time, fixed producer, file ID from the content (fpdf2)."""
    _, text, values = _report()
    a = report_pdf(text, values, PdfContext(created=RELEASED))
    assert report_pdf(text, values, PdfContext(created=RELEASED)) == a
    assert report_pdf(text, values, PdfContext(created=RELEASED.replace(minute=31))) != a
    _, other, other_values = _report("Dr Someone Else")
    assert report_pdf(other, other_values, PdfContext(created=RELEASED)) != a


def test_characters_outside_the_standard_fonts_do_not_fail():
    """Names in any script render (accents dropped, or ?), never an exception."""
    assert latin("Zoë Łukasz 山田") == "Zoë Lukasz ??"
    _, text, values = _report("Dr Łukasz 山田")
    assert "Dr Lukasz ??" in pdf_text(report_pdf(text, values, PdfContext(created=RELEASED)))


def test_encapsulated_pdf_joins_the_exams_study():
    """PS3.3 A.45.1 / C.24.2: Encapsulated PDF Storage in the exam's study, a new
    series (Modality DOC), MIME type application/pdf, the document as sent
    (padded to even length; Encapsulated Document Length gives the true one),
    concept name LOINC 38269-7 (the ORU's report code), patient module from the exam."""
    exam, text, values = _report()
    pdf = report_pdf(text, values, PdfContext(created=RELEASED))
    ctx = PdfObjectContext(report_id=12, content_date="20240502", content_time="093000", status="F")
    ds = dcmread(BytesIO(encapsulated_pdf_bytes(exam, pdf, ctx)))
    assert ds.SOPClassUID == ENCAPSULATED_PDF == ds.file_meta.MediaStorageSOPClassUID
    assert ds.StudyInstanceUID == exam.study_instance_uid and ds.AccessionNumber == "ACC-42"
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == ("PAT-001", "Smith^Anne^M", "19580312", "F")
    assert ds.Modality == "DOC" and ds.SeriesInstanceUID not in (exam.study_instance_uid, exam.sop_instance_uid)
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf" and ds.BurnedInAnnotation == "YES"
    assert ds.DocumentTitle == "DXA bone densitometry report (FINAL)"
    code = ds.ConceptNameCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("38269-7", "LN")
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert bytes(ds.EncapsulatedDocument)[: len(pdf)] == pdf and len(ds.EncapsulatedDocument) % 2 == 0
    assert ds.ContentDate == "20240502" and ds.ContentTime == "093000"


def test_one_version_one_object_an_amendment_another():
    exam, text, values = _report()
    pdf = report_pdf(text, values, PdfContext(created=RELEASED))
    a = build_encapsulated_pdf(exam, pdf, PdfObjectContext(report_id=1, content_date="20240502", content_time="093000"))
    again = build_encapsulated_pdf(exam, pdf, PdfObjectContext(report_id=1, content_date="20240502", content_time="093000"))
    amended = build_encapsulated_pdf(exam, pdf, PdfObjectContext(report_id=2, content_date="20240503", content_time="080000", status="C"))
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert amended.SOPInstanceUID != a.SOPInstanceUID and amended.SeriesInstanceUID != a.SeriesInstanceUID
    assert amended.DocumentTitle.endswith("(CORRECTED)")


def test_refuses_what_cannot_be_an_encapsulated_report():
    exam, text, values = _report()
    import dataclasses

    with pytest.raises(ValueError, match="Study Instance UID"):
        build_encapsulated_pdf(dataclasses.replace(exam, study_instance_uid=""), b"%PDF-1.3", PdfObjectContext(1, "20240502", "093000"))
    with pytest.raises(ValueError, match="not a PDF"):
        build_encapsulated_pdf(exam, b"hello", PdfObjectContext(1, "20240502", "093000"))


def test_a_long_report_names_the_patient_on_every_page():
    """A report over several pages: each page carries the patient block and its number."""
    exam = known_exam("hologic", HOLOGIC)
    c = classify(exam, age=66, sex="F", menopausal=True)
    details = ReportDetails(reporter="Dr Test", signed_on="2024-05-02", reporter_comment="\n".join(f"Line {n} of a long comment." for n in range(150)))
    text = render_report(exam, c, status="F", details=details)
    pdf = report_pdf(text, report_values(exam, c, status="F", details=details), PdfContext(created=RELEASED))
    pages = len(re.findall(rb"/Type /Page\b", pdf))
    shown = pdf_text(pdf)
    assert pages >= 3
    assert shown.count("Smith Anne M   ID PAT-001") == pages
    assert f"Page {pages} of" in shown and "Line 149 of a long comment." in shown
