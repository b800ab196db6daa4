"""Priors from the PACS (issue 18) against Orthanc: earlier studies of both
vendors' layouts are put into Orthanc through its REST API; a new exam stored
with storescu is compared with the prior the daemon fetched (C-FIND + C-MOVE
to itself, or QIDO-RS + WADO-RS)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from mappings.bmd.samples import ge_report_images, ge_sr, hologic_report_images, hologic_sr
from tests.integration.test_exams import api, exams, store
from tests.orthanc import start_orthanc, wait_for
from tests.support import free_port, have_dcmtk, start_daemon
from tests.unit.bmd.helpers import GE, HOLOGIC, known_exam

pytestmark = pytest.mark.skipif(not (have_dcmtk() and os.path.exists("/usr/sbin/Orthanc")), reason="needs dcmtk and Orthanc")

GW_PORT = free_port()


def part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def with_bmd(exam, bmd: dict[tuple[str, str | None], str]):
    """``exam`` with some regions' BMD replaced."""
    regions = tuple(r.__class__(*[Decimal(bmd[(r.site, r.laterality)]) if f == "bmd" and (r.site, r.laterality) in bmd else getattr(r, f) for f in r.__dataclass_fields__]) for r in exam.regions)
    return exam.__class__(**{**{f: getattr(exam, f) for f in exam.__dataclass_fields__}, "regions": regions})


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    o = start_orthanc(tmp_path_factory.mktemp("orthanc"), {"DicomModalities": {"gw": ["DXAGW", "127.0.0.1", GW_PORT]}})
    yield o
    o.stop()


