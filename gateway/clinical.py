"""The clinical context of orders: kept with their worklist items at intake.

The HL7 and FHIR intakes call :func:`keep_order_context` after the order is
stored and before they answer; the exam service reads it back for the exam
that answers the order (gateway/exams.py).  Context is best effort: a
failure to read or keep it is logged (no patient data) and never refuses
the order -- the radiographer can still give it (``PUT /api/exams/{id}/context``).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from gateway.logs import fields
from mappings.clinical_context import ClinicalContext

log = logging.getLogger("gateway.clinical")


def keep_order_context(store, item_ids: Iterable[int], read: Callable[[], ClinicalContext]) -> None:
    """Read the order's context with ``read`` and keep it with ``item_ids``."""
    ids = list(item_ids)
    try:
        context = read()
        if context.is_empty():
            return
        store.set_order_context(ids, context.to_dict())
        log.info("order.context", extra=fields(items=ids, sources=list(context.sources)))
    except Exception:
        log.exception("order.context_error", extra=fields(items=ids))
