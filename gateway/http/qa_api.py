"""HTTP: scanner QA from phantom scans (README "Running a DXA service").

``GET /api/qa`` every scanner's status; ``GET /api/qa/{serial}`` its series
(the control chart).  Roles: gateway/security/roles.py.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import orjson
from aiohttp import web

from gateway.qa import QaService


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def register(app: web.Application, qa: QaService, executor: Executor) -> None:
    async def db(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args))

    async def overview(request: web.Request) -> web.Response:
        return _json(await db(qa.overview))

    async def series(request: web.Request) -> web.Response:
        found = await db(qa.series, request.match_info["serial"])
        if found is None:
            return _json({"error": "no phantom scans of this scanner"}, status=404)
        return _json(found)

    app.router.add_get("/api/qa", overview)
    app.router.add_get("/api/qa/{serial}", series)
