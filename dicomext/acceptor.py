"""Two per-association costs of pynetdicom's acceptor, taken out.

A scanner opens an association for every step of an exam (worklist, MPPS,
each batch of C-STOREs, commitment), so what the acceptor does per
association counts as much as what it does per message.  pynetdicom 3.0:

- deep-copies the server's supported presentation contexts for every new
  association (``RequestHandler._create_association``).  The gateway
  supports ~50 storage SOP classes with 10 transfer syntaxes each, so that is
  ~550 pydicom UIDs re-validated by regex each time.  Negotiation only reads
  them (``presentation.negotiate_as_acceptor`` builds new result contexts),
  and the gateway replaces the list, never changes an item
  (gateway/dicom/server.py, ``_on_requested``), so each association gets
  its own list of the shared, read-only contexts.  A process that changes
  an accepted association's contexts in place must not install this.
- runs a full ``gc.collect()`` every 60 turns of the server loop
  (``AssociationServer.service_actions``, "dead Association threads aren't
  being garbage collected").  In a daemon holding tens of thousands of
  worklist datasets that pause took the GIL from every association (9% of the
  gateway's GIL time in bench/e2e).  Python's own generational collector
  still frees those cycles; bench/soak.py shows RSS flat over 1000 rounds.
"""

from __future__ import annotations

from dicomext.guard import Mirror, Patch, Replacement


def _own_list(contexts: list) -> list:
    """A new list of the same (read-only) presentation contexts."""
    return list(contexts)


def _no_forced_collect(self) -> None:
    """``AssociationServer.service_actions`` without the full gc.collect()."""


REPLACEMENT = Replacement(
    name="acceptor",
    summary="each association gets a new list of the shared presentation contexts (no deepcopy); no forced gc.collect()",
    mirrors=(
        Mirror("pynetdicom.transport:RequestHandler._create_association", "05c8d12b79863cdbdb901ce37187b7030a0434c5cd89d219ed0bedbda679a61e"),
        Mirror("pynetdicom.transport:AssociationServer.service_actions", "0a0853a3615ac7c5260a57dcdc8b0e9908d655919b7d64737c89534869758873"),
    ),
    patches=(
        Patch("pynetdicom.transport:deepcopy", _own_list, users=("RequestHandler._create_association",)),
        Patch("pynetdicom.transport:AssociationServer.service_actions", _no_forced_collect),
    ),
)
