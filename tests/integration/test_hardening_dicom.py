"""Hardening of the DICOM side (issue 11): no lockouts, no bombs, no escapes.

Each test talks to the real daemon over raw sockets, pynetdicom or dcmtk.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from tests.support import dcmtk, start_daemon


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
        metrics = subprocess.run(["curl", "-s", f"{d.http}/metrics"], capture_output=True, text=True).stdout
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
