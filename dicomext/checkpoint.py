"""A race in pynetdicom's polling association reactor, closed.

A ``send_*()`` clears the reactor checkpoint and waits for ``_is_paused``;
the reactor (``Association._run_reactor``) may have just passed the
checkpoint and not yet reset ``_is_paused``, and then takes the response
off the queue itself, so the sender waits out its DIMSE timeout ("no
response").  Seen with eight exams at once on a saturated 2-core VM.
Here the reactor's own non-blocking read (the only one it makes) yields
nothing while the checkpoint is cleared.  The event-driven reactor
(dicomext/reactor.py) re-checks the checkpoint itself; this guard is for
processes on pynetdicom's reactor (the simulators), and harmless beside it.
"""

from __future__ import annotations

import threading

from dicomext.guard import Mirror, Patch, Replacement, upstream

_get_msg = upstream("pynetdicom.dimse:DIMSEServiceProvider.get_msg")


def get_msg(self, block: bool = False):
    """``DIMSEServiceProvider.get_msg``; nothing for the reactor's own read while a sender waits."""
    assoc = self.assoc
    if not block and threading.current_thread() is assoc and not assoc._reactor_checkpoint.is_set():
        return None, None
    return _get_msg(self, block)


REPLACEMENT = Replacement(
    name="checkpoint_race",
    summary="the association reactor takes no message while a send_*() on another thread waits for its response",
    mirrors=(
        Mirror("pynetdicom.dimse:DIMSEServiceProvider.get_msg", "890e3e04283f5aeb756236f1a4dd35d3a10bbdd52f3efa3f3950c01f47bd2b34"),
        Mirror("pynetdicom.association:Association._run_reactor", "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee"),
    ),
    patches=(Patch("pynetdicom.dimse:DIMSEServiceProvider.get_msg", get_msg),),
)
