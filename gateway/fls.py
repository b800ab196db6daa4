"""Fracture liaison notifications: rendered with the report version they come from.

A released version (signed, or auto-released) whose findings call for the
fracture liaison service (mappings/bmd/fls.py) gets one notification per
destination of the routes matching ``kind: fls``: a REF^I12 for an ``hl7``
destination, a FHIR Task Bundle for a ``fhir`` one.  It is rendered in the
release transaction, stored in ``report_payloads`` under the destination
name ``fls:<destination>`` (so a destination that also takes the ORU keeps
both), and queued as an outbox row of kind ``fls``: the dispatcher sends
those stored bytes with the retries and dead letters of every delivery
(docs/architecture.md rules 2 and 9; docs/fls.md).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterator, Mapping

import orjson

from gateway.logs import fields
from gateway.store.exams import FLS_PREFIX, RenderedPayload
from mappings.bmd.classify import Classification
from mappings.bmd.fls import FlsContext, build_fls_ref_i12, build_fls_task_bundle, fls_reasons
from mappings.bmd.models import BmdExam
from mappings.clinical_context import ClinicalContext
from routes.rules import Rule, RoutedObject, destinations_for

log = logging.getLogger("gateway.fls")

FORMATS = {"hl7": "fls-ref-i12", "fhir": "fls-fhir-task"}


def stored_destination(destination: str) -> str:
    return FLS_PREFIX + destination


class FlsNotifier:
    def __init__(
        self, rules: tuple[Rule, ...], destination_types: Mapping[str, str], *, hl7_application: str = "DXAGW", hl7_facility: str = "",
        metrics=None,
    ) -> None:
        self.metrics = metrics
        # only routes naming kind fls: a catch-all route never sends referrals
        self.rules = tuple(r for r in rules if "fls" in r.kinds)
        self.destination_types = dict(destination_types)
        self.hl7_application = hl7_application
        self.hl7_facility = hl7_facility

    def destinations(self, manufacturer: str) -> tuple[str, ...]:
        return destinations_for(self.rules, RoutedObject(kind="fls", modality="BMD", manufacturer=manufacturer))

    def payloads(
        self, exam: BmdExam, classification: Classification, ctx: ClinicalContext, *, report_id: int, released_at: str,
        hl7_time: str, status: str, referrer: str, referrer_id: str = "", placer: str = "", filler: str = "",
    ) -> Iterator[RenderedPayload]:
        """The notifications of one released version (none when its findings do not call for the FLS)."""
        destinations = self.destinations(exam.device.manufacturer)
        if not destinations:
            return
        reasons = fls_reasons(classification, ctx)
        if not reasons:
            return
        issued = datetime.fromisoformat(released_at).isoformat(timespec="seconds")
        for n, destination in enumerate(destinations, start=1):
            kind = self.destination_types.get(destination, "")
            if kind not in FORMATS:  # refused at start by the config check; never here
                continue
            fctx = FlsContext(
                control_id=f"DXAGWF{report_id}.{n}", timestamp=hl7_time, issued=issued, report_ref=f"R{report_id}",
                result_status=status, sending_application=self.hl7_application, sending_facility=self.hl7_facility,
                referrer=referrer, referrer_id=referrer_id, placer_order_number=placer, filler_order_number=filler,
            )
            if kind == "fhir":
                body = orjson.dumps(build_fls_task_bundle(exam, classification, reasons, fctx))
            else:
                body = build_fls_ref_i12(exam, classification, reasons, fctx).encode("utf-8")
            yield RenderedPayload(stored_destination(destination), FORMATS[kind], fctx.control_id, body)
        if self.metrics is not None:  # counted when rendered, inside the release transaction
            for reason in reasons:
                self.metrics.fls_notifications.labels(reason).inc()
        log.info("fls.notified", extra=fields(report=report_id, reasons=",".join(reasons), destinations=len(destinations)))
