"""Scanners in: MPPS, C-STORE into the spool, Storage Commitment, against the real daemon."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import threading
import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import SecondaryCaptureImageStorage, StorageCommitmentPushModel

from gateway.spool import meta_length, sha256_of
from tests.dicom_data import SC, secondary_capture
from tests.hl7_messages import orm
from tests.scu import ScannerScu, mpps_create_dataset, mpps_final
from tests.support import MllpClient, ack_fields, dcmtk, free_port, start_daemon, store_connection

TODAY = dt.date.today().strftime("%Y%m%d")
ENV = dict(os.environ, TCP_NODELAY="1")


def storescu(port: int, files: list[Path], *extra: str, aet: str = "DXA1") -> subprocess.CompletedProcess:
    return subprocess.run(
        [dcmtk("storescu"), "-v", "-aet", aet, "-aec", "DXAGW", *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, env=ENV, timeout=120,
    )


def db(daemon):
    return store_connection(daemon)


def dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[meta_length(data[:144]):]


def worklist_status(daemon, accession: str) -> str:
    conn = db(daemon)
    try:
        return conn.execute("SELECT status FROM worklist_items WHERE accession = ?", (accession,)).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    d = start_daemon(tmp_path_factory.mktemp("ingest"), {"storage": {"min_free_bytes": 0}})
    yield d
    d.stop()


def test_scan_day(ingest, tmp_path):
    """ORM -> worklist; MPPS IN PROGRESS; C-STOREs; commitment; MPPS COMPLETED."""
    d = ingest
    mllp = MllpClient(d.hl7_port)
    study = "1.2.826.0.1.3680043.8.498.4242"
    assert ack_fields(mllp.send(orm("SD-1", placer="SDP", filler="SDF", accession="SDA", start=TODAY + "100000", study_uid=study)))["MSA"][1] == "AA"
    scu = ScannerScu(d.dicom_port)
    mpps_uid, status = scu.create(mpps_create_dataset(study_uid=study, accession="SDA", rp_id="RP1", sps_id="SPS1"))
    assert status.Status == 0x0000
    assert worklist_status(d, "SDA") == "IN PROGRESS"

    files = [tmp_path / f"img{i}.dcm" for i in range(3)]
    sent = [secondary_capture(f, study_uid=study, accession="SDA", seed=i) for i, f in enumerate(files)]
    result = storescu(d.dicom_port, files)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == 3

    conn = db(d)
    rows = {r[0]: r for r in conn.execute("SELECT sop_instance_uid, path, sha256, transfer_syntax, kind, calling_ae FROM instances")}
    conn.close()
    for f, ds in zip(files, sent):
        uid, path, sha, ts, kind, calling = rows[ds.SOPInstanceUID]
        stored = d.dir / "data" / path
        assert dataset_bytes(stored) == dataset_bytes(f)  # byte-identical as sent
        assert sha == sha256_of(f)
        assert (ts, kind, calling) == ("1.2.840.10008.1.2.1", "image", "DXA1")

    transaction, status = scu.commit([(SC, ds.SOPInstanceUID) for ds in sent])
    assert status.Status == 0x0000
    assert scu.got_report.wait(10), "no N-EVENT-REPORT"
    event_type, info = scu.reports[0]
    assert event_type == 1 and info.TransactionUID == transaction
    assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(ds.SOPInstanceUID for ds in sent)
    assert "FailedSOPSequence" not in info

    assert scu.set(mpps_uid, mpps_final("COMPLETED")).Status == 0x0000
    scu.release()
    assert worklist_status(d, "SDA") == "COMPLETED"


def test_mpps_refusals(ingest):
    scu = ScannerScu(ingest.dicom_port)
    uid, status = scu.create(mpps_create_dataset(study_uid="1.2.3.99"))
    assert status.Status == 0x0000  # unscheduled: kept
    _, status = scu.create(mpps_create_dataset(study_uid="1.2.3.99"), uid=uid)
    assert status.Status == 0x0111  # duplicate
    assert scu.set("1.2.3.4.5.6.404", mpps_final()).Status == 0x0112  # no such instance
    missing = mpps_create_dataset(study_uid="1.2.3.98")
    del missing.PerformedProcedureStepID
    assert scu.create(missing)[1].Status == 0x0120  # missing type 1
    assert scu.set(uid, mpps_final("DISCONTINUED")).Status == 0x0000
    after = scu.set(uid, mpps_final("COMPLETED"))
    assert after.Status == 0x0110 and "DISCONTINUED" in after.ErrorComment
    scu.release()
    conn = db(ingest)
    row = conn.execute("SELECT status, worklist_item_id FROM mpps WHERE sop_instance_uid = ?", (uid,)).fetchone()
    conn.close()
    assert row == ("DISCONTINUED", None)


def test_commitment_reports_unknown_instances_as_failed(ingest, tmp_path):
    f = tmp_path / "known.dcm"
    known = secondary_capture(f, seed=9)
    assert storescu(ingest.dicom_port, [f]).returncode == 0
    scu = ScannerScu(ingest.dicom_port)
    _, status = scu.commit([(SC, known.SOPInstanceUID), (SC, "1.2.3.4.404"), ("1.2.840.10008.5.1.4.1.1.88.22", known.SOPInstanceUID)])
    assert status.Status == 0x0000
    assert scu.got_report.wait(10)
    event_type, info = scu.reports[0]
    scu.release()
    assert event_type == 2
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [known.SOPInstanceUID]
    reasons = {(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence}
    assert reasons == {("1.2.3.4.404", 0x0112), (known.SOPInstanceUID, 0x0119)}


def test_commitment_report_on_a_new_association(tmp_path):
    port = free_port()
    d = start_daemon(tmp_path / "gw", {"storage": {"min_free_bytes": 0}, "dicom": {"commitment": {"report_on": "new"}, "peers": {"DXA1": {"host": "127.0.0.1", "port": port}}}})
    got: list[Dataset] = []
    done = threading.Event()

    def on_report(event):
        got.append(event.event_information)
        done.set()
        return 0x0000, None

    ae = AE(ae_title="DXA1")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        f = tmp_path / "a.dcm"
        ds = secondary_capture(f, seed=3)
        assert storescu(d.dicom_port, [f]).returncode == 0
        scu = ScannerScu(d.dicom_port)
        scu.commit([(SC, ds.SOPInstanceUID)])
        scu.release()
        assert done.wait(10), "no report on a new association"
        assert got[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    finally:
        server.shutdown()
        assert d.stop() == 0


@pytest.mark.parametrize(
    "codec, ts, propose",
    [
        ("dcmcjpeg", "1.2.840.10008.1.2.4.50", "-xy"),  # JPEG baseline
        ("dcmcjpeg", "1.2.840.10008.1.2.4.70", "-xs"),  # JPEG lossless SV1
        ("dcmcrle", "1.2.840.10008.1.2.5", "-xr"),  # RLE
    ],
)
def test_compressed_transfer_syntaxes_are_stored_as_received(ingest, tmp_path, codec, ts, propose):
    raw = tmp_path / "raw.dcm"
    secondary_capture(raw, seed=5)
    out = tmp_path / "c.dcm"
    args = [dcmtk(codec)] + (["+eb"] if ts.endswith(".50") else ["+e1"] if ts.endswith(".70") else []) + [str(raw), str(out)]
    subprocess.run(args, check=True, capture_output=True)
    assert str(pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID) == ts
    result = storescu(ingest.dicom_port, [out], propose)
    assert result.returncode == 0 and "Success" in result.stderr, result.stderr
    uid = pydicom.dcmread(out, stop_before_pixels=True).SOPInstanceUID
    conn = db(ingest)
    path, stored_ts = conn.execute("SELECT path, transfer_syntax FROM instances WHERE sop_instance_uid = ?", (uid,)).fetchone()
    conn.close()
    assert stored_ts == ts
    assert dataset_bytes(ingest.dir / "data" / path) == dataset_bytes(out)


def raw_store(port: int, sop_class: str, sop_uid: str, payload: bytes) -> int:
    """A C-STORE whose command and dataset we write by hand (for broken input)."""
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="DXAGW")
    cx = assoc._get_valid_context(sop_class, "", "scu")
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_uid
    req.Priority = 2
    req.DataSet = BytesIO(payload)
    # Pause the association's reactor as pynetdicom's own send_* do, so it
    # does not take our response off the queue.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    assoc.dimse.send_msg(req, cx.context_id)
    _, rsp = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    assoc.release()
    return rsp.Status


def explicit_bytes(ds: Dataset) -> bytes:
    """The dataset alone (no file meta), explicit VR little endian."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


