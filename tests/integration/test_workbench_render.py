"""Issue 15, the workbench's rendering in the real daemon: the signed report's PDF
in Orthanc as Encapsulated PDF and in the EMR's DiagnosticReport, report images
as PNG, the trend as SVG; every read audited."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import subprocess
import urllib.request
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import orjson
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import generate_uid

from mappings.bmd import samples
from mappings.bmd.models import site_name
from mappings.bmd.samples import hologic_sr
from tests.dicom_data import secondary_capture
from tests.fhir_peer import FhirPeer
from tests.integration.test_exams import ENV, exam_of, store
from tests.integration.test_report_release import call
from tests.orthanc import start_orthanc, wait_for
from tests.support import dcmtk, start_daemon
from tests.unit.bmd.helpers import HOLOGIC, known_exam

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Orthanc as the PACS (report-pdf), a FHIR EMR (report), one daemon."""
    tmp = tmp_path_factory.mktemp("workbench-render")
    orthanc = start_orthanc(tmp / "orthanc")
    fhir = FhirPeer()
    config = {
        "storage": {"min_free_bytes": 0},
        "reports": {"settle_seconds": 0.3},
        "destinations": {
            "pacs": {"type": "dicom", "host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet, "retry_base": 0.5, "retry_cap": 2},
            "emr": {"type": "fhir", "url": fhir.url, "retry_base": 0.5, "retry_cap": 2},
            "archive": {"type": "folder", "path": str(tmp / "archive")},
        },
        "routes": [{"match": {"kind": "report-pdf"}, "to": ["pacs", "archive"]}, {"match": {"kind": "report"}, "to": ["emr"]}],
    }
    d = start_daemon(tmp / "gw", config)
    d.archive = tmp / "archive"
    yield d, orthanc, fhir
    d.stop()
    fhir.close()
    orthanc.stop()


def get(daemon, path: str) -> tuple[int, bytes, str]:
    req = urllib.request.Request(daemon.http + path, headers=daemon.headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as rsp:
            return rsp.status, rsp.read(), rsp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get_content_type()


def store_files(daemon, datasets, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    r = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(daemon.dicom_port), *files], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr


def _orthanc_pdfs(orthanc, study_uid: str) -> list[dict]:
    out = []
    for oid in orthanc.get("/instances"):
        tags = orthanc.get(f"/instances/{oid}/simplified-tags")
        if tags.get("SOPClassUID") == ENCAPSULATED_PDF and tags.get("StudyInstanceUID") == study_uid:
            out.append({"id": oid, **tags})
    return out


def _pair(patient_id: str):
    current = known_exam("hologic", HOLOGIC, patient_id=patient_id, accession_number=f"ACC-{patient_id}", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    previous = dataclasses.replace(
        current, exam_date="20220501", accession_number=f"ACC-{patient_id}-OLD", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid(),
        regions=tuple(dataclasses.replace(r, bmd=r.bmd + Decimal("0.050")) for r in current.regions),
    )  # fmt: skip
    return previous, current


def test_signed_report_pdf_reaches_the_pacs_in_the_study_and_the_emr(world, tmp_path):
    """Issue 15: the PDF of the signed report, rendered at release from the same
    text, is in the PACS as Encapsulated PDF (PS3.3 A.45.1) in the exam's study
    and in the FHIR DiagnosticReport's presentedForm (FHIR R4 Attachment: base64
    data, SHA-1 hash); the download is those same bytes (docs/architecture.md rule 9); an
    amendment is a second object in the study."""
    d, orthanc, fhir = world
    previous, current = _pair("PWBPDF")
    store(d, hologic_sr(previous), tmp_path / "a.dcm")
    assert wait_for(lambda: exam_of(hologic_sr(previous))(d), 15)
    ds = hologic_sr(current)
    store(d, ds, tmp_path / "b.dcm")
    row = wait_for(lambda: exam_of(ds)(d), 15)
    assert row, d.log_text()[-2000:]
    status, _, _ = get(d, f"/api/exams/{row['id']}/report.pdf")
    assert status == 404  # nothing released yet
    status, body = call(d, "POST", f"/api/exams/{row['id']}/sign", {"role": "Consultant radiologist"})
    assert status == 201, body

    status, pdf, ctype = get(d, f"/api/exams/{row['id']}/report.pdf")
    assert status == 200 and ctype == "application/pdf" and pdf.startswith(b"%PDF-")
    status, versions = call(d, "GET", f"/api/exams/{row['id']}/reports")
    hashes = {p["destination"]: p for p in versions[0]["payloads"]}
    assert hashes["document:pdf"]["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert hashes["report-pdf:pacs"]["format"] == "dicom-pdf"

    found = wait_for(lambda: _orthanc_pdfs(orthanc, current.study_instance_uid), 30)
    assert len(found) == 1, d.log_text()[-3000:]
    obj = found[0]
    assert obj["PatientID"] == "PWBPDF" and obj["AccessionNumber"] == "ACC-PWBPDF" and obj["Modality"] == "DOC"
    assert obj["MIMETypeOfEncapsulatedDocument"] == "application/pdf"
    assert obj["SOPInstanceUID"] == hashes["report-pdf:pacs"]["control_id"]
    with urllib.request.urlopen(f"{orthanc.url}/instances/{obj['id']}/file", timeout=10) as rsp:
        stored = dcmread(BytesIO(rsp.read()))
    assert bytes(stored.EncapsulatedDocument)[: stored.EncapsulatedDocumentLength] == pdf
    archived = wait_for(lambda: (d.archive / f"{obj['SOPInstanceUID']}.dcm").exists(), 15)
    assert archived  # a folder destination gets the same Part 10 file
    # the bytes stored at release are the bytes sent (docs/architecture.md rule 9)
    assert hashlib.sha256((d.archive / f"{obj['SOPInstanceUID']}.dcm").read_bytes()).hexdigest() == hashes["report-pdf:pacs"]["sha256"]

    bundle = orjson.loads(wait_for(lambda: fhir.received and fhir.received[-1], 15))
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    form = next(f for f in report["presentedForm"] if f["contentType"] == "application/pdf")
    assert base64.b64decode(form["data"]) == pdf
    assert form["hash"] == base64.b64encode(hashlib.sha1(pdf).digest()).decode()
    assert any(f["contentType"].startswith("text/plain") for f in report["presentedForm"])

    status, body = call(d, "POST", f"/api/exams/{row['id']}/sign", {"amendment": "Typo corrected."})
    assert status == 201 and body["status"] == "C"
    both = wait_for(lambda: len(_orthanc_pdfs(orthanc, current.study_instance_uid)) == 2 and _orthanc_pdfs(orthanc, current.study_instance_uid), 30)
    assert both and len({o["SeriesInstanceUID"] for o in both}) == 2
    status, amended, _ = get(d, f"/api/exams/{row['id']}/report.pdf")
    assert status == 200 and amended != pdf  # the latest version's own PDF

    # the trend of this exam and its prior: an SVG naming the sites, with the LSC band
    status, svg, ctype = get(d, f"/api/exams/{row['id']}/trend.svg")
    assert status == 200 and ctype == "image/svg+xml"
    root = ET.fromstring(svg)
    text = svg.decode()
    for site, lat in (("neck", "L"), ("total_hip", "L"), ("L1,L2,L4", None)):
        assert site_name(site, lat) in text
    assert "2022-05-01" in text and "2024-05-01" in text
    assert root.find("{http://www.w3.org/2000/svg}title") is not None
    assert 'class="lsc-band"' in text

    def reads():  # written by the audit trail's own thread, soon after the answer
        rows = [a for a in call(d, "GET", "/api/audit?event=exam.read&limit=50")[1] if a["detail"].get("exam") == row["id"]]
        return rows if {a["detail"]["what"] for a in rows} >= {"report.pdf", "trend"} else None

    reads = wait_for(reads, 10)
    assert reads
    assert all(a["actor"] == "test" and a["detail"]["patient_id"] == "PWBPDF" for a in reads)


def _grey_with_overlay(study_uid: str, patient_id: str):
    """A 16-bit MONOCHROME2 SC, 48 rows x 64 columns, with one overlay plane (PS3.3 C.9.2)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ds = secondary_capture(Path(tmp) / "x.dcm", pixels=64 * 64, study_uid=study_uid, patient_id=patient_id)
    ds.Rows, ds.Columns = 48, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = (np.arange(48 * 64, dtype=np.uint16) % 4096).tobytes()
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    bits = np.zeros((48, 64), dtype=np.uint8)
    bits[10, 10:20] = 1
    ds.add_new(0x60000010, "US", 48)
    ds.add_new(0x60000011, "US", 64)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", np.packbits(bits.flatten(), bitorder="little").tobytes())
    return ds


def _presentation_state(image):
    """A Grayscale Softcopy Presentation State (PS3.3 A.33.1) with one POLYLINE ROI on ``image``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    def item(**kw):
        ds = Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds

    gsps_class = "1.2.840.10008.5.1.4.1.1.11.1"
    ps = Dataset()
    ps.file_meta = FileMetaDataset()
    ps.file_meta.MediaStorageSOPClassUID = gsps_class
    ps.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ps.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ps.SOPClassUID, ps.SOPInstanceUID = gsps_class, ps.file_meta.MediaStorageSOPInstanceUID
    for kw in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        setattr(ps, kw, getattr(image, kw))
    ps.SeriesInstanceUID, ps.Modality, ps.SeriesNumber, ps.InstanceNumber = generate_uid(), "PR", 90, 1
    ps.ContentLabel, ps.PresentationCreationDate, ps.PresentationCreationTime = "ROI", "20240501", "101500"
    ps.ReferencedSeriesSequence = [item(SeriesInstanceUID=image.SeriesInstanceUID, ReferencedImageSequence=[
        item(ReferencedSOPClassUID=image.SOPClassUID, ReferencedSOPInstanceUID=image.SOPInstanceUID)])]  # fmt: skip
    ps.GraphicAnnotationSequence = [item(GraphicLayer="ROI", GraphicObjectSequence=[item(
        GraphicAnnotationUnits="PIXEL", GraphicDimensions=2, NumberOfGraphicPoints=2, GraphicData=[20.0, 30.0, 40.0, 30.0],
        GraphicType="POLYLINE", GraphicFilled="N")])]  # fmt: skip
    return ps


def test_report_images_render_as_png_of_their_size(world, tmp_path):
    """The scanner's report images of the exam's study, listed and rendered: RGB
    Hologic report images and a 16-bit greyscale image with an overlay plane;
    what is not in the study is 404, what cannot be rendered 422, never 500."""
    d, _, _ = world
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id="PWBIMG", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    images = samples.hologic_report_images(known)
    grey = _grey_with_overlay(known.study_instance_uid, "PWBIMG")
    broken = secondary_capture(tmp_path / "broken.dcm", pixels=16 * 16, study_uid=known.study_instance_uid, patient_id="PWBIMG")
    broken.PixelData = b"\0" * 10  # fewer bytes than Rows x Columns
    roi = _presentation_state(grey)
    store_files(d, [*images, grey, broken, roi], tmp_path / "images")

    def exam_row():
        rows = [e for e in call(d, "GET", "/api/exams?patient=PWBIMG")[1] if e["state"] == "parsed"]
        return rows[0] if rows else None

    row = wait_for(exam_row, 20)
    assert row, d.log_text()[-2000:]
    status, body, ctype = get(d, f"/api/exams/{row['id']}/images")
    assert status == 200 and ctype == "application/json"
    listed = {i["sop_instance_uid"]: i for i in orjson.loads(body)}
    assert set(listed) == {ds.SOPInstanceUID for ds in [*images, grey, broken]}
    g = listed[grey.SOPInstanceUID]
    assert (g["rows"], g["columns"], g["url"]) == (48, 64, f"/api/exams/{row['id']}/images/{grey.SOPInstanceUID}.png")

    assert roi.SOPInstanceUID not in listed  # a presentation state is no image of its own

    status, png, ctype = get(d, g["url"])
    assert status == 200 and ctype == "image/png"
    im = Image.open(BytesIO(png))
    assert im.size == (64, 48) and im.mode == "RGB"
    assert all(im.getpixel((x, 10)) == (255, 255, 255) for x in range(10, 20))  # the overlay line, drawn
    assert all(im.getpixel((x, 30)) == (255, 255, 0) for x in range(20, 41))  # the presentation state's ROI
    status, png, _ = get(d, g["url"] + "?annotations=none")
    bare = Image.open(BytesIO(png))
    assert status == 200 and bare.mode == "L" and bare.getpixel((30, 30)) != 255
    rgb = images[0]
    status, png, _ = get(d, listed[rgb.SOPInstanceUID]["url"])
    assert status == 200 and Image.open(BytesIO(png)).size == (rgb.Columns, rgb.Rows)

    status, body, _ = get(d, listed[broken.SOPInstanceUID]["url"])
    assert status == 422 and "cannot be" in orjson.loads(body)["error"]
    status, body, _ = get(d, f"/api/exams/{row['id']}/images/{generate_uid()}.png")
    assert status == 404 and "no image" in orjson.loads(body)["error"]
    status, _, _ = get(d, f"/api/exams/{row['id']}/images/..%2F..%2Fetc.png")
    assert status == 404
    status, _, _ = get(d, f"/api/exams/{row['id']}/images/{grey.SOPInstanceUID}.png?frame=2")
    assert status == 422
    status, _, _ = get(d, "/api/exams/999999/images")
    assert status == 404
    assert wait_for(lambda: any(a["detail"].get("sop_instance_uid") == grey.SOPInstanceUID for a in call(d, "GET", "/api/audit?event=exam.read&limit=50")[1]), 10)
    assert call(d, "GET", "/healthz")[0] == 200  # still serving


def test_pacs_down_at_release_gets_the_stored_object_when_back(world, tmp_path):
    """docs/architecture.md rule 2 and 9: the Encapsulated PDF of a version released while the
    PACS is down waits in the outbox and, once the PACS is back, arrives as the
    bytes stored at release (its PDF is the download's)."""
    d, orthanc, _ = world
    known = known_exam("hologic", HOLOGIC, patient_id="PWBDOWN", accession_number="ACC-DOWN", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(known)
    store(d, ds, tmp_path / "sr.dcm")
    row = wait_for(lambda: exam_of(ds)(d), 15)
    assert row
    orthanc.stop()
    try:
        status, body = call(d, "POST", f"/api/exams/{row['id']}/sign", {})
        assert status == 201, body

        def failed_once():
            rows = call(d, "GET", "/api/outbox?destination=pacs&limit=1000")[1]
            return [r for r in rows if r["kind"] == "report-pdf" and r["attempts"] >= 1 and r["state"] == "pending"]

        assert wait_for(failed_once, 20), call(d, "GET", "/api/outbox?destination=pacs")[1]
    finally:
        orthanc.start()
    found = wait_for(lambda: _orthanc_pdfs(orthanc, known.study_instance_uid), 30)
    assert len(found) == 1
    with urllib.request.urlopen(f"{orthanc.url}/instances/{found[0]['id']}/file", timeout=10) as rsp:
        stored = dcmread(BytesIO(rsp.read()))
    status, pdf, _ = get(d, f"/api/exams/{row['id']}/report.pdf")
    assert status == 200 and bytes(stored.EncapsulatedDocument)[: stored.EncapsulatedDocumentLength] == pdf
