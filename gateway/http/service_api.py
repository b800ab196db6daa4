"""HTTP: running a DXA service -- justify a held order, the service KPIs.

``ROLES`` names the role each route needs (the token roles of the HTTP
auth: orders, radiographer, reporter, admin, viewer, metrics).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import orjson
from aiohttp import web

from datetime import date, timedelta

from gateway.entitlement import Entitlement
from gateway.logs import fields
from gateway.store import Store
from mappings import kpis as kpi
from mappings.bmd.classify import CATEGORY_TEXT

log = logging.getLogger("gateway.http")

# Which role each route needs.  Justifying an exposure is the IR(ME)R
# practitioner's act (a reporting radiologist or radiographer): "reporter".
ROLES: dict[tuple[str, str], str] = {
    ("POST", "/api/worklist/{id}/justify"): "reporter",
    ("GET", "/api/kpis"): "viewer",
}


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
        """Release a HELD order: body {"practitioner": id, "note": text}."""
        try:
            row_id = int(request.match_info["id"])
        except ValueError:
            return _problem(404, "no such worklist item")
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _problem(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("practitioner"), str) or not body["practitioner"].strip():
            return _problem(422, "practitioner (the justifying practitioner's register id) is required")
        note = body.get("note", "")
        if not isinstance(note, str):
            return _problem(422, "note must be text")
        practitioner = body["practitioner"].strip()
        problem = await db(entitlement.practitioner_problem, practitioner)
        if problem:
            log.warning("api.justify_refused", extra=fields(id=row_id, reason=problem))
            return _problem(403, f"practitioner cannot justify: {problem}")
        actor = request.headers.get("X-Actor", request.remote or "api")
        outcome = await db(store.justify_worklist_item, row_id, actor=actor, practitioner=practitioner, note=note)
        if outcome == "not found":
            return _problem(404, "no such worklist item")
        if outcome:
            return _problem(409, f"the item is {outcome}; only HELD items are justified")
        log.info("api.worklist_justified", extra=fields(id=row_id))
        return _json({"id": row_id, "status": "SCHEDULED"})

    async def kpis(request: web.Request) -> web.Response:
        """The service KPIs (seed 001): JSON, or CSV with Accept: text/csv."""
        try:
            start, to = _range(request.query)
        except ValueError as exc:
            return _problem(400, f"from and to are dates (YYYY-MM-DD): {exc}")
        episodes = await db(store.service_episodes)
        figures = kpi.compute(episodes, start, to, date.today())
        if "text/csv" in request.headers.get("Accept", ""):
            text = kpi.to_csv(figures, tuple(CATEGORY_TEXT))
            return web.Response(
                text=text, content_type="text/csv", charset="utf-8",
                headers={"Content-Disposition": f'attachment; filename="dxa-kpis-{start}-{to}.csv"'},
            )
        return _json(figures)

    app.add_routes([web.post("/api/worklist/{id}/justify", justify), web.get("/api/kpis", kpis)])
