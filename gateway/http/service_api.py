"""HTTP: running a DXA service -- justify a held order, the service KPIs.

The roles these routes need are lines of the role table
(gateway/security/roles.py): justify ``reporter``, KPIs ``viewer``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from datetime import date, timedelta

import orjson
from aiohttp import web

from gateway.entitlement import Entitlement
from gateway.http import auth
from gateway.logs import fields
from gateway.store import Store
from mappings import kpis as kpi
from mappings.bmd.classify import CATEGORY_TEXT

log = logging.getLogger("gateway.http")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _problem(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


def _range(query) -> tuple[date, date]:
    """?from=YYYY-MM-DD&to=YYYY-MM-DD, both days included; default the last year."""
    to = date.fromisoformat(query["to"]) if query.get("to") else date.today()
    start = date.fromisoformat(query["from"]) if query.get("from") else to - timedelta(days=364)
    if start > to:
        raise ValueError("from is after to")
    return start, to


def register(app: web.Application, store: Store, entitlement: Entitlement, executor: Executor) -> None:
    async def db(fn, *args, **kw):
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args, **kw))

    async def justify(request: web.Request) -> web.Response:
        """Release a HELD order (IR(ME)R reg. 11): body {"note": text}.

        The practitioner is the caller: its registration (else its name) must
        be in the register with role ``practitioner``, not expired.
        """
        try:
            row_id = int(request.match_info["id"])
        except ValueError:
            return _problem(404, "no such worklist item")
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _problem(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("note", ""), str):
            return _problem(422, "the body is {\"note\": text}")
        ident = request.get("identity")
        candidates = [ident.registration, ident.name] if ident is not None else []
        practitioner, problem = await db(entitlement.practitioner, candidates)
        if problem:
            log.warning("api.justify_refused", extra=fields(id=row_id, reason=problem))
            return _problem(403, f"the caller cannot justify an exposure: {problem}")
        outcome = await db(store.justify_worklist_item, row_id, actor=auth.actor(request), practitioner=practitioner, note=body.get("note", ""))
        if outcome == "not found":
            return _problem(404, "no such worklist item")
        if outcome:
            return _problem(409, f"the item is {outcome}; only HELD items are justified")
        log.info("api.worklist_justified", extra=fields(id=row_id))
        return _json({"id": row_id, "status": "SCHEDULED", "practitioner": practitioner})

    async def kpis(request: web.Request) -> web.Response:
        """The service KPIs (docs/domain.md section 1 item 6): JSON, or CSV with Accept: text/csv."""
        try:
            start, to = _range(request.query)
        except ValueError as exc:
            return _problem(400, f"from and to are dates (YYYY-MM-DD): {exc}")
        # the read and the computation both run in the executor (about 1.7 s CPU
        # for 20,000 orders, bench/kpis.py): never on the event loop
        figures = await db(lambda: kpi.compute(store.service_episodes(), start, to, date.today()))
        if "text/csv" in request.headers.get("Accept", ""):
            text = kpi.to_csv(figures, tuple(CATEGORY_TEXT))
            return web.Response(
                text=text, content_type="text/csv", charset="utf-8",
                headers={"Content-Disposition": f'attachment; filename="dxa-kpis-{start}-{to}.csv"'},
            )
        return _json(figures)

    app.add_routes([web.post("/api/worklist/{id}/justify", justify), web.get("/api/kpis", kpis)])
