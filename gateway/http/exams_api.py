"""HTTP: BMD exams and their reports (list, read, clinical context, sign or amend)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import orjson
from aiohttp import web

from gateway.exams import Actor, ExamService, SignError
from gateway.http import auth
from gateway.store.exams import ExamRow, NoSuchExam
from mappings.clinical_context import ContextError


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def exam_json(row: ExamRow) -> dict:
    return {
        "id": row.id,
        "state": row.state,
        "reason": row.reason or None,
        "study_instance_uid": row.study_uid,
        "sop_instance_uid": row.sop_instance_uid,
        "accession_number": row.accession,
        "patient_id": row.patient_id,
        "exam_date": row.exam_date,
        "exam": row.exam,
        "classification": (row.analysis or {}).get("classification"),
        "comparison": (row.analysis or {}).get("comparison"),
        "previous_exam": (row.analysis or {}).get("previous_exam"),
        "dose": (row.exam or {}).get("dose"),
        "dose_check": (row.analysis or {}).get("dose"),  # against dose.reference_levels (mappings/bmd/drl.py)
        "report": {"status": row.report_status or None, "reporter": row.reporter or None, "signed_at": row.signed_at},
        "context": (row.analysis or {}).get("context"),
        "radiographer_context": row.context,
        "created_at": row.created_at,
        "settle_until": row.settle_until,  # state "settling": the report is drafted after this
    }


def actor_of(request: web.Request, body: dict) -> Actor:
    """Who is calling: the one place a signer's or editor's name is built.

    The name is the authenticated identity's (its display name and
    registration, docs/architecture.md rule 8), never one the caller typed; ``role`` is
    the professional role the caller states for the report ("Consultant
    radiologist"), a free text shown beside the name.
    """
    who = auth.identity(request)
    role = body.get("role", "")
    return Actor(who.reporter, role if isinstance(role, str) else "", who.name)


def register(app: web.Application, service: ExamService, executor: Executor) -> None:
    store = service.store

    async def db(fn, *args, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: fn(*args, **kw))

    def exam_id(request: web.Request) -> int | None:
        try:
            return int(request.match_info["id"])
        except ValueError:
            return None

    async def list_exams(request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = min(int(q.get("limit", "100")), 1000)
        except ValueError:
            return _json({"error": "limit is a whole number"}, 400)
        rows = await db(store.list_exams, patient_id=q.get("patient"), state=q.get("state"), date=(q.get("date") or "").replace("-", "") or None, limit=limit)
        return _json([exam_json(r) for r in rows])

    async def get_exam(request: web.Request) -> web.Response:
        n = exam_id(request)
        row = await db(store.get_exam, n) if n is not None else None
        if row is None:
            return _json({"error": "no such exam"}, 404)
        return _json(exam_json(row))

    async def get_report(request: web.Request) -> web.Response:
        n = exam_id(request)
        row = await db(store.get_exam, n) if n is not None else None
        if row is None or row.state != "parsed":
            return _json({"error": "no report for this exam"}, 404)
        return web.Response(text=row.report_text, content_type="text/plain", charset="utf-8")

    async def sign(request: web.Request) -> web.Response:
        """Release the report under the caller's identity (its display name and
        registration): ``{}`` makes it final; after that, ``{"amendment": text}``
        makes a corrected report.  ``reports.reporters`` limits who may sign."""
        n = exam_id(request)
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _json({"error": "the body is not JSON"}, 400)
        texts = ("amendment", "comment", "role")
        if not isinstance(body, dict) or not all(isinstance(body.get(k, ""), str) for k in texts) or not isinstance(body.get("early_repeat", False), bool):
            return _json({"error": 'send {"role": "...", "comment": "...", "amendment": "...", "early_repeat": false}'}, 400)
        if "reporter" in body:
            return _json({"error": "the reporter is the signed-in identity; do not send one"}, 400)
        if n is None:
            return _json({"error": "no such exam"}, 404)
        who = auth.identity(request)
        if service.settings.reporters and who.name not in service.settings.reporters:
            return _json({"error": f"{who.name} is not one of reports.reporters"}, 403)
        actor = actor_of(request, body)
        try:
            report_id = await db(
                service.sign, n, actor, body.get("amendment", ""), comment=body.get("comment", ""), early_repeat=body.get("early_repeat", False)
            )
        except NoSuchExam:
            return _json({"error": "no such exam"}, 404)
        except SignError as exc:
            return _json({"error": str(exc)}, exc.status)
        row = await db(store.get_exam, n)
        return _json({"report": report_id, "status": row.report_status, "exam": n, "reporter": row.reporter}, 201)

    async def put_context(request: web.Request) -> web.Response:
        """The radiographer's clinical context: fragility_fracture,
        vertebral_fracture, forearm_indicated, hyperparathyroidism, menopausal,
        glucocorticoids, over_table_limit (true/false/null), height_cm,
        weight_kg, indication, vfa_result, fracture_history, risk_factors,
        technical_notes.  The radiographer is the signed-in identity.  Merged
        over what was given before; the exam is analysed again."""
        n = exam_id(request)
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "send a JSON object"}, 400)
        if n is None:
            return _json({"error": "no such exam"}, 404)
        actor = actor_of(request, body)
        if "radiographer" in body:
            return _json({"error": "the radiographer is the signed-in identity; do not send one"}, 400)
        data = {k: v for k, v in body.items() if k != "role"}
        try:
            context = await db(service.set_context, n, data, actor)
        except NoSuchExam:
            return _json({"error": "no such exam"}, 404)
        except ContextError as exc:
            return _json({"error": str(exc), "key": exc.key}, 422)
        except SignError as exc:
            return _json({"error": str(exc)}, exc.status)
        row = await db(store.get_exam, n)
        return _json({"exam": n, "radiographer_context": context, "classification": (row.analysis or {}).get("classification")})

    async def list_reports(request: web.Request) -> web.Response:
        """Every released version, with the sha256 of each payload sent for it."""
        n = exam_id(request)
        row = await db(store.get_exam, n) if n is not None else None
        if row is None:
            return _json({"error": "no such exam"}, 404)
        versions = await db(store.list_reports, n)
        out = []
        for v in versions:
            payloads = await db(store.report_payloads, v.id)
            out.append(
                {
                    "report": v.id, "status": v.status, "reporter": v.reporter, "released_at": v.released_at,
                    "payloads": [{"destination": p.destination, "format": p.format, "control_id": p.control_id, "sha256": p.sha256} for p in payloads],
                }
            )  # fmt: skip
        return _json(out)

    app.add_routes(
        [
            web.get("/api/exams", list_exams),
            web.get("/api/exams/{id}", get_exam),
            web.get("/api/exams/{id}/report", get_report),
            web.get("/api/exams/{id}/reports", list_reports),
            web.put("/api/exams/{id}/context", put_context),
            web.post("/api/exams/{id}/sign", sign),
        ]
    )
