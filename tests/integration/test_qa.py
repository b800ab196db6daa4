"""Scanner QA from phantom scans in the real daemon (issue 16 item 1).

Seed 001 "Quality assurance": phantom QA daily before patients; the person
reporting is told of issues affecting a scan's reliability; a failed QA
check stops scanning.  Phantoms (Patient ID PHANTOM1) are stored with dcmtk
storescu as Hologic SRs (mappings/bmd/samples.py).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from mappings.bmd.models import BmdExam, Device, RegionResult
from mappings.bmd.samples import hologic_report_images, hologic_sr
from tests.hl7_messages import orm
from tests.integration.test_exams import api, exams
from tests.integration.test_orders_worklist import results, station_query
from tests.orthanc import wait_for
from tests.support import MllpClient, ack_fields, dcmtk, http_request
from tests.unit.bmd.helpers import HOLOGIC, known_exam

SERIAL = "QA-SN-4242"
SCANNER = Device(HOLOGIC.manufacturer, HOLOGIC.model, SERIAL, HOLOGIC.software)
STATION = "DXAQA1"
TODAY = dt.date.today().strftime("%Y%m%d")
BASE = ["1.000", "1.002", "0.998", "1.001", "0.999", "1.000", "1.003", "0.997", "1.001", "0.999"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from tests.support import start_daemon

    tmp = tmp_path_factory.mktemp("qa")
    d = start_daemon(
        tmp,
        {
            "storage": {"min_free_bytes": 0},
            "reports": {"settle_seconds": 0.3},
            "qa": {"block_worklist_on_fail": True},
            "destinations": {"pacs": {"type": "folder", "path": str(tmp / "pacs"), "retry_base": 0.3}},
            "routes": [{"match": {"kind": ["sr", "image"]}, "to": ["pacs"]}],
        },
    )
    d.pacs = tmp / "pacs"
    yield d
    d.stop()


def store_as(daemon, ds, path: Path, aet: str) -> None:
    ds.save_as(path, enforce_file_format=True)
    r = subprocess.run([dcmtk("storescu"), "-aet", aet, "-aec", "DXAGW", "127.0.0.1", str(daemon.dicom_port), str(path)],
                       capture_output=True, text=True, env=dict(os.environ, TCP_NODELAY="1"))  # fmt: skip
    assert r.returncode == 0, r.stderr


def phantom(n: int, bmd: str) -> BmdExam:
    return known_exam(
        "hologic", SCANNER, patient_id="PHANTOM1", patient_name="Phantom^Spine", exam_date=TODAY, exam_time=f"00{n:02d}00",
        sop_instance_uid=generate_uid(), study_instance_uid=generate_uid(), accession_number="",
        regions=(RegionResult("L1-L4", None, Decimal(bmd), Decimal("55.0"), Decimal("55.0")),), frax=None,
    )  # fmt: skip


def qa_row(daemon) -> dict | None:
    return next((r for r in api(daemon, "/api/qa")[1] if r["serial"] == SERIAL), None)


def scans_seen(daemon, n: int):
    return lambda: (row := qa_row(daemon)) is not None and row["scans"] == n and row


def test_ten_phantoms_then_three_percent_low_fails_the_scanner_and_flags_its_next_exam(daemon, tmp_path):
    mllp = MllpClient(daemon.hl7_port)
    for n, station in enumerate((STATION, "DXAOTHER")):
        ack = mllp.send(orm(f"QAO{n}", placer=f"QP{n}", filler=f"QF{n}", accession=f"QACC{n}", station=station, start=f"{TODAY}093000", patient_id=f"QPAT{n}"))
        assert ack_fields(ack)["MSA"][1] == "AA", ack
    mllp.close()
    sent = []
    for n, bmd in enumerate(BASE):
        ds = hologic_sr(phantom(n, bmd))
        sent.append(ds.SOPInstanceUID)
        store_as(daemon, ds, tmp_path / f"p{n}.dcm", STATION)
    row = wait_for(scans_seen(daemon, 10), 30)
    assert row and row["status"] == "ok" and row["station_ae"] == STATION, row
    assert abs(row["baseline_mean"] - 1.0) < 1e-6 and row["last_bmd"] == "0.999"
    assert len(results(daemon, tmp_path, station_query(STATION), aet=STATION)) == 1

    # one scan 3 % low: beyond the 1.5 % tolerance
    low = hologic_sr(phantom(10, "0.970"))
    sent.append(low.SOPInstanceUID)
    store_as(daemon, low, tmp_path / "low.dcm", STATION)
    row = wait_for(scans_seen(daemon, 11), 30)
    assert row and row["status"] == "fail" and row["deviation_percent"] == -3.0 and "tolerance" in row["rules"], row
    status, chart = api(daemon, f"/api/qa/{SERIAL}")
    assert status == 200 and [p["phase"] for p in chart["scans"]] == ["baseline"] * 10 + ["check"]
    assert chart["scans"][-1]["bmd"] == "0.970" and chart["scans"][-1]["rules"][0] == "tolerance"
    metrics = http_request(daemon.http + "/metrics", token=daemon.token)[1]
    metrics = metrics if isinstance(metrics, str) else metrics.decode()
    assert f'dxagw_qa_status{{scanner="{SERIAL}"}} 3.0' in metrics
    assert f'dxagw_qa_deviation_percent{{scanner="{SERIAL}"}} -3.0' in metrics

    # block_worklist_on_fail: the failed scanner's station sees no patients; another station does
    assert results(daemon, tmp_path, station_query(STATION), aet=STATION) == []
    assert len(results(daemon, tmp_path, station_query("DXAOTHER"), aet="DXAOTHER")) == 1

    # the next patient exam from that scanner carries the QA flag into its report
    patient = known_exam("hologic", SCANNER, patient_id="QPAT0", accession_number="QACC0", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(patient)
    store_as(daemon, ds, tmp_path / "patient.dcm", STATION)
    exam = wait_for(lambda: next((e for e in exams(daemon, patient="QPAT0") if e["state"] == "parsed"), None), 30)
    assert exam, exams(daemon, patient="QPAT0")
    assert any(f.startswith(f"Scanner QA failed: the last phantom scan of scanner {SERIAL}") and "-3.0%" in f for f in exam["exam"]["flags"]), exam["exam"]["flags"]
    status, text = api(daemon, f"/api/exams/{exam['id']}/report")
    assert status == 200 and "Scanner QA failed" in text

    # phantoms are never exams and never routed: the folder has the patient's SR only
    assert exams(daemon, patient="PHANTOM1") == []
    assert wait_for(lambda: any(p.suffix == ".dcm" or p.is_file() for p in daemon.pacs.glob("*")), 20)
    kept = [pydicom.dcmread(p, stop_before_pixels=True) for p in daemon.pacs.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert [k.SOPInstanceUID for k in kept] == [ds.SOPInstanceUID]
    assert not set(sent) & {k.SOPInstanceUID for k in kept}

    # a passing phantom scan: ok again, and the station's worklist is back
    store_as(daemon, hologic_sr(phantom(11, "1.001")), tmp_path / "pass.dcm", STATION)
    row = wait_for(scans_seen(daemon, 12), 30)
    assert row and row["status"] == "ok", row
    assert len(results(daemon, tmp_path, station_query(STATION), aet=STATION)) == 1

    # a phantom as Hologic report images (another carrier): in the series, not routed
    images = hologic_report_images(phantom(12, "1.000"))
    for n, image in enumerate(images):
        store_as(daemon, image, tmp_path / f"img{n}.dcm", STATION)
    row = wait_for(scans_seen(daemon, 13), 30)
    assert row and row["status"] == "ok" and row["last_bmd"] == "1.000", row
    assert exams(daemon, patient="PHANTOM1") == []
    names = {p.name for p in daemon.pacs.iterdir()}
    assert not any(image.SOPInstanceUID in name for image in images for name in names), names
    # routes are decided in the C-STORE's commit: the patient's SR is the only row ever queued
    assert len(api(daemon, "/api/outbox?destination=pacs")[1]) == 1


def test_unknown_scanner_series_is_404(daemon):
    assert api(daemon, "/api/qa/NOPE")[0] == 404
