"""Store-and-forward: Orthanc as the PACS, a real MLLP listener as the RIS/EMR."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.dicom_data import secondary_capture
from tests.mllp_peer import MllpPeer
from tests.orthanc import start_orthanc, wait_for
from tests.scu import ScannerScu, mpps_create_dataset, mpps_final
from tests.support import dcmtk, start_daemon

ENV = dict(os.environ, TCP_NODELAY="1")
PACS_DOWN_SECONDS = float(os.environ.get("DXAGW_TEST_PACS_DOWN", "120"))  # the two minutes


def storescu(port: int, files: list[Path]) -> None:
    result = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr


def api(daemon, path: str, method: str = "GET"):
    headers = {**daemon.headers, **({"Content-Type": "application/json"} if method == "POST" else {})}
    req = urllib.request.Request(daemon.http + path, method=method, data=b"" if method == "POST" else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, orjson.loads(rsp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def outbox(daemon, **filters) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return api(daemon, f"/api/outbox?limit=1000&{query}")[1]


def config(orthanc, emr_port: int | None = None, **dest_over) -> dict:
    destinations = {"pacs": {"type": "dicom", "host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet, "retry_base": 0.5, "retry_cap": 4, **dest_over}}
    routes = [{"match": {"kind": ["image", "sr", "pdf", "dose"]}, "to": ["pacs"]}]
    if emr_port:
        destinations["emr"] = {"type": "hl7", "host": "127.0.0.1", "port": emr_port, "retry_base": 0.3, "retry_cap": 2, "ack_timeout": 5}
        routes.append({"match": {"kind": "order-status"}, "to": ["emr"]})
    return {"storage": {"min_free_bytes": 0}, "destinations": destinations, "routes": routes}


def make_study(tmp: Path, study: str, n: int, seed: int) -> list[Path]:
    files = []
    for i in range(n):
        f = tmp / f"{study[-6:]}-{i}.dcm"
        secondary_capture(f, study_uid=study, seed=seed + i, pixels=64 * 64)
        files.append(f)
    return files


def sop_uid(path: Path) -> str:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_images_arrive_in_orthanc(tmp_path):
    orthanc = start_orthanc(tmp_path / "orthanc")
    d = start_daemon(tmp_path / "gw", config(orthanc))
    try:
        files = make_study(tmp_path, "1.2.826.0.1.3680043.8.498.101", 5, 0)
        storescu(d.dicom_port, files)
        assert wait_for(lambda: len(orthanc.get("/instances")) == 5, 30), outbox(d)
        rows = outbox(d, destination="pacs")
        assert [r["state"] for r in rows] == ["done"] * 5
        status, dests = api(d, "/api/destinations")
        pacs = next(x for x in dests if x["name"] == "pacs")
        assert pacs["queue"]["done"] == 5 and pacs["last_success"]
        with urllib.request.urlopen(urllib.request.Request(d.http + "/metrics", headers=d.headers), timeout=10) as rsp:
            metrics = rsp.read().decode()
        assert 'dxagw_outbox_rows{destination="pacs",state="done"} 5.0' in metrics
        assert "dxagw_outbox_delivery_seconds_bucket" in metrics
    finally:
        d.stop()
        orthanc.stop()


def test_stow_rs_to_orthanc_dicomweb(tmp_path):
    orthanc = start_orthanc(tmp_path / "orthanc")
    cfg = {
        "storage": {"min_free_bytes": 0},
        "destinations": {"web": {"type": "dicomweb", "url": f"{orthanc.url}/dicom-web", "retry_base": 0.5}},
        "routes": [{"match": {"kind": "image"}, "to": ["web"]}],
    }
    d = start_daemon(tmp_path / "gw", cfg)
    try:
        files = make_study(tmp_path, "1.2.826.0.1.3680043.8.498.102", 2, 10)
        storescu(d.dicom_port, files)
        assert wait_for(lambda: len(orthanc.get("/instances")) == 2, 30), outbox(d)
        assert sorted(orthanc.instance_uids()) == sorted(sop_uid(f) for f in files)
    finally:
        d.stop()
        orthanc.stop()


def test_pacs_down_then_back_everything_arrives_in_order(tmp_path):
    orthanc = start_orthanc(tmp_path / "orthanc")
    orthanc.stop()  # the PACS is down before anything is sent
    d = start_daemon(tmp_path / "gw", config(orthanc, concurrency=2))
    try:
        studies = [make_study(tmp_path, f"1.2.826.0.1.3680043.8.498.2{i}", 4, 100 * i) for i in range(3)]
        for files in studies:
            storescu(d.dicom_port, files)
        time.sleep(PACS_DOWN_SECONDS)
        rows = outbox(d, destination="pacs")
        assert len(rows) == 12 and all(r["state"] in ("pending", "in_flight") for r in rows)  # none lost, none given up
        assert rows[0]["attempts"] >= 1 and rows[0]["last_error"]
        orthanc.start()
        assert wait_for(lambda: all(r["state"] == "done" for r in outbox(d, destination="pacs")), 60), outbox(d)
        arrived = orthanc.instance_uids()
        assert sorted(arrived) == sorted(sop_uid(f) for files in studies for f in files)
        for files in studies:  # in order per study
            sent = [sop_uid(f) for f in files]
            assert [u for u in arrived if u in sent] == sent
    finally:
        d.stop()
        orthanc.stop()


def test_emr_answering_ae_then_aa_is_retried_then_delivered(tmp_path):
    orthanc = start_orthanc(tmp_path / "orthanc")
    emr = MllpPeer(script=["AE", "AE"], default="AA")
    d = start_daemon(tmp_path / "gw", config(orthanc, emr.port))
    try:
        scu = ScannerScu(d.dicom_port)
        scu.create(mpps_create_dataset(study_uid="1.2.826.0.1.3680043.8.498.301"))
        scu.release()
        assert wait_for(lambda: [r["state"] for r in outbox(d, destination="emr")] == ["done"], 30), outbox(d)
        row = outbox(d, destination="emr")[0]
        assert row["attempts"] == 3
        assert len(emr.received) == 3
        assert emr.received[0].split("\r")[0].split("|")[9] == emr.received[2].split("\r")[0].split("|")[9]  # same MSH-10 each time
        assert "ORC|SC|" in emr.received[2] and "|IP" in emr.received[2]
    finally:
        d.stop()
        emr.close()
        orthanc.stop()


def test_emr_answering_ar_is_dead_lettered_then_replayed(tmp_path):
    orthanc = start_orthanc(tmp_path / "orthanc")
    emr = MllpPeer(default="AR")
    d = start_daemon(tmp_path / "gw", config(orthanc, emr.port))
    try:
        scu = ScannerScu(d.dicom_port)
        uid, _ = scu.create(mpps_create_dataset(study_uid="1.2.826.0.1.3680043.8.498.302"))
        scu.set(uid, mpps_final())
        scu.release()
        assert wait_for(lambda: len(outbox(d, destination="emr", state="dead")) == 2, 30), outbox(d)
        dead = outbox(d, destination="emr", state="dead")
        assert all(r["attempts"] == 1 and r["last_error"].startswith("AR") for r in dead)
        emr.default = "AA"  # the EMR is fixed (before the retry: else the retried one could be refused again and count below)
        status, _ = api(d, f"/api/outbox/{dead[0]['id']}/retry", "POST")
        assert status == 200
        status, body = api(d, "/api/outbox/retry?destination=emr", "POST")
        assert status == 200 and body["requeued"] == 1  # the other one
        assert wait_for(lambda: [r["state"] for r in outbox(d, destination="emr")] == ["done", "done"], 30), outbox(d)
        assert api(d, "/api/outbox/999999/retry", "POST")[0] == 404
        assert api(d, f"/api/outbox/{dead[0]['id']}/retry", "POST")[0] == 409  # done now, nothing to requeue
    finally:
        d.stop()
        emr.close()
        orthanc.stop()


def test_kill_9_during_delivery_resumes_with_no_loss(tmp_path):
    orthanc = start_orthanc(tmp_path / "orthanc")
    d = start_daemon(tmp_path / "gw", config(orthanc, concurrency=1))
    files = []
    for i in range(6):
        files += make_study(tmp_path, f"1.2.826.0.1.3680043.8.498.4{i}", 5, 1000 + 10 * i)
    storescu(d.dicom_port, files)
    # kill as soon as some, but not all, have been delivered
    wait_for(lambda: len(orthanc.get("/instances")) >= 3, 30, interval=0.02)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(5)
    delivered_before = len(orthanc.get("/instances"))
    assert delivered_before < 30, "too late to test a crash during delivery"
    again = start_daemon(tmp_path / "gw", config(orthanc, concurrency=1))
    try:
        assert wait_for(lambda: len(orthanc.get("/instances")) == 30, 60), outbox(again)
        assert sorted(orthanc.instance_uids()) == sorted(sop_uid(f) for f in files)
        assert wait_for(lambda: all(r["state"] == "done" for r in outbox(again, destination="pacs")), 30)
        # each row was sent once to success: only an attempt cut off by the crash repeats
        assert [r["attempts"] for r in outbox(again, destination="pacs")] == [1] * 30
    finally:
        again.stop()
        orthanc.stop()


def test_commitment_waits_for_the_pacs_when_configured(tmp_path):
    from tests.dicom_data import SC

    orthanc = start_orthanc(tmp_path / "orthanc")
    cfg = config(orthanc)
    cfg["dicom"] = {"commitment": {"wait_for_destinations": ["pacs"], "wait_timeout": 3}}
    d = start_daemon(tmp_path / "gw", cfg)
    try:
        files = make_study(tmp_path, "1.2.826.0.1.3680043.8.498.501", 2, 500)
        storescu(d.dicom_port, files)
        scu = ScannerScu(d.dicom_port)
        scu.commit([(SC, sop_uid(f)) for f in files])
        assert scu.got_report.wait(10)
        event_type, info = scu.reports[0]
        scu.release()
        assert event_type == 1 and len(info.ReferencedSOPSequence) == 2
        assert len(orthanc.get("/instances")) == 2  # committed only once the PACS had them

        orthanc.stop()  # now the PACS is down: nothing new can be confirmed
        more = make_study(tmp_path, "1.2.826.0.1.3680043.8.498.502", 1, 600)
        storescu(d.dicom_port, more)
        scu = ScannerScu(d.dicom_port)
        scu.commit([(SC, sop_uid(more[0]))])
        assert scu.got_report.wait(15)
        event_type, info = scu.reports[0]
        scu.release()
        assert event_type == 2
        assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [(sop_uid(more[0]), 0x0110)]
    finally:
        d.stop()
        orthanc.stop()