def gateway(tmp: Path, orthanc, sources: list[dict], extra_destinations: dict | None = None, **priors):
    dests = {
        **(extra_destinations or {}),
        "pacs": {"type": "dicom", "host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet},
        "pacs-web": {"type": "dicomweb", "url": orthanc.url + "/dicom-web"},
        "pacs-down": {"type": "dicom", "host": "127.0.0.1", "port": free_port(), "ae_title": "DOWN"},
        "archive": {"type": "folder", "path": str(tmp / "routed")},
    }
    over = {
        "storage": {"min_free_bytes": 0},
        "reports": {"settle_seconds": 0.3},
        "destinations": dests,
        "routes": [{"match": {"kind": ["image", "sr"]}, "to": ["archive"]}],
        "priors": {"sources": sources, "timeout": 20, **priors},
    }
    if sources and sources[0]["destination"] == "pacs":
        over["dicom"] = {"port": GW_PORT}
    return start_daemon(tmp, over)


@pytest.fixture(scope="module")
def cmove_daemon(tmp_path_factory, orthanc):
    d = gateway(tmp_path_factory.mktemp("gw-cmove"), orthanc, [{"destination": "pacs", "method": "c-move", "move_destination": "DXAGW"}])
    yield d
    d.stop()


def drafted(daemon, sop_uid: str):
    return lambda: next((e for e in exams(daemon) if e["sop_instance_uid"] == sop_uid and e["state"] == "parsed"), None)


def routed_names(daemon) -> set[str]:
    root = daemon.dir / "routed"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.parametrize("vendor, images, sr, device", [("hologic", hologic_report_images, hologic_sr, HOLOGIC), ("ge", ge_report_images, ge_sr, GE)])
def test_new_exam_is_compared_with_a_prior_moved_from_the_pacs(cmove_daemon, orthanc, tmp_path, vendor, images, sr, device):
    """A patient whose only earlier scan is in the PACS gets the comparison and the
    LSC verdict (DOMAIN.md section 4: LSC 5.0% total hip, 6.9% femoral neck, ISCD)."""
    pid = f"PRIOR-{vendor}"
    prior = known_exam(vendor, device, patient_id=pid, exam_date="20220501", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    prior_objects = images(prior)  # the earlier study: report images, as the PACS holds them
    for ds in prior_objects:
        orthanc.upload(part10(ds))
    # two years later: left total hip 0.700 -> 0.650 (-7.1%, beyond 5.0%), neck 0.571 -> 0.560 (-1.9%, within 6.9%)
    new = with_bmd(
        known_exam(vendor, device, patient_id=pid, exam_date="20240501", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid()),
        {("total_hip", "L"): "0.650", ("neck", "L"): "0.560"},
    )
    ds = sr(new)
    store(cmove_daemon, ds, tmp_path / "new.dcm")
    row = wait_for(drafted(cmove_daemon, ds.SOPInstanceUID), 40)
    assert row is not None, cmove_daemon.log_text()[-3000:]
    comparison = row["comparison"]
    assert comparison and comparison["comparable"] and comparison["previous_date"] == "20220501", comparison
    changes = {c["site"].lower(): c for c in comparison["changes"]}
    hip = next(c for name, c in changes.items() if "hip" in name and "left" in name)
    neck = next(c for name, c in changes.items() if "neck" in name and "left" in name)
    assert hip["change_g_cm2"] == "-0.050" and hip["significant"] is True
    assert neck["change_g_cm2"] == "-0.011" and neck["significant"] is False
    # the prior is kept for comparison only: state prior, no report, never routed
    priors = [e for e in exams(cmove_daemon, patient=pid) if e["state"] == "prior"]
    assert len(priors) == 1 and priors[0]["exam_date"] == "20220501" and priors[0]["report"]["status"] is None
    assert row["previous_exam"] == priors[0]["id"]
    status, body = api(cmove_daemon, f"/api/exams/{priors[0]['id']}/sign", {})
    assert status == 409
    assert wait_for(lambda: any(n.startswith(ds.SOPInstanceUID) for n in routed_names(cmove_daemon)), 15)
    names = routed_names(cmove_daemon)
    assert not any(n.startswith(p.SOPInstanceUID) for p in prior_objects for n in names), names
    status, text = api(cmove_daemon, f"/api/exams/{row['id']}/report")
    assert "could not be fetched" not in text


def test_a_prior_under_the_same_id_with_another_name_is_flagged_not_used(cmove_daemon, orthanc, tmp_path):
    """Same Patient ID, another name and birth date: a wrong-patient risk, flagged and not compared."""
    pid = "PRIOR-MISMATCH"
    other = known_exam("hologic", HOLOGIC, patient_id=pid, patient_name="Jones^Brian", patient_birth_date="19400101",
                       exam_date="20210301", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())  # fmt: skip
    for ds in hologic_report_images(other):
        orthanc.upload(part10(ds))
    new = known_exam("hologic", HOLOGIC, patient_id=pid, exam_date="20240501", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(new)
    store(cmove_daemon, ds, tmp_path / "new.dcm")
    row = wait_for(drafted(cmove_daemon, ds.SOPInstanceUID), 40)
    assert row is not None
    assert row["comparison"] is None and row["previous_exam"] is None
    flags = " ".join(row["exam"]["flags"])
    assert "2021-03-01" in flags and "wrong-patient" in flags and "name and birth date differ" in flags, flags
    assert not [e for e in exams(cmove_daemon, patient=pid) if e["state"] == "prior"]
    status, text = api(cmove_daemon, f"/api/exams/{row['id']}/report")
    assert "wrong-patient" in text
    status, st = api(cmove_daemon, "/api/priors/status")
    assert st["studies"]["lookup"]["mismatch"] >= 1


@pytest.mark.parametrize("second", [{"destination": "pacs-web", "method": "dicomweb"}, {"destination": "pacs", "method": "c-get"}])
def test_second_source_after_a_source_that_is_down(orthanc, tmp_path, second):
    """Sources are asked in order: a DIMSE PACS that is down, then DICOMweb (QIDO-RS,
    WADO-RS) or C-FIND + C-GET (objects on the same association)."""
    d = gateway(tmp_path / "gw", orthanc, [{"destination": "pacs-down", "method": "c-move"}, second])
    try:
        pid = f"PRIOR-{second['method']}"
        prior = known_exam("ge", GE, patient_id=pid, exam_date="20230115", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        for ds in ge_report_images(prior):
            orthanc.upload(part10(ds))
        new = with_bmd(known_exam("ge", GE, patient_id=pid, exam_date="20240501", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid()), {("total_hip", "L"): "0.650"})
        ds = ge_sr(new)
        store(d, ds, tmp_path / "new.dcm")
        row = wait_for(drafted(d, ds.SOPInstanceUID), 40)
        assert row is not None, d.log_text()[-3000:]
        assert row["comparison"] and row["comparison"]["previous_date"] == "20230115"
        hip = next(c for c in row["comparison"]["changes"] if "hip" in c["site"].lower() and "left" in c["site"].lower())
        assert hip["significant"] is True
        assert [e["state"] for e in exams(d, patient=pid)].count("prior") == 1
    finally:
        d.stop()


def test_a_pacs_that_is_down_delays_the_report_then_it_notes_it(orthanc, tmp_path):
    """The report waits for its lookup up to priors.timeout, then goes on, saying
    priors could not be fetched (issue 18; seed 001: technical validity)."""
    d = gateway(tmp_path / "gw", orthanc, [{"destination": "pacs-down", "method": "c-move"}], timeout=6)
    try:
        new = known_exam("hologic", HOLOGIC, patient_id="PRIOR-DOWN", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        ds = hologic_sr(new)
        store(d, ds, tmp_path / "new.dcm")
        # while the lookup runs the exam waits (settling, no report)
        waiting = wait_for(lambda: api(d, "/api/priors/status")[1]["lookups"].get("running") and next((e for e in exams(d) if e["sop_instance_uid"] == ds.SOPInstanceUID), None), 10)
        assert waiting and waiting["state"] == "settling" and waiting["report"]["status"] is None
        row = wait_for(drafted(d, ds.SOPInstanceUID), 40)
        assert row is not None
        assert any("Priors could not be fetched" in f for f in row["exam"]["flags"]), row["exam"]["flags"]
        status, text = api(d, f"/api/exams/{row['id']}/report")
        assert "Priors could not be fetched" in text
        assert api(d, "/api/priors/status")[1]["lookups"] == {"failed": 1}
        with urllib.request.urlopen(urllib.request.Request(d.http + "/metrics", headers=d.headers), timeout=10) as rsp:
            assert 'dxagw_prior_lookups{state="failed"} 1.0' in rsp.read().decode()
    finally:
        d.stop()


def test_a_merge_moves_the_priors_with_the_patient(cmove_daemon, orthanc, tmp_path):
    """ADT^A40: the exams and fetched priors of the old Patient ID go to the surviving one."""
    from tests.hl7_messages import adt
    from tests.support import MllpClient, ack_fields

    prior = known_exam("hologic", HOLOGIC, patient_id="PRIOR-OLD", exam_date="20200601", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    for ds in hologic_report_images(prior):
        orthanc.upload(part10(ds))
    first = known_exam("hologic", HOLOGIC, patient_id="PRIOR-OLD", exam_date="20230601", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    store(cmove_daemon, hologic_sr(first), tmp_path / "first.dcm")
    assert wait_for(drafted(cmove_daemon, first.sop_instance_uid), 40)["comparison"]["previous_date"] == "20200601"
    mllp = MllpClient(cmove_daemon.hl7_port)
    try:
        assert ack_fields(mllp.send(adt("PRI-A40", "A40", patient_id="PRIOR-NEW", name="Smith^Anne", prior="PRIOR-OLD")))["MSA"][1] == "AA"
    finally:
        mllp.close()
    moved = {e["state"] for e in exams(cmove_daemon, patient="PRIOR-NEW")}
    assert moved == {"prior", "parsed"} and not exams(cmove_daemon, patient="PRIOR-OLD")
    lookups = sum(api(cmove_daemon, "/api/priors/status")[1]["lookups"].values())
    later = known_exam("hologic", HOLOGIC, patient_id="PRIOR-NEW", exam_date="20250601", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    store(cmove_daemon, hologic_sr(later), tmp_path / "later.dcm")
    assert wait_for(drafted(cmove_daemon, later.sop_instance_uid), 40)["comparison"]["previous_date"] == "20230601"
    # the patient has an earlier exam here: the PACS is not asked again
    assert sum(api(cmove_daemon, "/api/priors/status")[1]["lookups"].values()) == lookups


BACKFILL_STUDIES = 240


def _backfill_pacs(orthanc) -> list[str]:
    """240 past DXA studies of 240 patients, 2015-2024, both vendors' SR layouts and a few report images."""
    uids = []
    for i in range(BACKFILL_STUDIES):
        vendor, device = ("hologic", HOLOGIC) if i % 2 else ("ge", GE)
        when = f"{2015 + i % 10}{1 + i % 12:02d}{1 + i % 28:02d}"
        exam = known_exam(vendor, device, patient_id=f"BF-{i:03d}", exam_date=when, sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        if i % 40 == 0:
            objects = (hologic_report_images if vendor == "hologic" else ge_report_images)(exam)
        else:
            objects = [(hologic_sr if vendor == "hologic" else ge_sr)(exam)]
        for ds in objects:
            orthanc.upload(part10(ds))
        uids.append(exam.study_instance_uid)
    return uids


@pytest.mark.slow
def test_backfill_walks_the_pacs_and_resumes_after_kill_9(tmp_path):
    """``dxa-gateway priors backfill`` prints its progress and a summary; killed with
    SIGKILL mid-run, the same command goes on where it stopped (progress in the store)."""
    port = free_port()
    pacs = start_orthanc(tmp_path / "orthanc", {"DicomModalities": {"gw": ["DXAGW", "127.0.0.1", port]}})
    d = None
    try:
        _backfill_pacs(pacs)
        d = start_daemon(tmp_path / "gw", {
            "dicom": {"port": port}, "storage": {"min_free_bytes": 0}, "reports": {"settle_seconds": 0.3},
            "destinations": {"pacs": {"type": "dicom", "host": "127.0.0.1", "port": pacs.dicom_port, "ae_title": pacs.aet},
                             "archive": {"type": "folder", "path": str(tmp_path / "routed")}},
            "routes": [{"match": {"kind": ["image", "sr"]}, "to": ["archive"]}],
            "priors": {"sources": [{"destination": "pacs", "method": "c-move"}], "backfill": {"query_days": 92}},
        })  # fmt: skip
        cmd = [sys.executable, "-m", "gateway", "priors", "backfill", "--config", str(d.config_path), "--since", "2015-01-01", "--rate", "25"]
        with open(tmp_path / "first.out", "wb") as out:
            first = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
            progress = wait_for(lambda: (api(d, "/api/priors/status")[1]["backfill"]["done"] >= 40) or first.poll() is not None, 120)
            assert progress and first.poll() is None, (tmp_path / "first.out").read_text()[-2000:]
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        status = api(d, "/api/priors/status")[1]["backfill"]
        assert status["studies"] == BACKFILL_STUDIES and BACKFILL_STUDIES > status["done"] >= 40
        assert status["runs"][0]["state"] == "retrieving"
        second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=240)
        assert second.returncode == 0, second.stdout + second.stderr
        text = second.stdout + second.stderr
        assert "retrieve" in text and f"/{BACKFILL_STUDIES}" in text  # tqdm's bar: done/total
        assert f"{BACKFILL_STUDIES} DXA studies found, {BACKFILL_STUDIES} retrieved" in text, text[-1500:]
        status = api(d, "/api/priors/status")[1]["backfill"]
        assert status["done"] == BACKFILL_STUDIES and status["runs"][0]["state"] == "finished"
        # every study became one prior exam, none was routed or reported
        got = wait_for(lambda: len([e for e in exams(d, state="prior", limit=1000)]) >= BACKFILL_STUDIES, 120)
        assert got, len(exams(d, state="prior", limit=1000))
        priors = exams(d, state="prior", limit=1000)
        assert len({e["study_instance_uid"] for e in priors}) == len(priors) == BACKFILL_STUDIES
        assert not exams(d, state="parsed") and not [p for p in (tmp_path / "routed").rglob("*") if p.is_file()]
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)  # finished: nothing more to do
        assert f"{BACKFILL_STUDIES} retrieved (0 objects this run)" in again.stdout + again.stderr
        # --patients FILE: only those patients' studies
        for n in (1, 2, 3):
            late = known_exam("ge", GE, patient_id=f"BF-NEW-{n}", exam_date="20190101", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
            pacs.upload(part10(ge_sr(late)))
        (tmp_path / "patients.txt").write_text("BF-NEW-1\nBF-NEW-2\n")
        listed = subprocess.run([*cmd, "--patients", str(tmp_path / "patients.txt")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert listed.returncode == 0 and "2 objects this run" in listed.stdout + listed.stderr, listed.stdout + listed.stderr
        assert wait_for(lambda: all(exams(d, patient=f"BF-NEW-{n}") for n in (1, 2)), 30)
        assert not exams(d, patient="BF-NEW-3")
        # the first day's reports: compared with the backfilled prior, unless it is another patient's
        same = known_exam("hologic", HOLOGIC, patient_id="BF-001", exam_date="20250601", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        other = known_exam("hologic", HOLOGIC, patient_id="BF-003", patient_name="Jones^Brian", exam_date="20250601", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        for exam in (same, other):
            store(d, hologic_sr(exam), tmp_path / "new.dcm")
        row = wait_for(drafted(d, same.sop_instance_uid), 40)
        assert row["comparison"]["comparable"] and row["comparison"]["previous_date"] == "20160202"
        row = wait_for(drafted(d, other.sop_instance_uid), 40)
        assert not row["comparison"]["comparable"] and "wrong-patient" in row["comparison"]["reason"] and "name differs" in row["comparison"]["reason"]
        assert "wrong-patient" in api(d, f"/api/exams/{row['id']}/report")[1]
    finally:
        if d is not None:
            d.stop()
        pacs.stop()


def test_priors_that_come_after_the_timeout_update_a_preliminary_report(orthanc, tmp_path):
    """A PACS that answers nothing holds the lookup past priors.timeout: the report goes
    on with the note; when the next source's prior arrives, the preliminary report is
    drafted again with the comparison and without the note."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever answers
    try:
        pid = "PRIOR-LATE"
        prior = known_exam("ge", GE, patient_id=pid, exam_date="20220901", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        for ds in ge_report_images(prior):
            orthanc.upload(part10(ds))
        # the silent PACS holds the lookup 8 s (its ack_timeout), well past the report's 3 s wait
        silent_pacs = {"pacs-silent": {"type": "dicom", "host": "127.0.0.1", "port": silent.getsockname()[1], "ae_title": "SILENT", "ack_timeout": 8}}
        d = gateway(tmp_path / "gw", orthanc, [{"destination": "pacs-silent", "method": "c-move"}, {"destination": "pacs-web", "method": "dicomweb"}], silent_pacs, timeout=3)
        try:
            new = known_exam("ge", GE, patient_id=pid, exam_date="20240501", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
            ds = ge_sr(new)
            store(d, ds, tmp_path / "new.dcm")
            first = wait_for(drafted(d, ds.SOPInstanceUID), 40)
            assert first is not None and first["comparison"] is None
            assert any("Priors could not be fetched" in f for f in first["exam"]["flags"])
            later = wait_for(lambda: (e := drafted(d, ds.SOPInstanceUID)()) and e["comparison"] and e, 40)
            assert later, d.log_text()[-2000:]
            assert later["comparison"]["previous_date"] == "20220901" and later["report"]["status"] == "P"
            assert not any("Priors could not be fetched" in f for f in later["exam"]["flags"])
            assert "could not be fetched" not in api(d, f"/api/exams/{later['id']}/report")[1]
        finally:
            d.stop()
    finally:
        silent.close()


def test_a_lookup_cut_by_kill_9_is_taken_up_at_start(orthanc, tmp_path):
    """The lookup is durable: killed while the PACS was unreachable, the daemon
    restarted with the PACS reachable finishes it and the report has its comparison."""
    pid = "PRIOR-RESUME"
    prior = known_exam("hologic", HOLOGIC, patient_id=pid, exam_date="20220301", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    for ds in hologic_report_images(prior):
        orthanc.upload(part10(ds))
    web = [{"destination": "pacs-web", "method": "dicomweb"}]
    d = gateway(tmp_path / "gw", orthanc, [{"destination": "pacs-down", "method": "c-move"}], timeout=120)
    new = known_exam("hologic", HOLOGIC, patient_id=pid, exam_date="20240501", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    ds = hologic_sr(new)
    try:
        store(d, ds, tmp_path / "new.dcm")
        assert wait_for(lambda: api(d, "/api/priors/status")[1]["lookups"].get("running"), 15)
    finally:
        d.stop(signal.SIGKILL)
    # the same store, now with a source that answers
    d = gateway(tmp_path / "gw", orthanc, web, timeout=120)
    try:
        row = wait_for(drafted(d, ds.SOPInstanceUID), 60)
        assert row is not None, d.log_text()[-3000:]
        assert row["comparison"] and row["comparison"]["previous_date"] == "20220301"
        assert api(d, "/api/priors/status")[1]["lookups"] == {"done": 1}
    finally:
        d.stop()


def test_backfill_against_a_pacs_that_is_down_stops_with_a_clear_message(tmp_path):
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"storage: {{path: {tmp_path / 'data'}}}\n"
        f"destinations:\n  pacs: {{type: dicom, host: 127.0.0.1, port: {free_port()}, ae_title: PACS}}\n"
        "priors:\n  sources: [{destination: pacs, method: c-move}]\n"
    )
    r = subprocess.run([sys.executable, "-m", "gateway", "priors", "backfill", "--config", str(config), "--since", "2025-01-01"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "backfill stopped: pacs:" in r.stderr and "the same command resumes it" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("method", ["dicomweb", "c-get"])
def test_backfill_by_dicomweb_or_c_get_goes_through_the_daemon(tmp_path, method):
    """Objects fetched by the backfill process itself (WADO-RS, C-GET) enter through the
    daemon's Storage SCP and become priors there, as a C-MOVE's would."""
    port = free_port()
    pacs = start_orthanc(tmp_path / "orthanc", {"DicomModalities": {"gw": ["DXAGW", "127.0.0.1", port]}})
    d = None
    try:
        studies = []
        for i in range(6):
            exam = known_exam("hologic" if i % 2 else "ge", HOLOGIC if i % 2 else GE, patient_id=f"BW-{i}", exam_date=f"201{i}0601",
                              sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())  # fmt: skip
            objects = hologic_report_images(exam) if i == 1 else [(hologic_sr if i % 2 else ge_sr)(exam)]
            for ds in objects:
                pacs.upload(part10(ds))
            studies.append(exam.study_instance_uid)
        source = {"destination": "pacs-web", "method": "dicomweb"} if method == "dicomweb" else {"destination": "pacs", "method": "c-get"}
        d = start_daemon(tmp_path / "gw", {
            "dicom": {"port": port}, "storage": {"min_free_bytes": 0},
            "destinations": {"pacs": {"type": "dicom", "host": "127.0.0.1", "port": pacs.dicom_port, "ae_title": pacs.aet},
                             "pacs-web": {"type": "dicomweb", "url": pacs.url + "/dicom-web"},
                             "archive": {"type": "folder", "path": str(tmp_path / "routed")}},
            "routes": [{"match": {"kind": ["image", "sr"]}, "to": ["archive"]}],
            "priors": {"sources": [source], "backfill": {"query_days": 400}},
        })  # fmt: skip
        cmd = [sys.executable, "-m", "gateway", "priors", "backfill", "--config", str(d.config_path), "--since", "2010-01-01", "--rate", "50"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=240)
        assert r.returncode == 0 and "6 DXA studies found, 6 retrieved" in r.stderr, r.stdout + r.stderr
        assert wait_for(lambda: len(exams(d, state="prior")) == 6, 60), exams(d)
        assert {e["study_instance_uid"] for e in exams(d, state="prior")} == set(studies)
        assert not [p for p in (tmp_path / "routed").rglob("*") if p.is_file()]
    finally:
        if d is not None:
            d.stop()
        pacs.stop()
