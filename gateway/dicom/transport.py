"""How the daemon reads from DICOM sockets (a replacement for one pynetdicom method).

pynetdicom's ``AssociationSocket.recv`` reads a PDU 4 KiB at a time into a
growing bytearray, and trusts the PDU length the peer declares (up to
4 GiB) without comparing it with the maximum we negotiated (DESIGN.md,
known pitfalls).  The replacement reads into one buffer of the declared
size with ``recv_into`` (a few syscalls per PDU instead of one per 4 KiB),
and refuses a declared length over the limit: the connection is closed,
which pynetdicom treats as a lost peer (the association is aborted, a
partial C-STORE is discarded), before any memory is taken for it.
"""

from __future__ import annotations

import logging
import socket

from pynetdicom.transport import AssociationSocket

from gateway.logs import fields

log = logging.getLogger("gateway.dicom")

PDU_HEADER = 6  # PS3.8 9.3.1: type, reserved, 4-byte length
_limit = 64 * 1024 * 1024


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """Read ``nr_bytes`` (fewer only if the peer closed), or refuse an oversized PDU."""
    sock: socket.socket = self.socket
    if nr_bytes > _limit:
        log.warning("dicom.pdu_too_large", extra=fields(declared=nr_bytes, limit=_limit))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return bytearray()
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    while got < nr_bytes:
        n = sock.recv_into(view[got:], nr_bytes - got)
        if not n:  # the connection is broken: return what we have, as pynetdicom does
            del view
            return buf[:got]
        got += n
    return buf


def install(maximum_pdu_size: int) -> None:
    """Use :func:`_recv` for every association socket of this process."""
    global _limit
    # What we accept: our negotiated maximum (0 means none in PS3.8) plus slack
    # for the PDU's own items; never more than 64 MiB at once.
    _limit = min(maximum_pdu_size + 1024, 64 * 1024 * 1024) if maximum_pdu_size else 64 * 1024 * 1024
    AssociationSocket.recv = _recv
