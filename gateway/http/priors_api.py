"""HTTP: ``GET /api/priors/status`` -- prior lookups and backfill progress (README "Priors from the PACS")."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import orjson
from aiohttp import web

from gateway.config import PriorsSettings


def priors_status(store, settings: PriorsSettings) -> dict:
    """What the store says: lookups by state, prior studies by origin and state, backfill runs."""
    studies = store.prior_counts()
    backfill = studies.get("backfill", {})
    total = sum(backfill.values())
    done = sum(n for s, n in backfill.items() if s in ("retrieved", "failed", "mismatch"))
    return {
        "sources": [{"destination": s.destination, "method": s.method} for s in settings.sources],
        "lookups": store.lookup_counts(),
        "studies": studies,
        "backfill": {"studies": total, "done": done, "by_state": backfill, "runs": store.backfill_runs()},
    }


def register(app: web.Application, store, executor: Executor, settings: PriorsSettings) -> None:
    async def status(request: web.Request) -> web.Response:
        data = await asyncio.get_running_loop().run_in_executor(executor, priors_status, store, settings)
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    app.router.add_get("/api/priors/status", status)


class PriorsCollector:
    """Prometheus: prior lookups by state and prior studies by origin and state, read at scrape time."""

    def __init__(self, store) -> None:
        self.store = store

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        lookups = GaugeMetricFamily("dxagw_prior_lookups", "Prior lookups by state", labels=["state"])
        for state, n in sorted(self.store.lookup_counts().items()):
            lookups.add_metric([state], n)
        yield lookups
        studies = GaugeMetricFamily("dxagw_prior_studies", "Studies asked of the PACS by origin and state", labels=["origin", "state"])
        for origin, states in sorted(self.store.prior_counts().items()):
            for state, n in sorted(states.items()):
                studies.add_metric([origin, state], n)
        yield studies
