"""Counting the device defects the gateway tolerates (docs/tolerated-defects.md)."""

from __future__ import annotations

import logging

from gateway.logs import fields
from gateway.metrics import Metrics
from mappings.uids import TOLERATED_DEFECTS

log = logging.getLogger("gateway.dicom")


def note_defects(metrics: Metrics, defects: tuple[str, ...], *, service: str, calling_ae: str) -> None:
    """Count each tolerated defect once per request (labels from the closed set only), and warn."""
    if not defects:
        return
    for defect in sorted(set(defects)):
        metrics.tolerated_defects.labels(defect if defect in TOLERATED_DEFECTS else "other").inc()
    log.warning("dicom.tolerated_defect", extra=fields(service=service, defects=sorted(set(defects)), calling_ae=calling_ae))
