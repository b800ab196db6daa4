"""Extensions of pynetdicom, in one place (docs/architecture.md rule 10; docs/pynetdicom-upstream.md).

Each module replaces one piece of pynetdicom's internals where a profile
showed its cost, or a gap (memory, time) it leaves open.  A replacement
names the upstream code it mirrors with the sha256 of its source, and
:func:`install` applies it only when that code is exactly what it was
written against; otherwise it stays off and is logged (``dicomext.
replacement_off``, naming the code that differs), and the process runs on
pynetdicom's own code.  The pynetdicom range whose code they mirror is
pinned in pyproject.toml; tests/unit/test_dicomext.py fails on a release
whose mirrored code changed.

This package imports pynetdicom (and pydicom) only; the gateway and the
simulators use it.
"""

from __future__ import annotations

import logging
from typing import Iterable

import pynetdicom

from dicomext import acceptor, checkpoint, command_set, identifiers, incoming, reactor, transport
from dicomext.guard import Replacement, Status, apply

log = logging.getLogger("dicomext")

#: every replacement, in the order install() applies them
REPLACEMENTS: tuple[Replacement, ...] = (
    transport.PDU_SIZE_GUARD,
    transport.PDATA_READ,
    reactor.REPLACEMENT,
    acceptor.REPLACEMENT,
    command_set.REPLACEMENT,
    identifiers.REPLACEMENT,
    incoming.REPLACEMENT,
    checkpoint.REPLACEMENT,
)
BY_NAME = {r.name: r for r in REPLACEMENTS}


def install(only: Iterable[str] | None = None) -> dict[str, Status]:
    """Apply the replacements (all, or those named in ``only``) whose mirrored code matches.

    Idempotent: an active replacement stays as it is.  Returns each one's
    status; those off are logged with what differs.
    """
    names = list(BY_NAME) if only is None else list(only)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"no pynetdicom extension named {', '.join(unknown)}")
    result = {name: apply(BY_NAME[name], pynetdicom.__version__) for name in names}
    active = sorted(name for name, s in result.items() if s.active)
    log.info("dicomext.installed", extra={"fields": {"active": active, "pynetdicom": pynetdicom.__version__}})
    return result


__all__ = ["REPLACEMENTS", "BY_NAME", "Status", "install"]
