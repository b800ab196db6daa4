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
  (``DicomServer._on_requested``), so each association gets its own list of
  the shared, read-only contexts.
- runs a full ``gc.collect()`` every 60 turns of the server loop
  (``AssociationServer.service_actions``, "dead Association threads aren't
  being garbage collected").  In a daemon holding tens of thousands of
  worklist datasets that pause took the GIL from every association (9% of the
  gateway's GIL time in bench/e2e).  Python's own generational collector
  still frees those cycles; bench/soak.py shows RSS flat over 1000 rounds.
"""

from __future__ import annotations

from pynetdicom import transport

from gateway.dicom import mirrors_pynetdicom


def _own_list(contexts: list) -> list:
    """A new list of the same (read-only) presentation contexts."""
    return list(contexts)


def _no_forced_collect(self: transport.AssociationServer) -> None:
    """``AssociationServer.service_actions`` without the full gc.collect()."""


def install() -> bool:
    """Apply both in this process; False if this pynetdicom may differ."""
    if not mirrors_pynetdicom("acceptor"):
        return False
    transport.deepcopy = _own_list  # used only by RequestHandler._create_association
    transport.AssociationServer.service_actions = _no_forced_collect
    return True
