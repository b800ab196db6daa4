"""Hardening of the DICOM side (issue 11): no lockouts, no bombs, no escapes.

Each test talks to the real daemon over raw sockets, pynetdicom or dcmtk.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

import dicomext
from tests.support import dcmtk, start_daemon, store_connection


def associate_rq_bytes(calling: str = "DXA1", called: str = "DXAGW") -> bytes:
    """An encoded A-ASSOCIATE-RQ PDU proposing Verification (PS3.8 9.3.2)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    cx = build_context(Verification)
    cx.context_id = 1
    primitive.presentation_context_definition_list = [cx]
    from pynetdicom.pdu_primitives import ImplementationClassUIDNotification, MaximumLengthNotification

    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16382
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.0"
    primitive.user_information = [ml, ic]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True if the daemon closes (or resets) ``sock`` within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            # an A-ABORT or A-ASSOCIATE-RJ first is fine; the close must follow
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def echo_from(port: int, address: str = "127.0.0.1") -> int | None:
    """C-ECHO status from a scanner on ``address``, or None if no association."""
    ae = AE(ae_title="DXA1")
    ae.acse_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DXAGW", bind_address=(address, 0))
    if not assoc.is_established:
        return None
    try:
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def stuck_sockets(port: int) -> list[socket.socket]:
    """One socket for each way of holding a connection open during set-up."""
    rq = associate_rq_bytes()
    payloads = [
        b"",  # connected, silent (the ARTIM timer's case, PS3.8 9.1.5)
        b"\x01\x00\x00\x00",  # half of a PDU header
        b"\x01\x00\x00\x00\x01\x00",  # a 6-byte header declaring 256 bytes, then nothing
        rq[: len(rq) // 2],  # half an A-ASSOCIATE-RQ
    ]
    out = []
    for payload in payloads:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            s.sendall(payload)
        out.append(s)
    return out


def test_partial_pdus_are_dropped_at_the_setup_deadline(tmp_path):
    """A socket that has not completed its A-ASSOCIATE-RQ by
    ``dicom.association_setup_timeout`` is closed (PS3.8 9.1.5 ARTIM)."""
    d = start_daemon(tmp_path, {"dicom": {"association_setup_timeout": 2, "acse_timeout": 30}})
    try:
        socks = stuck_sockets(d.dicom_port)
        for s in socks:
            assert closed_by_peer(s, 20), "a stuck set-up held its socket past the deadline"
            s.close()
        assert echo_from(d.dicom_port) == 0x0000
    finally:
        assert d.stop() == 0


def test_a_drip_fed_association_request_is_cut_off(tmp_path):
    """1 byte at a time, an A-ASSOCIATE-RQ would take minutes: the set-up
    deadline closes the socket before it is complete."""
    d = start_daemon(tmp_path, {"dicom": {"association_setup_timeout": 2}})
    try:
        rq = associate_rq_bytes()
        s = socket.create_connection(("127.0.0.1", d.dicom_port), timeout=5)
        sent = 0
        closed = threading.Event()

        def watch():
            if closed_by_peer(s, 60):
                closed.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            while sent < len(rq) and not closed.is_set():
                s.send(rq[sent : sent + 1])
                sent += 1
                closed.wait(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        watcher.join(60)
        assert closed.is_set()
        assert sent < len(rq), "the whole request went through the drip"
        s.close()
    finally:
        assert d.stop() == 0


def test_a_pdu_left_half_sent_on_an_established_association_is_dropped(tmp_path):
    """After set-up, each PDU header and body must arrive within
    ``dicom.network_timeout``: a P-DATA-TF header with its body never sent
    does not hold the association (and its threads) for good."""
    d = start_daemon(tmp_path, {"dicom": {"network_timeout": 2}})
    try:
        ae = AE(ae_title="DXA1")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
        assert assoc.is_established
        raw = assoc.dul.socket.socket
        raw.sendall(b"\x04\x00" + (100).to_bytes(4, "big") + b"\x00\x00\x00")  # 3 of 100 bytes
        end = time.monotonic() + 30
        while time.monotonic() < end and assoc.is_established:
            time.sleep(0.1)
        assert not assoc.is_established
        assert '"event":"dicom.read_timeout"' in d.log_text()
        assert echo_from(d.dicom_port) == 0x0000
        # the read bound is dicomext's pdu_size_guard: the daemon says every replacement is on
        installed = [json.loads(line) for line in d.log_text().splitlines() if '"event":"dicomext.installed"' in line]
        assert installed and sorted(installed[0]["active"]) == sorted(dicomext.BY_NAME)
        assert "dicomext.replacement_off" not in d.log_text()
    finally:
        assert d.stop() == 0


def test_idle_sockets_from_one_address_do_not_lock_out_a_scanner(tmp_path):
    """60 silent sockets from 127.0.0.1 (more than maximum_associations) do not
    stop a scanner on 127.0.0.2: ``dicom.max_connections_per_address`` caps
    what one address may hold.  (All of 127/8 is loopback on Linux.)"""
    d = start_daemon(
        tmp_path,
        {"dicom": {"maximum_associations": 20, "max_connections_per_address": 5, "association_setup_timeout": 120, "acse_timeout": 120}},
    )
    socks = []
    try:
        for _ in range(60):
            try:
                socks.append(socket.create_connection(("127.0.0.1", d.dicom_port), timeout=5))
            except OSError:
                pass
        time.sleep(0.5)
        # the sockets over the cap were closed at once
        over = sum(1 for s in socks if closed_by_peer(s, 0.5))
        assert over >= 50
        assert echo_from(d.dicom_port, "127.0.0.2") == 0x0000
        out = subprocess.run([dcmtk("echoscu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(d.dicom_port)], capture_output=True, text=True, env={"TCP_NODELAY": "1"})
        assert out.returncode != 0  # 127.0.0.1 is at its cap
        metrics = d.request("GET", "/metrics")[1]
        assert 'dxagw_dicom_connections_refused_total{reason="per_address_limit"}' in metrics
    finally:
        for s in socks:
            s.close()
        assert d.stop() == 0


def test_sigterm_ends_within_ten_seconds_whatever_peers_do(tmp_path):
    """SIGTERM with stuck set-ups and an idle established association: the
    process exits 0 within 10 s (README: shutdown)."""
    d = start_daemon(tmp_path, {"dicom": {"association_setup_timeout": 120, "acse_timeout": 120, "network_timeout": 120}})
    socks = stuck_sockets(d.dicom_port)
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(Verification)
    idle = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
    assert idle.is_established
    try:
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(10)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            pytest.fail("SIGTERM took more than 10 s")
        assert rc == 0
        assert '"event":"gateway.stopped"' in d.log_text()
    finally:
        for s in socks:
            s.close()
        if idle.is_established:
            idle.abort()


# -- UIDs and file names -------------------------------------------------------

def metric(d, name: str) -> float:
    """The value of one sample (name with labels) on /metrics, 0 if absent."""
    import urllib.request

    body = urllib.request.urlopen(urllib.request.Request(f"{d.http}/metrics", headers=d.headers), timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for(predicate, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_mpps_uids_cannot_write_outside_a_folder_destination(tmp_path):
    """MPPS routed to a folder: an N-CREATE whose SOP Instance UID is a path
    (``../x``, absolute, ``../../..``) is refused with 0x0117 (PS3.7 Annex C,
    invalid object instance) and nothing is written anywhere; a UID with a
    leading-zero component (a device defect, docs/tolerated-defects.md) is
    accepted, counted, and delivered into the folder."""
    from tests.scu import ScannerScu, mpps_create_dataset, mpps_final

    root = tmp_path / "out" / "a" / "mpps"
    outside = f"/tmp/dxagw-escape-{time.monotonic_ns()}"
    d = start_daemon(
        tmp_path / "gw",
        {
            "destinations": {"mppsdir": {"type": "folder", "path": str(root)}},
            "routes": [{"match": {"kind": "mpps"}, "to": ["mppsdir"]}],
        },
    )
    try:
        scu = ScannerScu(d.dicom_port)
        for bad in ("../x", outside, "../../..", "1.2..3", "1.2.3/4"):
            _, status = scu.create(mpps_create_dataset(study_uid="1.2.826.0.1.3680043.8.498.401"), uid=bad)
            assert status.Status == 0x0117, bad
            assert "not a valid UID" in status.ErrorComment
            assert scu.set(bad, mpps_final()).Status == 0x0117
        # an unsafe UID inside the attribute list: 0x0106 naming the element
        _, status = scu.create(mpps_create_dataset(study_uid="../../etc"))
        assert status.Status == 0x0106 and status.ErrorComment.startswith("StudyInstanceUID")
        tolerated = "1.2.826.0.1.3680043.8.0498.402"  # "0498": a leading zero
        uid, status = scu.create(mpps_create_dataset(study_uid="1.2.826.0.1.3680043.8.498.402"), uid=tolerated)
        assert status.Status == 0x0000
        scu.release()
        # routes/folder.py writes ".<name>.tmp" first, then renames it: wait for the file itself
        delivered = lambda: [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
        assert wait_for(lambda: delivered(), 30)
        assert [p.name.split(".json")[0].rsplit(".", 1)[0] for p in delivered()] == [tolerated]
        written = {p for p in tmp_path.rglob("*.json")} - set(root.iterdir())
        assert not written, written
        assert not list(Path("/tmp").glob(Path(outside).name + "*"))
        assert metric(d, 'dxagw_tolerated_defects_total{defect="uid_leading_zero"}') == 1
        assert '"event":"mpps.refused"' in d.log_text()
    finally:
        assert d.stop() == 0


def test_unsafe_uids_are_refused_by_every_dimse_service(daemon, tmp_path):
    """C-FIND (a UID matching key, PS3.4 C.2.2.2.2) 0xA900 naming it,
    Storage Commitment 0x0115, C-STORE 0xA900/0xC000; a leading zero in a
    C-STORE's UIDs is tolerated and the instance stored."""
    from pydicom import dcmread
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    from tests.dicom_data import secondary_capture
    from tests.scu import ScannerScu

    ae = AE(ae_title="DXA1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="DXAGW")
    query = Dataset()
    query.PatientName = ""
    query.StudyInstanceUID = "1.2.3\\../../x"
    statuses = [s for s, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    assoc.release()
    assert statuses[0].Status == 0xA900 and statuses[0].OffendingElement == 0x0020000D

    scu = ScannerScu(daemon.dicom_port)
    _, status = scu.commit([("1.2.840.10008.5.1.4.1.1.7", "../x")])
    assert status.Status == 0x0115
    _, status = scu.commit([("1.2.840.10008.5.1.4.1.1.7", "1.2.3")], transaction_uid="/etc/passwd")
    assert status.Status == 0x0115
    scu.release()

    before = metric(daemon, 'dxagw_tolerated_defects_total{defect="uid_leading_zero"}')
    path = tmp_path / "lz.dcm"
    secondary_capture(path, pixels=64 * 64, study_uid="1.2.826.0.1.3680043.8.0498.77", sop_uid="1.2.826.0.1.3680043.8.498.0077")
    ds = dcmread(path)
    ae = AE(ae_title="DXA1")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="DXAGW")
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert metric(daemon, 'dxagw_tolerated_defects_total{defect="uid_leading_zero"}') == before + 1


# -- deflate bombs -------------------------------------------------------------

def deflated_sc(path: Path, inflated_pixel_bytes: int, *, sop_uid: str, study_uid: str) -> None:
    """A Deflated Explicit VR LE Secondary Capture (PS3.5 A.5) whose pixel data
    is ``inflated_pixel_bytes`` zeros, written as a stream (never in memory)."""
    import zlib

    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PBOMB"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = inflated_pixel_bytes // 4096
    ds.Columns = 4096
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(f, meta)
        f.write(deflater.compress(buf.getvalue()))
        # (7FE0,0010) OB, explicit VR LE: tag, VR, 2 reserved, 4-byte length
        f.write(deflater.compress(b"\xe0\x7f\x10\x00OB\x00\x00" + inflated_pixel_bytes.to_bytes(4, "little")))
        zeros = b"\0" * (1024 * 1024)
        left = inflated_pixel_bytes
        while left:
            n = min(left, len(zeros))
            f.write(deflater.compress(zeros[:n]))
            left -= n
        f.write(deflater.flush())


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def test_a_deflate_bomb_is_refused_with_bounded_memory(tmp_path):
    """204 kB inflating to 200 MB, over ``dicom.storage.max_inflated_bytes``:
    refused 0xA700 (PS3.4 B.2.3, out of resources) naming the limit, the
    daemon's peak RSS barely moves, and a normal deflated store still works."""
    from pydicom.uid import generate_uid

    d = start_daemon(tmp_path / "gw", {"dicom": {"storage": {"max_inflated_bytes": 16 * 1024 * 1024}}})
    try:
        ae = AE(ae_title="DXA1")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1.99")
        # warm up: the first store imports what it needs
        small = tmp_path / "small.dcm"
        deflated_sc(small, 1024 * 1024, sop_uid=generate_uid(), study_uid=generate_uid())
        assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
        assert assoc.send_c_store(small).Status == 0x0000
        before = peak_rss_mb(d.proc.pid)
        bomb = tmp_path / "bomb.dcm"
        deflated_sc(bomb, 200 * 1024 * 1024, sop_uid=generate_uid(), study_uid=generate_uid())
        assert bomb.stat().st_size < 1024 * 1024
        status = assoc.send_c_store(bomb)
        assert status.Status == 0xA700
        assert "max_inflated_bytes" in status.ErrorComment
        assert peak_rss_mb(d.proc.pid) - before < 40
        after = tmp_path / "after.dcm"
        deflated_sc(after, 2 * 1024 * 1024, sop_uid=generate_uid(), study_uid=generate_uid())
        assert assoc.send_c_store(after).Status == 0x0000
        assoc.release()
        assert not [p for p in (tmp_path / "gw" / "data" / "incoming").iterdir() if p.suffix == ".inflated"]
    finally:
        assert d.stop() == 0


# -- data at rest --------------------------------------------------------------

def test_data_folder_is_private_after_a_store(tmp_path):
    """Files 0600 and folders 0700 under the data folder (issue 11, item 8):
    the SQLite store (raw HL7 with patient data) and its -wal/-shm, the
    spool's folders and files; an older 0644 database is tightened at start."""
    import os
    import stat

    from pydicom import dcmread

    from tests.dicom_data import secondary_capture
    from tests.hl7_messages import orm
    from tests.scu import ScannerScu, mpps_create_dataset
    from tests.support import MllpClient, ack_fields

    data = tmp_path / "gw" / "data"
    data.mkdir(parents=True)
    old = os.umask(0o022)
    try:
        (data / "left-by-an-older-version.txt").write_text("x")
    finally:
        os.umask(old)
    d = start_daemon(tmp_path / "gw")
    try:
        mllp = MllpClient(d.hl7_port)
        assert ack_fields(mllp.send(orm("MODE1")))["MSA"][1] == "AA"
        mllp.close()
        path = tmp_path / "sc.dcm"
        secondary_capture(path, pixels=64 * 64)
        ds = dcmread(path)
        ae = AE(ae_title="DXA1")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        scu = ScannerScu(d.dicom_port)
        assert scu.create(mpps_create_dataset(study_uid=ds.StudyInstanceUID))[1].Status == 0x0000
        scu.release()
        entries = [data, *data.rglob("*")]
        names = {p.name for p in entries}
        assert {"gateway.sqlite3", "gateway.sqlite3-wal", "spool"} <= names, names
        assert any(p.suffix == ".dcm" for p in entries)
        wrong = {
            str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
            for p in entries
            if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
        }
        assert not wrong, wrong
    finally:
        assert d.stop() == 0


def test_a_dataset_holding_file_meta_elements_or_text_as_a_sequence_is_refused(tmp_path):
    """Group 0002 is the file's, never the dataset's (PS3.10 7.1): a C-STORE
    whose dataset opens with (0002,xxxx) elements would be read as part of
    our file meta (bench/fuzz.py found such bytes taking pydicom's meta
    reader to 14 GB; here a harmless (0002,0016) shows the path).  Refused
    0xC000, nothing stored, and the next store on the association works."""
    from pydicom.dataelem import DataElement
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    d = start_daemon(tmp_path / "gw")
    try:
        ae = AE(ae_title="DXA1")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title="DXAGW")
        assert assoc.is_established

        def sc(uid: str) -> Dataset:
            ds = Dataset()
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
            ds.SOPInstanceUID = uid
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.PatientID, ds.Modality = "PMETA", "OT"
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
            return ds

        bad = sc(generate_uid())
        bad.add_new(0x00020016, "AE", "EVIL")  # Source Application Entity Title, in the dataset
        assert assoc.send_c_store(bad).Status == 0xC000
        # a text attribute sent as a sequence is refused without being decoded
        # (pydicom's str of a crafted one took 2 kB to 18 GB, bench/fuzz.py)
        seq = sc(generate_uid())
        del seq.PatientID
        seq.add(DataElement(0x00100020, "SQ", Sequence([Dataset()])))
        assert assoc.send_c_store(seq).Status == 0xC000
        good = sc(generate_uid())
        assert assoc.send_c_store(good).Status == 0x0000
        assoc.release()
        conn = store_connection(d)
        try:
            rows = conn.execute("SELECT sop_instance_uid FROM instances").fetchall()
        finally:
            conn.close()
        assert [r[0] for r in rows] == [good.SOPInstanceUID]
    finally:
        assert d.stop() == 0
