"""What an application needs of a pynetdicom association beyond its public API.

Shutting its connection under its threads, knowing whether a request is in
flight, waiting until the DUL has sent what is queued, ending its threads.
These read pynetdicom internals (``assoc.dul``, its queues, ``_kill``), so
they live here beside the replacements, not in the services.
"""

from __future__ import annotations

import socket
import time

from dicomext.reactor import is_serving


def raw_socket(assoc) -> socket.socket | None:
    """The association's TCP (or TLS) socket, once connected."""
    return getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)


def shut_socket(assoc) -> None:
    """Shut the association's TCP connection down under its threads.

    A thread blocked reading from or writing to it returns at once, and
    pynetdicom's state machine sees a closed connection (PS3.8 Evt17).
    """
    sock = raw_socket(assoc)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def in_flight(assoc) -> bool:
    """True while an association has a request in flight (being received or served)."""
    return assoc.is_established and (is_serving(assoc) or getattr(assoc.dimse, "message", None) is not None)


def flush(assoc, timeout: float = 1.0) -> None:
    """Wait until the DUL has sent what is queued (pynetdicom closes the
    socket right after EVT_REQUESTED, which could drop an A-ASSOCIATE-RJ)."""
    dul = assoc.dul
    deadline = time.monotonic() + timeout
    while (dul.to_provider_queue.qsize() or dul.event_queue.qsize()) and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.01)


def let_dul_read(assoc, timeout: float = 2.0) -> None:
    """Wait until pynetdicom's DUL has sent what was queued, and a turn more.

    Its reactor sends queued PDUs before it reads the socket, so a C-CANCEL
    from the peer is seen only once the send queue is empty.
    """
    queue = assoc.dul.to_provider_queue
    deadline = time.monotonic() + timeout
    while queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.0002)
    time.sleep(0.0002)  # a reactor turn to read the socket


def wake_unestablished(assoc) -> None:
    """Wake the thread of an acceptor whose connection closed before any A-ASSOCIATE-RQ.

    pynetdicom's state machine drops such a connection (PS3.8 Sta2 + Evt17)
    but the association thread waits out the whole ACSE timeout for a
    primitive; an empty one wakes it, and it ends as on a timeout.
    """
    assoc.dul.to_user_queue.put(None)


def end(assoc) -> None:
    """End the association's threads now: its connection shut, its DUL and reactor told to stop.

    Not ``Association.kill()``, which loops until the state machine is in Sta1.
    """
    shut_socket(assoc)
    assoc.dul.kill_dul()
    assoc._kill = True


def join(assoc, deadline: float) -> None:
    """Wait until ``deadline`` (time.monotonic()) for the association's DUL and reactor threads."""
    assoc.dul.join(max(0.0, deadline - time.monotonic()))
    assoc.join(max(0.0, deadline - time.monotonic()))
