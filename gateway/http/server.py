"""HTTP: health, metrics, the worklist REST API and FHIR order intake."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from gateway.clinical import keep_order_context
from gateway.entitlement import NotEntitled, Screened
from gateway.http import auth
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.store import InboundMessage, Store, UnknownOrder
from mappings.clinical_context import context_from_fhir_body
from mappings.hl7_orders import OrderKey, UpsertOrder
from mappings.fhir_orders import FhirOrderError, Issue, operation_outcome, service_request_actions
from mappings.worklist import CANCELLED, STATUSES, ItemError, item_from_dataset, item_to_dataset

log = logging.getLogger("gateway.http")

DICOM_JSON = "application/dicom+json"
FHIR_JSON = "application/fhir+json"


def _json(data: object, status: int = 200, content_type: str = "application/json", headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=content_type, headers=headers)


def _problem(status: int, message: str, **extra: object) -> web.Response:
    return _json({"error": message, **extra}, status=status)


class HttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        store: Store,
        metrics: Metrics,
        executor: Executor,
        *,
        ready: Callable[[], dict[str, bool]],
        default_station_ae: str = "",
        default_modality: str = "BMD",
        max_body_bytes: int = 8 * 1024 * 1024,
        parse_executor: Executor | None = None,
        access: auth.HttpAuth | None = None,
        ssl_context=None,
    ) -> None:
        self.host = host
        self.port = port
        self.store = store
        self.metrics = metrics
        self.executor = executor
        # JSON parsing and validation: CPU work kept off the event loop, on
        # a small pool so large bodies cannot take every thread.
        self.parse_executor = parse_executor or executor
        self.ready = ready
        self.default_station_ae = default_station_ae
        self.default_modality = default_modality
        self.app = web.Application(client_max_size=max_body_bytes)
        self.ssl_context = ssl_context
        if access is not None:
            access.install(self.app)
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics_endpoint),
                web.post("/api/worklist", self.worklist_create),
                web.get("/api/worklist", self.worklist_list),
                web.get("/api/worklist/{id}", self.worklist_get),
                web.delete("/api/worklist/{id}", self.worklist_delete),
                web.get("/api/outbox", self.outbox_list),
                web.post("/api/outbox/retry", self.outbox_retry_all),
                web.post("/api/outbox/{id}/retry", self.outbox_retry_one),
                web.get("/api/destinations", self.destinations),
                web.get("/api/audit", self.audit_list),
                web.post("/fhir/ServiceRequest", self.fhir_service_request),
                web.post("/fhir", self.fhir_service_request),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.dispatcher = None  # set by the Gateway: woken when dead letters are requeued
        self.destination_config: dict = {}
        self.entitlement = None  # set by the Gateway: screens FHIR orders' referrers

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=5.0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _db(self, fn, *args, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kw))

    async def _cpu(self, fn, *args, **kw):
        """Parse or validate in the parse pool (docs/architecture.md rule 4)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.parse_executor, lambda: fn(*args, **kw))

    # -- operations ----------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        checks = dict(self.ready())
        try:
            checks["store"] = await self._db(self.store.ping)
        except Exception:
            checks["store"] = False
        ok = all(checks.values())
        return _json({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body = await self._db(generate_latest, self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- worklist REST -------------------------------------------------------

    @staticmethod
    def _row_json(row) -> dict:
        return {
            "id": row.id,
            "status": row.item.status,
            "source": row.item.source,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "dataset": item_to_dataset(row.item).to_json_dict(),
            "referrer_id": row.item.referrer_id or None,
            "hold_reason": row.item.hold_reason or None,  # why it is HELD (docs: README "Running a DXA service")
        }

    async def worklist_create(self, request: web.Request) -> web.Response:
        """POST one item as DICOM JSON (PS3.18 Annex F) -> 201 {"id": n}."""
        outcome = await self._cpu(self._worklist_item, await request.read())
        if isinstance(outcome, web.Response):
            return outcome
        item = outcome
        if self.entitlement is not None and self.entitlement.enabled:
            # The referrer is checked as for HL7 and FHIR orders (by name: DICOM JSON carries no XCN id here).
            try:
                screened = await self._db(self.entitlement.screen, (UpsertOrder(items=(item,), key=OrderKey()),))
            except NotEntitled as exc:
                self.metrics.orders_refused.labels(exc.decision.reason).inc()
                self.metrics.api_requests.labels("worklist.create", "422").inc()
                return _problem(422, f"referrer not entitled: {exc.decision.detail}", attribute="RequestingPhysician")
            item = screened.actions[0].items[0]
            for reason in screened.held:
                self.metrics.orders_held.labels(reason).inc()
        actor = auth.actor(request)
        ids = await self._db(self.store.add_worklist_items, [item], sender="api", actor=actor)
        self.metrics.api_requests.labels("worklist.create", "201").inc()
        log.info("api.worklist_created", extra=fields(id=ids[0]))
        return _json({"id": ids[0]}, status=201, headers={"Location": f"/api/worklist/{ids[0]}"})

    def _worklist_item(self, raw: bytes):
        """The item in a DICOM JSON body, or the refusal (blocking: parse pool)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.metrics.api_requests.labels("worklist.create", "400").inc()
            return _problem(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _problem(400, "the body must be one DICOM JSON object")
        try:
            ds = Dataset.from_json(body)
            item = item_from_dataset(ds, source="api")
        except ItemError as exc:
            self.metrics.api_requests.labels("worklist.create", "422").inc()
            return _problem(422, str(exc), attribute=exc.keyword)
        except Exception as exc:  # pydicom raises several types for bad DICOM JSON
            self.metrics.api_requests.labels("worklist.create", "400").inc()
            return _problem(400, f"not a valid DICOM JSON dataset: {type(exc).__name__}")
        if not item.study_instance_uid:
            item = item.replace(study_instance_uid=generate_uid())
        return item

    async def worklist_list(self, request: web.Request) -> web.Response:
        q = request.query
        status = q.get("status")
        if status and status.upper() not in STATUSES:
            return _problem(400, f"unknown status; use one of {', '.join(STATUSES)}")
        try:
            limit = min(int(q.get("limit", "100")), 1000)
            offset = int(q.get("offset", "0"))
        except ValueError:
            return _problem(400, "limit and offset are whole numbers")
        rows = await self._db(
            self.store.list_worklist,
            date=(q.get("date") or "").replace("-", "") or None,
            station_ae=q.get("station"),
            status=status.upper() if status else None,
            patient_id=q.get("patient"),
            limit=limit,
            offset=offset,
        )
        return _json([self._row_json(r) for r in rows])

    def _id(self, request: web.Request) -> int | None:
        try:
            return int(request.match_info["id"])
        except ValueError:
            return None

    async def worklist_get(self, request: web.Request) -> web.Response:
        row_id = self._id(request)
        row = await self._db(self.store.get_worklist_item, row_id) if row_id is not None else None
        if row is None:
            return _problem(404, "no such worklist item")
        return _json(self._row_json(row))

    async def worklist_delete(self, request: web.Request) -> web.Response:
        """Take an item off the worklist: it becomes CANCELLED, kept for audit."""
        row_id = self._id(request)
        actor = auth.actor(request)
        done = await self._db(self.store.set_worklist_status, row_id, CANCELLED, actor=actor) if row_id is not None else False
        if not done:
            return _problem(404, "no such worklist item")
        self.metrics.api_requests.labels("worklist.delete", "204").inc()
        return web.Response(status=204)

    # -- outbox admin ----------------------------------------------------------

    @staticmethod
    def _outbox_json(row) -> dict:
        return {
            "id": row.id,
            "destination": row.destination,
            "kind": row.kind,
            "ref": f"{row.ref_table}/{row.ref_id}",
            "state": row.state,
            "attempts": row.attempts,
            "next_attempt_at": row.next_attempt_at,
            "last_error": row.last_error,
        }

    async def outbox_list(self, request: web.Request) -> web.Response:
        q = request.query
        state = q.get("state")
        if state and state not in ("pending", "in_flight", "done", "dead"):
            return _problem(400, "state is one of pending, in_flight, done, dead")
        try:
            limit = min(int(q.get("limit", "100")), 1000)
        except ValueError:
            return _problem(400, "limit is a whole number")
        rows = await self._db(self.store.list_outbox, state=state, destination=q.get("destination"), limit=limit)
        return _json([self._outbox_json(r) for r in rows])

    def _requeued(self, n: int) -> web.Response:
        if n and self.dispatcher is not None:
            self.dispatcher.wake()
        return _json({"requeued": n})

    async def outbox_retry_one(self, request: web.Request) -> web.Response:
        row_id = self._id(request)
        row = await self._db(self.store.get_outbox, row_id) if row_id is not None else None
        if row is None:
            return _problem(404, "no such outbox row")
        if row.state != "dead":
            return _problem(409, f"row is {row.state}; only dead letters are requeued")
        actor = auth.actor(request)
        return self._requeued(await self._db(self.store.retry_outbox, row_id=row_id, actor=actor))

    async def outbox_retry_all(self, request: web.Request) -> web.Response:
        destination = request.query.get("destination")
        if destination and destination not in self.destination_config:
            return _problem(404, "no such destination")
        actor = auth.actor(request)
        return self._requeued(await self._db(self.store.retry_outbox, destination=destination, actor=actor))

    async def destinations(self, request: web.Request) -> web.Response:
        stats = await self._db(self.store.outbox_stats)
        out = []
        for name, dest in self.destination_config.items():
            depth = {state: n for d, state, n in stats["depth"] if d == name}
            out.append(
                {
                    "name": name,
                    "type": dest.type,
                    "queue": {s: depth.get(s, 0) for s in ("pending", "in_flight", "dead", "done")},
                    "oldest_pending": stats["oldest_pending"].get(name),
                    "last_success": stats["last_success"].get(name),
                    "last_error": stats["last_error"].get(name),
                }
            )
        return _json(out)

    async def audit_list(self, request: web.Request) -> web.Response:
        """The audit trail, newest first: ?event=prefix&actor=name&limit=n."""
        try:
            limit = min(int(request.query.get("limit", "100")), 1000)
        except ValueError:
            return _problem(400, "limit is a whole number")
        rows = await self._db(self.store.list_audit, event=request.query.get("event"), actor=request.query.get("actor"), limit=limit)
        return _json(rows)

    # -- FHIR intake ---------------------------------------------------------

    def _commit_fhir(self, message: InboundMessage, actions: tuple) -> tuple:
        """Screen the referrers, then apply in one commit (runs in the executor)."""
        screened = self.entitlement.screen(actions) if self.entitlement else Screened(actions)
        return self.store.apply_inbound(message, screened.actions), screened

    async def fhir_service_request(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body, actions = await self._cpu(self._fhir_actions, raw)
            message = InboundMessage(source="fhir", sender=auth.actor(request), message_id="", message_type=body.get("resourceType", "?"), raw=raw)
            try:
                result, screened = await self._db(self._commit_fhir, message, actions)
            except UnknownOrder:
                raise FhirOrderError([Issue("not-found", "no worklist item has this order's identifiers", "ServiceRequest.identifier")]) from None
            except NotEntitled as exc:
                self.metrics.orders_refused.labels(exc.decision.reason).inc()
                raise FhirOrderError(
                    [Issue("business-rule", f"referrer not entitled: {exc.decision.detail}", "ServiceRequest.requester")], status=422
                ) from None
            for reason in screened.held:
                self.metrics.orders_held.labels(reason).inc()
        except FhirOrderError as exc:
            self.metrics.fhir_requests.labels(str(exc.status)).inc()
            log.warning("fhir.refused", extra=fields(status=exc.status, reason=str(exc)[:200]))
            return _json(operation_outcome(exc.issues), status=exc.status, content_type=FHIR_JSON)
        if result.item_ids and not result.duplicate:
            await self._db(keep_order_context, self.store, result.item_ids, lambda: context_from_fhir_body(body))
        self.metrics.fhir_requests.labels("201").inc()
        first = result.item_ids[0] if result.item_ids else 0
        log.info("fhir.accepted", extra=fields(items=list(result.item_ids)))
        out = dict(body) if body.get("resourceType") == "ServiceRequest" else {"resourceType": "Bundle", "type": "transaction-response"}
        if body.get("resourceType") == "ServiceRequest":
            out["id"] = str(first)
        encoded = await self._cpu(orjson.dumps, out)
        return web.Response(body=encoded, status=201, content_type=FHIR_JSON, headers={"Location": f"/fhir/ServiceRequest/{first}"})

    def _fhir_actions(self, raw: bytes):
        """(body, worklist actions) of a FHIR order (blocking: parse pool)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise FhirOrderError([Issue("invalid", "the body is not JSON")], status=400) from None
        actions = service_request_actions(body, default_station_ae=self.default_station_ae, default_modality=self.default_modality)
        return body, actions
