"""BMD exams in the real daemon: SRs stored with storescu become exams,
reports are signed, and the ORU^R01 / FHIR Bundle go to the EMR."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hl7apy.parser import parse_message
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.uid import generate_uid

from mappings.bmd.models import BmdExam, DoseRecord
from mappings.bmd.samples import dose_sr, ge_sr, hologic_sr
from tests.fhir_peer import FhirPeer
from tests.mllp_peer import MllpPeer
from tests.orthanc import wait_for
from tests.scu import ScannerScu, mpps_create_dataset, mpps_final
from tests.support import dcmtk, start_daemon
from tests.unit.bmd.helpers import GE, HOLOGIC, known_exam

ENV = dict(os.environ, TCP_NODELAY="1")


def store(daemon, ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)
    r = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(daemon.dicom_port), str(path)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr


def api(daemon, path: str, body: dict | None = None):
    headers = {**daemon.headers, **({"Content-Type": "application/json"} if body is not None else {})}
    req = urllib.request.Request(daemon.http + path, method="POST" if body is not None else "GET", data=orjson.dumps(body) if body is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            raw = rsp.read()
            return rsp.status, (orjson.loads(raw) if rsp.headers.get_content_type() == "application/json" else raw.decode())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def exams(daemon, **q) -> list[dict]:
    return api(daemon, "/api/exams?" + "&".join(f"{k}={v}" for k, v in q.items()))[1]


def exam_of(ds: Dataset):
    """The exam ``ds`` made once its settle window is over (reports.settle_seconds)."""
    return lambda d: next((e for e in exams(d) if e["sop_instance_uid"] == ds.SOPInstanceUID and e["state"] != "settling"), None)


def region(exam_json: dict, site: str, lat: str | None) -> dict:
    return next(r for r in exam_json["regions"] if r["site"] == site and r["laterality"] == lat)


@pytest.fixture(scope="module")
def emr():
    peer = MllpPeer(default="AA")
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def fhir():
    peer = FhirPeer()
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, emr, fhir):
    tmp = tmp_path_factory.mktemp("exams")
    d = start_daemon(
        tmp,
        {
            "storage": {"min_free_bytes": 0},
            "reports": {"settle_seconds": 0.3},
            "destinations": {"emr": {"type": "hl7", "host": "127.0.0.1", "port": emr.port, "retry_base": 0.3}, "fhir": {"type": "fhir", "url": fhir.url, "retry_base": 0.3}},
            "routes": [{"match": {"kind": "report"}, "to": ["emr", "fhir"]}],
        },
    )
    yield d
    d.stop()


@pytest.mark.parametrize("vendor, build, device", [("hologic", hologic_sr, HOLOGIC), ("ge", ge_sr, GE)])
def test_vendor_sr_gives_an_exam_equal_to_the_last_digit(daemon, tmp_path, vendor, build, device):
    known = known_exam(vendor, device, patient_id=f"PX-{vendor}", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = build(known)
    store(daemon, ds, tmp_path / "sr.dcm")
    row = wait_for(lambda: exam_of(ds)(daemon), 15)
    assert row and row["state"] == "parsed", row
    got = row["exam"]
    for r in known.regions:
        g = region(got, r.site, r.laterality)
        for measure in ("bmd", "bmc", "area", "t_score", "z_score"):
            want = getattr(r, measure)
            assert g[measure] == (str(want) if want is not None else None), (r.site, measure)
    assert got["frax"]["major_with_bmd"] == "18.0"
    # 66-year-old woman: T-scores; lowest of L1,L2,L4 / neck / total hip is the left neck at -2.5
    assert row["classification"]["score_type"] == "T"
    assert row["classification"]["category"] == "osteoporosis"
    assert row["report"]["status"] == "P"
    status, text = api(daemon, f"/api/exams/{row['id']}/report")
    assert status == 200 and "0.571" in text and "-2.5" in text


def test_change_since_previous_exam(daemon, tmp_path):
    uid = generate_uid
    first = known_exam("hologic", HOLOGIC, patient_id="PSERIAL", exam_date="20220501", sop_instance_uid=uid(), study_instance_uid=uid())
    store(daemon, hologic_sr(first), tmp_path / "a.dcm")
    assert wait_for(lambda: exams(daemon, patient="PSERIAL", state="parsed"), 15)
    # two years later: left total hip 0.700 -> 0.650 (-7.1%, beyond the 5.0% LSC), neck 0.571 -> 0.560 (-1.9%, within 6.9%)
    regions = tuple(
        r.__class__(*[(Decimal("0.650") if (r.site, r.laterality) == ("total_hip", "L") else Decimal("0.560") if (r.site, r.laterality) == ("neck", "L") else r.bmd) if f == "bmd" else getattr(r, f) for f in r.__dataclass_fields__])
        for r in first.regions
    )
    second = known_exam("hologic", HOLOGIC, patient_id="PSERIAL", exam_date="20240501", sop_instance_uid=uid(), study_instance_uid=uid(), regions=regions)
    ds = hologic_sr(second)
    store(daemon, ds, tmp_path / "b.dcm")
    row = wait_for(lambda: exam_of(ds)(daemon), 15)
    comparison = row["comparison"]
    assert comparison["comparable"] and comparison["previous_date"] == "20220501"
    changes = {c["site"]: c for c in comparison["changes"]}
    hip = next(c for name, c in changes.items() if "hip" in name.lower() and "left" in name.lower())
    neck = next(c for name, c in changes.items() if "neck" in name.lower() and "left" in name.lower())
    assert hip["change_g_cm2"] == "-0.050" and hip["significant"] is True
    assert neck["change_g_cm2"] == "-0.011" and neck["significant"] is False
    assert row["previous_exam"] is not None


def test_dose_sr_of_the_study_is_kept_with_the_exam(daemon, tmp_path):
    known = known_exam("ge", GE, patient_id="PDOSE", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    header = Dataset()
    for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime"):
        setattr(header, kw, {"PatientID": known.patient_id, "PatientName": known.patient_name, "PatientBirthDate": known.patient_birth_date, "PatientSex": "F", "StudyInstanceUID": known.study_instance_uid, "AccessionNumber": known.accession_number, "StudyDate": known.exam_date, "StudyTime": known.exam_time}[kw])
    rdsr = dose_sr(header, DoseRecord(dap=Decimal("1.23"), dap_units="Gy.m2", source="rdsr"), sop_uid=generate_uid(), series_uid=generate_uid(), device=GE)
    store(daemon, rdsr, tmp_path / "dose.dcm")
    ds = ge_sr(known)
    store(daemon, ds, tmp_path / "sr.dcm")
    row = wait_for(lambda: exam_of(ds)(daemon), 15)
    assert row["dose"] is not None and row["dose"]["dap"] == "1.23"
    status, text = api(daemon, f"/api/exams/{row['id']}/report")
    assert "1.23" in text


def _study_header(known) -> Dataset:
    header = Dataset()
    header.PatientID, header.PatientName, header.PatientBirthDate, header.PatientSex = known.patient_id, known.patient_name, known.patient_birth_date, "F"
    header.StudyInstanceUID, header.AccessionNumber = known.study_instance_uid, known.accession_number
    header.StudyDate, header.StudyTime = known.exam_date, known.exam_time
    return header


def test_mpps_dose_is_kept_with_the_exam_until_an_rdsr_gives_one(daemon, tmp_path):
    known = known_exam("hologic", HOLOGIC, patient_id="PMPPSDOSE", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(known)
    scu = ScannerScu(daemon.dicom_port)
    try:
        uid, status = scu.create(mpps_create_dataset(study_uid=known.study_instance_uid, patient_id=known.patient_id))
        assert status.Status == 0x0000
        store(daemon, ds, tmp_path / "sr.dcm")
        row = wait_for(lambda: exam_of(ds)(daemon), 15)
        assert row["dose"] is None  # nothing has given a dose yet
        final = mpps_final()
        final.ImageAndFluoroscopyAreaDoseProduct = "0.42"  # dGy.cm2 (PS3.3 C.4.16)
        final.EntranceDoseInmGy = "0.05"
        assert scu.set(uid, final).Status == 0x0000
    finally:
        scu.release()
    row = wait_for(lambda: (lambda r: r if r and r["dose"] else None)(exam_of(ds)(daemon)), 15)
    assert row["dose"]["source"] == "mpps"
    assert row["dose"]["dap"] == "0.42" and row["dose"]["entrance_dose"] == "0.05"
    assert "0.42" in api(daemon, f"/api/exams/{row['id']}/report")[1]
    # the study's RDSR arrives later: it is the dose record, and replaces the MPPS figures
    rdsr = dose_sr(_study_header(known), DoseRecord(dap=Decimal("1.5"), dap_units="Gy.m2", source="rdsr"), sop_uid=generate_uid(), series_uid=generate_uid(), device=HOLOGIC)
    store(daemon, rdsr, tmp_path / "dose.dcm")
    row = wait_for(lambda: (lambda r: r if r and r["dose"]["source"] == "rdsr" else None)(exam_of(ds)(daemon)), 15)
    assert row["dose"]["dap"] == "1.5"


def test_sign_sends_oru_and_bundle_that_parse_back(daemon, emr, fhir, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    known = known_exam("hologic", HOLOGIC, patient_id="PSIGN", accession_number="ACC-SIGN", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(known)
    store(daemon, ds, tmp_path / "sr.dcm")
    row = wait_for(lambda: exam_of(ds)(daemon), 15)
    before = len(emr.received)
    assert api(daemon, f"/api/exams/{row['id']}/sign", {"reporter": "Dr Nobody"})[0] == 400  # the reporter is the identity, not typed
    status, body = api(daemon, f"/api/exams/{row['id']}/sign", {})
    assert status == 201 and body["status"] == "F" and body["reporter"] == "Dr Test Reporter (GMC 0000001)"
    assert wait_for(lambda: len(emr.received) > before, 15)
    oru = emr.received[-1]
    msg = parse_message(oru.replace("\n", "\r"), find_groups=False)
    assert msg.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert msg.obr.obr_25.to_er7() == "F"
    numeric = {obx.obx_3.obx_3_1.to_er7(): obx.obx_5.to_er7() for obx in msg.obx if obx.obx_2.to_er7() == "NM"}
    assert numeric["38267-1"] == "-1.6"  # lumbar spine T-score: the L1,L2,L4 total the diagnosis used (issue 14 defect 1)
    assert numeric["80954-1"] == "0.571"  # left femoral neck BMD (LOINC femur left), to the last digit
    assert wait_for(lambda: fhir.received, 15)
    bundle = Bundle.model_validate_json(fhir.received[-1])
    report = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "DiagnosticReport")
    assert report.status == "final"
    # a second sign without an amendment is refused; with one it is a corrected report
    assert api(daemon, f"/api/exams/{row['id']}/sign", {})[0] == 409
    status, body = api(daemon, f"/api/exams/{row['id']}/sign", {"amendment": "Left hip scan repeated."})
    assert status == 201 and body["status"] == "C"
    assert wait_for(lambda: any("|C|" in m and "Left hip scan repeated" in m for m in emr.received[before:]), 15)


def test_unknown_and_broken_srs_are_kept_unparsed(daemon, tmp_path):
    from tests.dicom_data import secondary_capture

    odd = Dataset()
    odd.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    odd.SOPInstanceUID = generate_uid()
    odd.StudyInstanceUID = generate_uid()
    odd.SeriesInstanceUID = generate_uid()
    odd.PatientID = "PODD"
    odd.Modality = "SR"
    odd.Manufacturer = "ACME Bone Co"
    odd.ValueType = "CONTAINER"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "X1", "99ACME", "Something else"
    odd.ConceptNameCodeSequence = [concept]
    odd.ContentSequence = []
    odd.file_meta = FileMetaDataset()
    odd.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    store(daemon, odd, tmp_path / "odd.dcm")
    row = wait_for(lambda: exam_of(odd)(daemon), 15)
    assert row["state"] == "unparsed" and row["reason"]
    # a Hologic SR whose results text is garbage
    broken = hologic_sr(known_exam("hologic", HOLOGIC, patient_id="PBROKEN", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid()), text="<HologicHeader1>ResultsTable1[ 0 ][ 0 ] = ;;;")
    store(daemon, broken, tmp_path / "broken.dcm")
    row2 = wait_for(lambda: exam_of(broken)(daemon), 15)
    assert row2["state"] == "unparsed", row2
    status, _ = api(daemon, f"/api/exams/{row['id']}/report")
    assert status == 404
    with urllib.request.urlopen(urllib.request.Request(daemon.http + "/metrics", headers=daemon.headers), timeout=10) as rsp:
        assert 'dxagw_exams_total{state="unparsed"}' in rsp.read().decode()
