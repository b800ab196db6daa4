"""How DICOM sockets are read (replacements for two pynetdicom methods).

pynetdicom's ``AssociationSocket.recv`` reads a PDU 4 KiB at a time into a
growing bytearray, and trusts the PDU length the peer declares (up to
4 GiB) without comparing it with the maximum we negotiated (docs/architecture.md,
"Pitfalls the code guards against").  The replacement reads into one buffer of the declared
size with ``recv_into`` (a few syscalls per PDU instead of one per 4 KiB),
and refuses a declared length over the limit: the connection is closed,
which pynetdicom treats as a lost peer (the association is aborted, a
partial C-STORE is discarded), before any memory is taken for it.

It also bounds the time a read may take (pynetdicom's accepted sockets
block with no timeout, so a peer sending half a PDU held its socket, and
a thread, for good): until the association is established the whole
A-ASSOCIATE-RQ must arrive by the set-up deadline the server puts on the
socket (:data:`SETUP_DEADLINE`); afterwards each call, a PDU header or a
PDU body, must complete within the network timeout.  A peer too slow is
treated as one that closed its connection (PS3.8 9.1.5: as on ARTIM expiry).

``DULServiceProvider._read_pdu_data`` then copied each P-DATA-TF PDU three
times more before its fragments reached the spool file (appended to the
6-byte header, turned into bytes, sliced per PDV item), and again for the
fragment after the control header: a quarter of the gateway's GIL time
receiving images.  The replacement hands DIMSE memoryviews of the one
buffer (PS3.8 9.3.5: PDV items of length, context ID and value); other PDU
types, and associations with EVT_DATA_RECV or EVT_PDU_RECV handlers, take
pynetdicom's path unchanged.
"""

from __future__ import annotations

import logging
import socket
import struct
import time

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from dicomext.guard import Mirror, Patch, Replacement, upstream

log = logging.getLogger("dicomext")
LOGGER = logging.getLogger("pynetdicom.dul")

PDU_HEADER = 6  # PS3.8 9.3.1: type, reserved, 4-byte length
_limit = 64 * 1024 * 1024
# Attribute of an AssociationSocket: time.monotonic() by which an acceptor's
# association must be established (set_setup_deadline(), on connect).
SETUP_DEADLINE = "dxagw_setup_deadline"


def fields(**kw: object) -> dict:
    return {"fields": kw}


def set_limit(maximum_pdu_size: int) -> None:
    """Refuse PDUs declaring more than ``maximum_pdu_size`` (plus slack for its items)."""
    global _limit
    # What we accept: our negotiated maximum (0 means none in PS3.8) plus slack
    # for the PDU's own items; never more than 64 MiB at once.
    _limit = min(maximum_pdu_size + 1024, 64 * 1024 * 1024) if maximum_pdu_size else 64 * 1024 * 1024


def set_setup_deadline(assoc, deadline: float, artim_timeout: float | None = None) -> None:
    """The whole A-ASSOCIATE-RQ of acceptor ``assoc`` must arrive by ``deadline`` (time.monotonic()).

    ``artim_timeout``, if given, is the ARTIM timer's (PS3.8 9.1.5), which
    pynetdicom sets to the ACSE timeout.
    """
    if artim_timeout is not None:
        assoc.dul.artim_timer.timeout = artim_timeout
    setattr(assoc.dul.socket, SETUP_DEADLINE, deadline)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_deadline(self: AssociationSocket) -> tuple[float | None, str]:
    """(monotonic deadline, phase) for one read on this socket."""
    setup = getattr(self, SETUP_DEADLINE, None)
    if setup is not None and not self.assoc.is_established:
        return setup, "association_setup"
    timeout = self.assoc.network_timeout
    return (time.monotonic() + timeout if timeout else None), "pdu"


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """Read ``nr_bytes`` (fewer if the peer closed or was too slow), or refuse an oversized PDU."""
    sock: socket.socket = self.socket
    if nr_bytes > _limit:
        log.warning("dicom.pdu_too_large", extra=fields(declared=nr_bytes, limit=_limit))
        _shut(sock)
        return bytearray()
    deadline, phase = _read_deadline(self)
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    try:
        while got < nr_bytes:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
            n = sock.recv_into(view[got:], nr_bytes - got)
            if not n:  # the connection is broken: return what we have, as pynetdicom does
                break
            got += n
    except TimeoutError:
        log.warning("dicom.read_timeout", extra=fields(phase=phase, received=got, expected=nr_bytes, peer=_peer(sock)))
        _shut(sock)
    finally:
        if deadline is not None:
            try:
                sock.settimeout(self.assoc.network_timeout)  # what sends wait for
            except OSError:
                pass
    if got < nr_bytes:
        del view
        return buf[:got]
    return buf


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


