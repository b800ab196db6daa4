"""HL7 order intake: parse, commit, then acknowledge (docs/architecture.md rule 1).

The ACK is built only after the store's transaction has committed; a
message that cannot be accepted gets AE/AR with an ERR segment and changes
nothing.  Parsing, the store write and the ACK all run in the executor, so
a large message never stalls the event loop (docs/architecture.md rule 4).

HL7 v2.5 Table 0008 (original mode): AE is an error in the message's
content, which the sender should not resend unchanged; AR is a rejection
for reasons unrelated to content -- the gateway's own failure (store
unwritable, disk full) -- after which the sender may resend.  So an
internal error is answered AR with ERR-3 207.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import Executor
from datetime import datetime

from gateway.entitlement import Entitlement, NotEntitled, Screened
from gateway.clinical import keep_order_context
from gateway.logs import fields
from gateway.metrics import Metrics, message_type_label
from gateway.store import InboundMessage, Store, UnknownOrder
from mappings.clinical_context import context_from_hl7
from hl7v2.ack import ack_bytes, build_ack
from hl7v2.charsets import CHARSETS, decode_message
from hl7v2.er7 import Header, read_header, split_message
from hl7v2.errors import Hl7Error
from mappings.hl7_orders import OrderOptions, parse_message
from gateway.security.peers import PeerCertificate, hl7_sender_refusal

log = logging.getLogger("gateway.hl7")


class Hl7Intake:
    def __init__(
        self, store: Store, options: OrderOptions, executor: Executor, metrics: Metrics,
        allowed_senders: list | None = None, entitlement: Entitlement | None = None,
    ) -> None:
        self.store = store
        self.allowed_senders = list(allowed_senders or [])  # hl7.allowed_senders (gateway/security/peers.py)
        self.entitlement = entitlement
        self.options = options
        self.executor = executor
        self.metrics = metrics
        self._seq = itertools.count(1)
        self._boot = int(time.time())

    def _ack(self, header: Header | None, code: str, error: Hl7Error | None = None, text: str = "") -> bytes:
        ack = build_ack(
            header,
            code,
            control_id=f"DXAGW{self._boot}{next(self._seq):06d}",
            timestamp=datetime.now().strftime("%Y%m%d%H%M%S"),
            error=error,
            text=text,
        )
        return ack_bytes(ack, header.charset if header else "")

    def _commit(self, message: InboundMessage, actions: tuple) -> tuple:
        """Screen the referrers, then apply in one commit (runs in the executor)."""
        screened = self.entitlement.screen(actions) if self.entitlement else Screened(actions)
        return self.store.apply_inbound(message, screened.actions), screened

    async def handle(self, raw: bytes, peer: str, cert: PeerCertificate | None = None) -> bytes:
        """One framed message in, its ACK out (handled in the executor)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.handle_sync, raw, peer, cert)

    async def refuse_frame(self, raw: bytes, reason: str, peer: str) -> bytes:
        """AR for a frame the listener could not take whole (``raw``: its start)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._refuse_frame, raw, reason, peer)

    def _refuse_frame(self, raw: bytes, reason: str, peer: str) -> bytes:
        header = None
        try:
            text, charset = decode_message(raw, self.options.default_charset)
            header = read_header(split_message(text, CHARSETS[charset][0]), charset)
        except Exception:  # nothing readable before the stray block: a bare ACK
            pass
        # A broken frame is not the message's content: AR, the sender may resend.
        error = Hl7Error(reason, code=102, ack_code="AR")
        self.metrics.hl7_messages.labels(message_type_label(header), "AR").inc()
        log.warning("hl7.refused", extra=fields(type=message_type_label(header), ack="AR", hl7_error=102, reason=reason, peer=peer))
        return self._ack(header, "AR", error)

    def handle_sync(self, raw: bytes, peer: str, cert: PeerCertificate | None = None) -> bytes:
        """One framed message in, its ACK out; blocking."""
        started = time.perf_counter()
        header: Header | None = None
        msg_type = "unknown"
        try:
            parsed = parse_message(raw, self.options)
            header = parsed.header
            msg_type = message_type_label(header)
            refusal = hl7_sender_refusal(self.allowed_senders, header.sending_application, header.sending_facility, peer.rsplit(":", 1)[0], cert or PeerCertificate())
            if refusal is not None:
                # HL7 v2.5.1 Table 0357 has no "not authorized": 103, MSH-3 not in the table of allowed senders.
                self.store.audit("hl7.sender_refused", f"{header.sending_application}^{header.sending_facility}@{peer}", {"reason": refusal, "type": msg_type})
                error = Hl7Error(refusal, code=103, segment="MSH", field=3, ack_code="AR")
                error.header = header
                raise error
            message = InboundMessage(
                source="hl7",
                sender=header.sender,
                message_id=header.control_id,
                message_type=msg_type,
                raw=raw,
            )
            result, screened = self._commit(message, parsed.actions)
            if not result.duplicate:
                for reason in screened.held:
                    self.metrics.orders_held.labels(reason).inc()
                if screened.held or screened.accepted_unentitled:
                    log.warning(
                        "hl7.referrer_not_entitled",
                        extra=fields(control_id=header.control_id, held=list(screened.held), accepted=list(screened.accepted_unentitled)),
                    )
            if result.item_ids and not result.duplicate and header.message_type in ("ORM", "OMI"):  # an order's own context
                keep_order_context(self.store, result.item_ids, lambda: context_from_hl7(raw, self.options.default_charset))
            code = result.ack_code
            ack = self._ack(header, code, text="duplicate message, already processed" if result.duplicate else "")
            log.info(
                "hl7.accepted",
                extra=fields(type=msg_type, control_id=header.control_id, duplicate=result.duplicate, items=list(result.item_ids), peer=peer),
            )
        except Hl7Error as exc:
            header = exc.header
            if header is not None:
                msg_type = message_type_label(header)
            code = exc.ack_code
            ack = self._ack(header, code, exc)
            log.warning(
                "hl7.refused",
                extra=fields(type=msg_type, ack=code, hl7_error=exc.code, location=exc.location, reason=exc.text, peer=peer),
            )
        except NotEntitled as exc:
            # entitlement.on_unknown: reject (IR(ME)R): AR, nothing stored.
            code = "AR"
            seg, _, num = (exc.field or "ORC-12").partition("-")
            error = Hl7Error(f"referrer not entitled: {exc.decision.detail}", code=204, segment=seg, field=int(num or 0), ack_code="AR")
            ack = self._ack(header, code, error)
            self.metrics.orders_refused.labels(exc.decision.reason).inc()
            log.warning("hl7.refused", extra=fields(type=msg_type, ack=code, hl7_error=204, location=exc.field, reason=exc.decision.reason, peer=peer))
        except UnknownOrder as exc:
            code = "AE"
            error = Hl7Error("unknown order: no step has this placer, filler or accession number", code=204, segment="ORC", field=2)
            ack = self._ack(header, code, error)
            log.warning("hl7.refused", extra=fields(type=msg_type, ack=code, hl7_error=204, location="ORC-2", peer=peer))
        except Exception:
            # Anything else is our fault (Table 0008: AR, "reasons unrelated
            # to content"): the sender resends, the order is not lost.
            code = "AR"
            error = Hl7Error("application internal error; resend later", code=207, ack_code="AR")
            ack = self._ack(header, code, error)
            log.exception("hl7.error", extra=fields(type=msg_type, peer=peer))
        self.metrics.hl7_messages.labels(msg_type, code).inc()
        self.metrics.hl7_latency.observe(time.perf_counter() - started)
        return ack
