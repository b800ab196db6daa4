"""HTTP: BMD exams and their reports (list, read, sign or amend)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import orjson
from aiohttp import web

from gateway.exams import ExamService, SignError
from gateway.store.exams import ExamRow, NoSuchExam


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
        "report": {"status": row.report_status or None, "reporter": row.reporter or None, "signed_at": row.signed_at},
        "created_at": row.created_at,
        "settle_until": row.settle_until,  # state "settling": the report is drafted after this
    }


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
        """Release the report: {"reporter": name} makes it final; after that,
        {"reporter": name, "amendment": text} makes a corrected report."""
        n = exam_id(request)
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("reporter", ""), str) or not isinstance(body.get("amendment", ""), str):
            return _json({"error": 'send {"reporter": "...", "amendment": "..."}'}, 400)
        try:
            report_id = await db(service.sign, n, body.get("reporter", ""), body.get("amendment", ""))
        except NoSuchExam:
            return _json({"error": "no such exam"}, 404)
        except SignError as exc:
            return _json({"error": str(exc)}, exc.status)
        row = await db(store.get_exam, n)
        return _json({"report": report_id, "status": row.report_status, "exam": n}, 201)

    app.add_routes(
        [
            web.get("/api/exams", list_exams),
            web.get("/api/exams/{id}", get_exam),
            web.get("/api/exams/{id}/report", get_report),
            web.post("/api/exams/{id}/sign", sign),
        ]
    )
