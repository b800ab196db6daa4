"""The gateway's DICOM side: pynetdicom SCPs, and the few pynetdicom internals
(reactors, acceptor, command sets, PDU reads) replaced where profiles showed
their cost.  Each replacement mirrors one pynetdicom release line."""

from __future__ import annotations

import logging

import pynetdicom

from gateway.logs import fields

MIRRORED_PYNETDICOM = ("3.0.",)

log = logging.getLogger("gateway.dicom")


def mirrors_pynetdicom(replacement: str) -> bool:
    """True if this pynetdicom is one the replacements mirror; else say which one is left out."""
    if pynetdicom.__version__.startswith(MIRRORED_PYNETDICOM):
        return True
    log.warning("dicom.pynetdicom_unmirrored", extra=fields(replacement=replacement, pynetdicom=pynetdicom.__version__))
    return False
