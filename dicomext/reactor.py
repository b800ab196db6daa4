"""Event-driven reactors for pynetdicom's two threads per association.

pynetdicom 3.0 polls: the DUL thread sleeps 1 ms whenever it finds nothing
to do, and the association thread sleeps 1 ms on every turn (its source
says "TODO: try and make this event based").  Here that cost 4% of a core
per idle association (eight idle scanners: a third of a core), and with
eight associations storing at once the 16 000 wakeups a second took the GIL
from the threads moving data.

These replacements do the same work in the same order, but wait for
something to happen: the DUL thread in ``select()`` on its socket and a
wake pipe, the association thread on an Event.  Both are woken by every
put on the queues they read (wrapped per instance) and by kill/stop; for
the ARTIM and network idle timers they wake when the running timer is due,
and at least every :data:`IDLE_WAIT` seconds.  (Waking every 10 ms instead
cost 2% of a core per idle association on a 2-core VM.)
Applied only where pynetdicom's reactors are the code these mirror
(:data:`REPLACEMENT`); docs/pynetdicom-upstream.md proposes them upstream.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import threading
import time

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from dicomext.guard import Mirror, Patch, Replacement

LOGGER = logging.getLogger("pynetdicom.dul")

IDLE_WAIT = 0.25  # seconds; the longest a reactor sleeps with nothing due


class _Waker:
    """A pipe a thread blocked in select() can be woken through."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self.closed = False

    def set(self) -> None:
        if self.closed:
            return
        try:
            os.write(self.w, b"\0")
        except OSError:  # full (a wakeup is pending anyway) or closed
            pass

    def drain(self) -> None:
        try:
            while os.read(self.r, 4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


def _wake_on_put(q: queue.Queue, wake) -> None:
    put = q.put

    def put_and_wake(item, block=True, timeout=None):
        put(item, block, timeout)
        wake()

    q.put = put_and_wake  # type: ignore[method-assign]


def _assoc_wake(assoc) -> threading.Event:
    wake = getattr(assoc, "_dxagw_wake", None)
    if wake is None:
        wake = assoc._dxagw_wake = threading.Event()
    return wake


# -- DUL ---------------------------------------------------------------------------


def _dul_waker(dul: DULServiceProvider) -> _Waker:
    waker = getattr(dul, "_dxagw_waker", None)
    if waker is None:
        waker = dul._dxagw_waker = _Waker()
    return waker


def _until(*timers) -> float:
    """Seconds until the first of the running ``timers`` expires, at most IDLE_WAIT.

    pynetdicom's Timer runs from start() until stop(); one with no timeout,
    never started, or stopped, has nothing due.
    """
    wait = IDLE_WAIT
    for timer in timers:
        if timer.timeout is not None and timer._start_time is not None and timer._end_time is None:
            wait = min(wait, max(timer.remaining, 0.0))
    return wait


def _dul_wait(dul: DULServiceProvider, waker: _Waker) -> None:
    """Until the socket is readable, a queue was put to, or a timer is due."""
    sock = getattr(dul.socket, "socket", None)
    if isinstance(sock, ssl.SSLSocket):  # may hold decrypted bytes select() cannot see
        time.sleep(dul._run_loop_delay)
        return
    fds = [waker.r]
    try:
        if sock is not None and sock.fileno() >= 0:
            fds.append(sock)
    except OSError:
        pass
    try:
        select.select(fds, [], [], _until(dul.artim_timer))  # the association thread watches the idle timer
    except (OSError, ValueError):  # the socket was closed under us: the loop will see it
        time.sleep(dul._run_loop_delay)
    waker.drain()


def dul_run_reactor(self: DULServiceProvider) -> None:
    """pynetdicom's ``DULServiceProvider.run_reactor``, waiting instead of polling."""
    waker = _dul_waker(self)
    _wake_on_put(self.to_provider_queue, waker.set)
    _wake_on_put(self.event_queue, waker.set)
    self._idle_timer.start()
    idle = False
    try:
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                _dul_wait(self, waker)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Either encode and send a primitive or receive and decode a PDU
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                LOGGER.error("Exception in DUL.run(), aborting association")
                LOGGER.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False
    finally:
        waker.close()
        _assoc_wake(self.assoc).set()  # the association thread checks dul.is_alive()


def _wake_dul(dul: DULServiceProvider) -> None:
    waker = getattr(dul, "_dxagw_waker", None)
    if waker is not None:  # else the reactor has not started: it checks _kill_thread first
        waker.set()


def dul_kill(self: DULServiceProvider) -> None:
    self._kill_thread = True
    _wake_dul(self)


def dul_stop(self: DULServiceProvider) -> bool:
    if self.state_machine.current_state == "Sta1":
        self._kill_thread = True
        _wake_dul(self)
        while self.is_alive():
            time.sleep(self._run_loop_delay)
        return True
    return False


# -- association -------------------------------------------------------------------


def assoc_run_reactor(self: Association) -> None:
    """pynetdicom's ``Association._run_reactor`` (acceptor and requestor), waiting instead of polling."""
    wake = _assoc_wake(self)
    _wake_on_put(self.dimse.msg_queue, wake.set)
    _wake_on_put(self.dul.to_user_queue, wake.set)
    self._is_paused = False
    idle = False
    while not self._kill:
        if idle:
            # Nothing is taken off a queue while waiting, so a send_*() on
            # another thread may go ahead (PS: pynetdicom's pause protocol).
            self._is_paused = True
            wake.wait(_until(self.dul._idle_timer))
            wake.clear()
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        if not self._reactor_checkpoint.is_set():
            # A send_*() on another thread cleared the checkpoint after we
            # passed it and may have read _is_paused before we reset it: its
            # response is its own, so do not take a message now.  (pynetdicom
            # takes it here and the sender times out: seen under load.)
            idle = False
            continue

        context_id, msg = self.dimse.get_msg(block=False)
        idle = msg is None
        if msg:
            self._dxagw_serving = True  # read by is_serving(): work in flight
            try:
                self._serve_request(msg, context_id)
            finally:
                self._dxagw_serving = False

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            LOGGER.info(log_msg)
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def is_serving(assoc: Association) -> bool:
    """True while this reactor is serving a request of ``assoc`` (its handler runs)."""
    return bool(getattr(assoc, "_dxagw_serving", False))


REPLACEMENT = Replacement(
    name="reactors",
    summary="DUL and association threads wait on the socket, a wake pipe and an Event instead of polling every 1 ms",
    mirrors=(
        Mirror("pynetdicom.dul:DULServiceProvider.run_reactor", "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803"),
        Mirror("pynetdicom.dul:DULServiceProvider.kill_dul", "5ceccf8dd01c2072c377d18bb1be284941a345bd40f03bd1e03a864ab0817842"),
        Mirror("pynetdicom.dul:DULServiceProvider.stop_dul", "28a7e0be126e7b306369cc1b131daec8e907d21d0f5692930133b6599b8c6e5f"),
        Mirror("pynetdicom.association:Association._run_reactor", "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee"),
        Mirror("pynetdicom.timer:Timer", "77ddae7423f544b16c3ffbb691735b40f3b44bd95113f3b67ef92e5ebaa5ca5e"),  # _until() reads its start and end times
    ),
    patches=(
        Patch("pynetdicom.dul:DULServiceProvider.run_reactor", dul_run_reactor),
        Patch("pynetdicom.dul:DULServiceProvider.kill_dul", dul_kill),
        Patch("pynetdicom.dul:DULServiceProvider.stop_dul", dul_stop),
        Patch("pynetdicom.association:Association._run_reactor", assoc_run_reactor),
    ),
)