def test_broken_and_mismatched_datasets_are_refused(ingest, tmp_path):
    conn = db(ingest)
    before = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    conn.close()
    # an element claiming 4 GB: the dataset cannot be read at all
    assert raw_store(ingest.dicom_port, SC, "1.2.3.4.5.1", b"\x10\x00\x10\x00PN\xff\xff" + b"garbage" * 40) in (0xC000,)
    ds = secondary_capture(tmp_path / "x.dcm", seed=1)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # not what the command says
    assert raw_store(ingest.dicom_port, SC, ds.SOPInstanceUID, explicit_bytes(ds)) == 0xA900
    evil = secondary_capture(tmp_path / "y.dcm", seed=2)
    evil.StudyInstanceUID = "../../etc"  # not a UID: never a file name
    assert raw_store(ingest.dicom_port, SC, evil.SOPInstanceUID, explicit_bytes(evil)) == 0xC000
    conn = db(ingest)
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == before
    conn.close()
    assert list((ingest.dir / "data" / "incoming").iterdir()) == []


def test_unsupported_sop_class_is_rejected_at_negotiation(ingest, tmp_path):
    f = tmp_path / "ct.dcm"
    ds = secondary_capture(f, seed=4, sop_class="1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    result = storescu(ingest.dicom_port, [f])
    assert "No presentation context" in result.stderr or "no presentation context" in result.stderr.lower()
    conn = db(ingest)
    assert conn.execute("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,)).fetchone()[0] == 0
    conn.close()


def test_full_disk_floor_gives_a700_and_writes_nothing(tmp_path):
    d = start_daemon(tmp_path / "gw", {"storage": {"min_free_bytes": 2**62}})
    try:
        f = tmp_path / "a.dcm"
        secondary_capture(f)
        result = storescu(d.dicom_port, [f])
        assert "Refused: OutOfResources" in result.stderr, result.stderr
        assert list((d.dir / "data" / "spool").rglob("*.dcm")) == []
        conn = db(d)
        assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
        conn.close()
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("policy, rows, current, files", [("keep_first", 1, 1, 1), ("replace", 2, 1, 2), ("keep_both", 2, 2, 2)])
def test_duplicate_policies_never_delete_a_stored_file(tmp_path, policy, rows, current, files):
    d = start_daemon(tmp_path / "gw", {"storage": {"min_free_bytes": 0}, "dicom": {"storage": {"duplicate_policy": policy}}})
    try:
        uid = generate_uid()
        first, second = tmp_path / "1.dcm", tmp_path / "2.dcm"
        secondary_capture(first, sop_uid=uid, study_uid="1.2.3.7", seed=1)
        secondary_capture(second, sop_uid=uid, study_uid="1.2.3.7", seed=2)
        assert storescu(d.dicom_port, [first]).returncode == 0
        assert storescu(d.dicom_port, [second]).returncode == 0
        conn = db(d)
        got = conn.execute("SELECT COUNT(*), SUM(is_current) FROM instances WHERE sop_instance_uid = ?", (uid,)).fetchone()
        first_path = conn.execute("SELECT path FROM instances WHERE sop_instance_uid = ? ORDER BY id LIMIT 1", (uid,)).fetchone()[0]
        conn.close()
        assert got == (rows, current)
        assert len(list((d.dir / "data" / "spool").rglob(f"{uid}*.dcm"))) == files
        assert dataset_bytes(d.dir / "data" / first_path) == dataset_bytes(first)  # the first copy is intact
    finally:
        assert d.stop() == 0


def test_peer_dropping_mid_transfer_leaves_nothing(ingest, tmp_path):
    big = tmp_path / "big.dcm"
    ds = secondary_capture(big, pixels=4096 * 4096, frames=4, seed=7, sop_class="1.2.840.10008.5.1.4.1.1.7.2")
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(ds.SOPClassUID, "1.2.840.10008.1.2.1")
    # Slow the sender down (1 ms per 16 KiB PDU) so the abort falls mid-transfer.
    slow = [(evt.EVT_PDU_SENT, lambda event: time.sleep(0.001))]
    assoc = ae.associate("127.0.0.1", ingest.dicom_port, ae_title="DXAGW", max_pdu=16384, evt_handlers=slow)
    sender = threading.Thread(target=lambda: assoc.send_c_store(big), daemon=True)
    sender.start()
    incoming = ingest.dir / "data" / "incoming"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(p.stat().st_size > 1_000_000 for p in incoming.iterdir()):
        time.sleep(0.01)
    assert any(incoming.iterdir()), "the transfer never started"
    # The peer vanishes: its socket is cut mid-transfer (an A-ABORT would only
    # be sent after the data already queued).
    assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
    assoc.dul.socket.socket.close()
    sender.join(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(incoming.iterdir()):
        time.sleep(0.05)
    assert list(incoming.iterdir()) == []
    assert list((ingest.dir / "data" / "spool").rglob(f"{ds.SOPInstanceUID}*")) == []
    conn = db(ingest)
    assert conn.execute("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,)).fetchone()[0] == 0
    conn.close()
    # and the daemon still takes objects
    small = tmp_path / "small.dcm"
    secondary_capture(small, seed=8)
    assert storescu(ingest.dicom_port, [small]).returncode == 0


def acked_files(output: str) -> list[str]:
    """Files storescu -v reports a Success response for, in order."""
    acked, current = [], None
    for line in output.splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
            current = None
    return acked


def test_kill_9_under_concurrent_load_loses_nothing_acknowledged(tmp_path):
    d = start_daemon(tmp_path / "gw", {"storage": {"min_free_bytes": 0}})
    batches = []
    for b in range(4):
        files = [tmp_path / f"b{b}-{i}.dcm" for i in range(25)]
        for i, f in enumerate(files):
            secondary_capture(f, seed=b * 100 + i, pixels=256 * 1024)
        batches.append(files)
    procs = [
        subprocess.Popen([dcmtk("storescu"), "-v", "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(d.dicom_port), *map(str, files)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        for files in batches
    ]

    def stored() -> int:
        try:
            conn = db(d)
            try:
                return conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
            finally:
                conn.close()
        except Exception:  # sqlite3.Error or psycopg.Error: the store is not there yet
            return 0

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stored() < 20:
        time.sleep(0.005)
    d.proc.send_signal(9)
    d.proc.wait(5)
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    acked = [f for out in outputs for f in acked_files(out)]
    assert 0 < len(acked) < 100, "the kill must fall during the load"

    again = start_daemon(tmp_path / "gw", {"storage": {"min_free_bytes": 0}})
    try:
        conn = db(again)
        rows = {uid: (path, sha) for uid, path, sha in conn.execute("SELECT sop_instance_uid, path, sha256 FROM instances")}
        conn.close()
        for f in acked:
            uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
            assert uid in rows, f"acknowledged {f} is not indexed"
            path, sha = rows[uid]
            assert sha == sha256_of(Path(f))
            assert sha256_of(again.dir / "data" / path) == sha  # the spool file is whole
        assert not any(Path(path).parts[0] == "incoming" for path, _ in rows.values())  # nothing indexed is a partial
        # Partials cleaned at start: a killed writer holds no lock on its file any more
        # (gateway/spool.py; replicas sharing the spool leave only live receptions).
        assert list((again.dir / "data" / "incoming").iterdir()) == []
    finally:
        assert again.stop() == 0


def test_ingest_metrics(ingest, tmp_path):
    """After the tests above on the same daemon, the ingest metrics show them."""
    import urllib.request

    f = tmp_path / "m.dcm"
    secondary_capture(f, seed=77)
    assert storescu(ingest.dicom_port, [f]).returncode == 0
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{ingest.http_port}/metrics", headers=ingest.headers), timeout=10) as rsp:
        text = rsp.read().decode()
    # DXA1 is named nowhere in this daemon's config: its label is "other" (README Operations)
    assert f'dxagw_instances_received_total{{calling_ae="other",sop_class="{SC}"}}' in text
    assert f'dxagw_instance_bytes_received_total{{calling_ae="other",sop_class="{SC}"}}' in text
    assert "dxagw_store_seconds_bucket" in text
    assert "dxagw_spool_free_bytes" in text and "dxagw_spool_bytes" in text
    assert 'dxagw_mpps_events_total{operation="create",state="IN PROGRESS"}' in text
    assert "dxagw_commitment_requests_total" in text
    assert 'dxagw_store_refusals_total{status="0xC000"}' in text