P_DATA_TF = 0x04
_PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)  # PS3.8 Table 9-11
_pynetdicom_read_pdu_data = upstream("pynetdicom.dul:DULServiceProvider._read_pdu_data")


class ReceivedPData:
    """A P-DATA-TF PDU as the state machine's DT-2 action takes it (``to_primitive``)."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[int, memoryview]]) -> None:
        self.items = items

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        primitive._presentation_data_value_list = self.items  # type: ignore[assignment]
        return primitive


def pdv_items(body: bytearray) -> list[tuple[int, memoryview]] | None:
    """The (context ID, PDV) items of a P-DATA-TF PDU body, or None if they do not add up.

    PS3.8 9.3.5.1: each item is a 4-byte length, then that many bytes: the
    presentation context ID and the value (message control header, fragment).
    """
    view = memoryview(body)
    items = []
    offset, end = 0, len(body)
    while offset < end:
        if offset + 5 > end:
            return None
        length = int.from_bytes(view[offset : offset + 4], "big")
        if length < 2 or offset + 4 + length > end:
            return None
        items.append((view[offset + 4], view[offset + 5 : offset + 4 + length]))
        offset += 4 + length
    return items or None


def _read_pdu_data(self: DULServiceProvider) -> None:
    """pynetdicom's ``_read_pdu_data``, reading a P-DATA-TF PDU without copying it."""
    assoc = self.assoc
    if assoc.get_handlers(evt.EVT_DATA_RECV) or assoc.get_handlers(evt.EVT_PDU_RECV):
        return _pynetdicom_read_pdu_data(self)
    sock = self.socket
    try:
        header = sock.recv(PDU_HEADER)
        pdu_type, _, length = struct.unpack(">BBL", header)
    except (OSError, TimeoutError, struct.error):
        self.event_queue.put("Evt17")  # transport connection closed
        return
    if pdu_type not in _PDU_TYPES:
        LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        self.event_queue.put("Evt19")  # unrecognised or invalid PDU
        return
    try:
        body = sock.recv(length)
    except (OSError, TimeoutError):
        self.event_queue.put("Evt17")
        return
    if len(body) != length:
        LOGGER.error(f"The received PDU is shorter than expected ({len(body) + 6} of {length + 6} bytes received)")
        self.event_queue.put("Evt17")
        return
    if pdu_type != P_DATA_TF:
        try:
            pdu, event = self._decode_pdu(header + body)
            self.event_queue.put(event)
        except Exception as exc:
            LOGGER.error("Unable to decode the received PDU data")
            LOGGER.exception(exc)
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(pdu)
        return
    items = pdv_items(body)
    if items is None:
        LOGGER.error("Unable to decode the received PDU data")
        self.event_queue.put("Evt19")
        return
    self.event_queue.put("Evt10")  # P-DATA-TF PDU received
    self._recv_pdu.put(ReceivedPData(items))


PDU_SIZE_GUARD = Replacement(
    name="pdu_size_guard",
    summary="one recv_into per PDU, a declared length over our maximum refused, reads bounded in time",
    mirrors=(Mirror("pynetdicom.transport:AssociationSocket.recv", "6bc20a33b1b7cfe76d4ad4407ca242563bc6206fde4b4e1cf7a2fbb1f11d621d"),),
    patches=(Patch("pynetdicom.transport:AssociationSocket.recv", _recv),),
    protects=True,
)

PDATA_READ = Replacement(
    name="pdata_read",
    summary="a P-DATA-TF PDU read into one buffer and handed on as memoryviews",
    mirrors=(
        Mirror("pynetdicom.dul:DULServiceProvider._read_pdu_data", "19f2d4e38c13c83586365d93dd5cd96a0c7c665cb37251054b3e1f246e9f431b"),
        Mirror("pynetdicom.pdu_primitives:P_DATA", "19c1aa5d5ee978f7dd12a111d1f43ad4eeaa31c95851211aab78ebddd1240c6e"),  # ReceivedPData sets its value list
    ),
    patches=(Patch("pynetdicom.dul:DULServiceProvider._read_pdu_data", _read_pdu_data),),
)
