"""Results from report images in the real daemon; nothing acknowledged lost to kill -9.

Issue 12 item 3: a Hologic without the SR option sends its results only in
its report images (Secondary Capture, Modality OT or BD, one per scan).
Issue 11 items 2 and 7: every acknowledged result object becomes (part of)
an exam even after kill -9 right after the C-STORE success, and the reader
process does not outlive the daemon.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from mappings.bmd import samples
from tests.integration.test_exams import api, exams
from tests.orthanc import wait_for
from tests.support import start_daemon, storescu
from tests.unit.bmd.helpers import HOLOGIC, known_exam, region

SETTLE = {"reports": {"settle_seconds": 0.5}, "storage": {"min_free_bytes": 0}}


def study_exam(daemon, study_uid: str, state: str = "parsed"):
    rows = [e for e in exams(daemon) if e["study_instance_uid"] == study_uid]
    return rows[0] if rows and rows[0]["state"] == state else None


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(tmp_path_factory.mktemp("result-images"), SETTLE)
    yield d
    d.stop()


@pytest.mark.parametrize("modality", ["OT", "BD"])
def test_hologic_report_images_alone_make_one_exam_with_the_right_values(daemon, tmp_path, modality):
    """Spine, left hip, right hip and forearm report images only: one exam for the
    study, every value to the last digit, and the WHO category from the lowest of
    spine (valid vertebrae), femoral neck and total hip (ISCD Adult Official
    Positions; WHO: T <= -2.5 osteoporosis)."""
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id=f"PIMG-{modality}", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    images = samples.hologic_report_images(known, modality=modality)
    storescu(daemon.dicom_port, images, tmp_path / "images")
    row = wait_for(lambda: study_exam(daemon, known.study_instance_uid), 20)
    assert row, exams(daemon)
    assert len([e for e in exams(daemon) if e["study_instance_uid"] == known.study_instance_uid]) == 1
    got = {(r["site"], r["laterality"]): r for r in row["exam"]["regions"]}
    for r in known.regions:
        g = got[(r.site, r.laterality)]
        for measure in ("bmd", "bmc", "area", "t_score", "z_score"):
            want = getattr(r, measure)
            assert g[measure] == (str(want) if want is not None else None), (r.site, r.laterality, measure)
    assert sorted(row["exam"]["sources"]) == sorted(ds.SOPInstanceUID for ds in images)
    assert row["classification"]["score_type"] == "T" and row["classification"]["category"] == "osteoporosis"
    assert row["classification"]["lowest_score"] == "-2.5"
    status, text = api(daemon, f"/api/exams/{row['id']}/report")
    assert status == 200 and "0.571" in text and "Osteoporosis" in text


def test_a_later_scan_of_the_study_updates_the_exam_and_a_rescan_is_shown(daemon, tmp_path):
    """A left hip scanned again after the report was drafted: the exam is updated,
    both neck results are kept and shown (exam JSON and report text), and the
    lowest diagnoses (ISCD: lowest site; issue 14 item 4, never silently dropped)."""
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id="PRESCAN", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    storescu(daemon.dicom_port, samples.hologic_report_images(known), tmp_path / "first")
    first = wait_for(lambda: study_exam(daemon, known.study_instance_uid), 20)
    assert first["classification"]["lowest_score"] == "-2.5"
    again = dataclasses.replace(known, sop_instance_uid=generate_uid(), regions=(region("neck", "L", "0.540", "-2.8", "-2.0"),))
    storescu(daemon.dicom_port, samples.hologic_report_images(again), tmp_path / "again")
    row = wait_for(lambda: (lambda r: r if r and r["classification"]["lowest_score"] == "-2.8" else None)(study_exam(daemon, known.study_instance_uid)), 20)
    necks = [r for r in row["exam"]["regions"] if (r["site"], r["laterality"]) == ("neck", "L")]
    assert sorted(r["bmd"] for r in necks) == ["0.540", "0.571"] and sorted(r["repeat"] for r in necks) == [1, 2]
    assert any("Measured more than once" in f for f in row["exam"]["flags"])
    text = api(daemon, f"/api/exams/{row['id']}/report")[1]
    assert "Measured more than once" in text and "(measurement 2)" in text and "0.540" in text and "0.571" in text


@pytest.mark.parametrize("vendor, layout", [("hologic", "hologic-apex"), ("ge", "ge-lunar-image-xml")])
def test_the_simulator_sends_report_images_only_and_they_make_one_exam(daemon, vendor, layout):
    """`dxa-sim scanner --vendor hologic --results images`: no SR, one image per scan
    (Hologic text block; GE Image Comments XML); the gateway makes one exam of them
    (issue 12 item 3)."""
    before = {e["id"] for e in exams(daemon)}
    r = subprocess.run(
        [sys.executable, "-m", "simulators", "scanner", "--vendor", vendor, "--results", "images", "--unscheduled", "--patients", "1",
         "--no-mpps", "--no-commit", "--seed", "7" if vendor == "hologic" else "8", "--gateway-port", str(daemon.dicom_port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr

    def made():
        rows = [e for e in exams(daemon) if e["id"] not in before and e["state"] == "parsed" and e["exam"]["layout"] == layout and len(e["exam"]["sources"]) >= 2]
        return rows[0] if rows else None

    row = wait_for(made, 30)
    assert row, exams(daemon)
    assert row["classification"]["category"] and row["exam"]["regions"]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _reader_pid(daemon) -> int:
    pids = wait_for(lambda: [p for p in _children(daemon.proc.pid) if "spawn_main" in _cmdline(p)], 20)
    assert pids, "no result reader process"
    return pids[0]


def test_an_acknowledged_object_becomes_an_exam_after_kill_9(tmp_path):
    """Issue 11 item 7: store, kill -9 right after the C-STORE success (the reader
    held so the reading cannot have happened), restart: the exam appears."""
    d = start_daemon(tmp_path / "gw", SETTLE)
    worker = _reader_pid(d)
    try:
        os.kill(worker, signal.SIGSTOP)  # nothing can be read before the crash
        known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id="PKILL9", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        images = samples.hologic_report_images(known)
        storescu(d.dicom_port, images, tmp_path / "images")
        d.stop(signal.SIGKILL)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)  # stopped: it cannot run its parent watch
    d2 = start_daemon(tmp_path / "gw", SETTLE)
    try:
        row = wait_for(lambda: study_exam(d2, known.study_instance_uid), 30)
        assert row, d2.log_text()[-3000:]
        assert sorted(row["exam"]["sources"]) == sorted(ds.SOPInstanceUID for ds in images)
        assert row["classification"]["category"] == "osteoporosis"
        assert '"exam.resumed"' in d2.log_text() or "exam.resumed" in d2.log_text()
    finally:
        d2.stop()


def test_the_reader_process_dies_with_the_daemon(tmp_path):
    """Issue 11 item 7: after kill -9 of the daemon its reader process does not live on."""
    d = start_daemon(tmp_path / "gw", SETTLE)
    worker = _reader_pid(d)
    assert _alive(worker)
    d.stop(signal.SIGKILL)
    assert wait_for(lambda: not _alive(worker), 20), _cmdline(worker)


def test_no_report_is_drafted_while_the_study_settles_and_the_window_survives_a_restart(tmp_path):
    """Issue 12 item 3: the report waits for the rest of the study
    (reports.settle_seconds); the exam shows its results meanwhile, has no report
    and cannot be signed; a settling exam is taken up again after a restart."""
    d = start_daemon(tmp_path / "gw", {**SETTLE, "reports": {"settle_seconds": 3600}})
    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id="PSETTLE", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
    try:
        storescu(d.dicom_port, samples.hologic_report_images(known), tmp_path / "images")
        row = wait_for(lambda: (lambda r: r if r and len(r["exam"]["sources"]) == 4 else None)(study_exam(d, known.study_instance_uid, "settling")), 20)
        assert row and row["settle_until"] and row["report"]["status"] is None
        assert api(d, f"/api/exams/{row['id']}/report")[0] == 404
        status, body = api(d, f"/api/exams/{row['id']}/sign", {})  # refused before who signs is looked at
        assert status == 409 and "settle" in body["error"]
    finally:
        d.stop(signal.SIGKILL)
    d2 = start_daemon(tmp_path / "gw", SETTLE)  # the window is now 0.5 s
    try:
        done = wait_for(lambda: study_exam(d2, known.study_instance_uid), 20)
        assert done and done["id"] == row["id"] and done["report"]["status"] == "P"
    finally:
        d2.stop()


def test_an_sr_over_the_reader_memory_limit_is_kept_unparsed_and_the_daemon_serves_on(tmp_path):
    """Issue 11 item 2: the result reader has a memory limit
    (reports.reader_memory_limit_mb); an SR that needs more is kept as an unparsed
    exam with the reason, the worker is replaced, and the next SR is read."""
    d = start_daemon(tmp_path / "gw", {**SETTLE, "reports": {"settle_seconds": 0.5, "reader_memory_limit_mb": 384}})
    try:
        first = _reader_pid(d)
        big = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id="PBIG", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        storescu(d.dicom_port, [samples.hologic_sr(big, text="<HologicHeader1>" + "x" * (200 * 1024 * 1024))], tmp_path / "big")
        row = wait_for(lambda: study_exam(d, big.study_instance_uid, "unparsed"), 60)
        assert row and "memory limit (384 MB)" in row["reason"], exams(d)
        small = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_id="PSMALL", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
        storescu(d.dicom_port, [samples.hologic_sr(small)], tmp_path / "small")
        assert wait_for(lambda: study_exam(d, small.study_instance_uid), 30)
        assert _reader_pid(d) != first
    finally:
        d.stop()
