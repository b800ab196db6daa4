"""HTTP: what the reporting workbench shows of an exam -- its images, trend and PDF.

The pages (gateway/http, the workbench) put these in ``<img>`` and ``<a>``:

- ``GET /api/exams/{id}/images``: JSON list of the study's stored images
  that have pixel data (Hologic report images / Secondary Captures, GE
  images...), each with the ``url`` of its PNG;
- ``GET /api/exams/{id}/images/{sop_instance_uid}.png[?frame=n][&annotations=none]``:
  the image rendered by mappings/image_png.py, with the graphics of the
  study's presentation states that reference it (404 not in the study, 422
  cannot be rendered);
- ``GET /api/exams/{id}/trend.svg``: BMD per site for this exam and the
  patient's earlier ones in the store (mappings/bmd/trend_svg.py), with the
  LSC band of ``reports.lsc_*``;
- ``GET /api/exams/{id}/report.pdf``: the latest released version's PDF,
  the bytes stored at release (docs/architecture.md rule 9).

Each successful read is audited (``exam.read``: who, which exam, what;
an ATNA Patient Record read).  Files are read and decoded in the executor.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import Awaitable, Callable

import orjson
from aiohttp import web
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from gateway.exams import ExamService
from gateway.http import auth
from gateway.logs import fields
from gateway.store.exams import ExamRow
from mappings.bmd.models import BmdExam
from mappings.instances import text_value
from mappings.bmd.trend_svg import trend_sites, trend_svg
from mappings.gsps import applies_to
from mappings.image_png import ImageError, render_png
from mappings.instances import valid_uid
from mappings.priors import prior_identity_problem

log = logging.getLogger("gateway.http.exam_views")

AuditFn = Callable[[str, str, dict], Awaitable[None]]
PRESENTATION_STATES = "1.2.840.10008.5.1.4.1.1.11."  # PS3.4 B.5: no pixels of their own
HEADER_TAGS = ["Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation", "SeriesDescription",
               "Laterality", "ImageLaterality", "InstanceNumber", "SeriesNumber", "PixelData"]  # fmt: skip


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _header(path: Path) -> dict | None:
    """What the image list says of one file (pixel data left on disk), or None without pixels."""
    ds = dcmread(path, defer_size="1 KB", specific_tags=HEADER_TAGS)
    if "PixelData" not in ds:
        return None

    def num(keyword: str) -> int | None:
        value = ds.get(keyword)
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    return {
        "rows": num("Rows"),
        "columns": num("Columns"),
        "frames": num("NumberOfFrames") or 1,
        "photometric_interpretation": text_value(ds, "PhotometricInterpretation") or None,
        "series_description": text_value(ds, "SeriesDescription") or None,
        "series_number": num("SeriesNumber"),
        "instance_number": num("InstanceNumber"),
        "laterality": text_value(ds, "Laterality") or text_value(ds, "ImageLaterality") or None,
    }


def _presentation_states(paths: list[Path], sop_uid: str, frame: int) -> list:
    """The study's presentation states that reference this image's frame (an unreadable one is skipped)."""
    out = []
    for path in paths:
        try:
            ps = dcmread(path)
        except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
            log.warning("exam_views.presentation_state_unreadable", extra=fields(reason=type(exc).__name__))
            continue
        if applies_to(ps, sop_uid, frame + 1):
            out.append(ps)
    return out


def _render(path: Path, frame: int, sop_uid: str, state_paths: list[Path]) -> bytes:
    try:
        ds = dcmread(path)
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ImageError(f"the stored object cannot be read: {type(exc).__name__}") from None
    return render_png(ds, frame, _presentation_states(state_paths, sop_uid, frame))


def register(app: web.Application, service: ExamService, executor: Executor, audit: AuditFn | None = None) -> None:
    store = service.store
    data_dir = service.data_dir

    async def db(fn, *args, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: fn(*args, **kw))

    async def read_audit(request: web.Request, row: ExamRow, what: str, **more) -> None:
        if audit is None:
            return
        try:
            await audit("exam.read", auth.actor(request), {"exam": row.id, "patient_id": row.patient_id, "what": what, **more})
        except Exception:
            log.exception("exam_views.audit_failed")

    async def exam_row(request: web.Request) -> ExamRow | None:
        try:
            n = int(request.match_info["id"])
        except ValueError:
            return None
        return await db(store.get_exam, n)

    def images_of(row: ExamRow):
        return [i for i in store.study_instances(row.study_uid, ("image",)) if not i.record.sop_class_uid.startswith(PRESENTATION_STATES)]

    def states_of(row: ExamRow) -> list[Path]:
        return [data_dir / i.record.path for i in store.study_instances(row.study_uid, ("image",)) if i.record.sop_class_uid.startswith(PRESENTATION_STATES)]

    async def list_images(request: web.Request) -> web.Response:
        row = await exam_row(request)
        if row is None:
            return _json({"error": "no such exam"}, 404)
        out = []
        for inst in await db(images_of, row):
            try:
                header = await db(_header, data_dir / inst.record.path)
            except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
                log.warning("exam_views.unreadable", extra=fields(exam=row.id, instance=inst.id, reason=type(exc).__name__))
                continue
            if header is None:
                continue
            uid = inst.record.sop_instance_uid
            out.append({
                "sop_instance_uid": uid,
                "series_instance_uid": inst.record.series_uid,
                "sop_class_uid": inst.record.sop_class_uid,
                "modality": inst.record.modality,
                "manufacturer": inst.record.manufacturer,
                "received_at": inst.received_at,
                "url": f"/api/exams/{row.id}/images/{uid}.png",
                **header,
            })  # fmt: skip
        await read_audit(request, row, "images")
        return _json(out)

    async def image_png(request: web.Request) -> web.Response:
        row = await exam_row(request)
        if row is None:
            return _json({"error": "no such exam"}, 404)
        uid = request.match_info["sop_instance_uid"]
        if not valid_uid(uid):
            return _json({"error": "not a SOP Instance UID"}, 404)
        try:
            frame = int(request.query.get("frame", "1")) - 1
        except ValueError:
            return _json({"error": "frame is a whole number from 1"}, 400)
        match = [i for i in await db(images_of, row) if i.record.sop_instance_uid == uid]
        if not match:
            return _json({"error": "no image with this SOP Instance UID in the exam's study"}, 404)
        inst = match[-1]
        # the scanner's regions of interest in its presentation states, unless ?annotations=none
        states = [] if request.query.get("annotations") == "none" else await db(states_of, row)
        try:
            png = await db(_render, data_dir / inst.record.path, frame, uid, states)
        except FileNotFoundError:
            log.warning("exam_views.file_missing", extra=fields(exam=row.id, instance=inst.id))
            return _json({"error": "the stored file of this image is missing"}, 404)
        except ImageError as exc:
            log.info("exam_views.not_rendered", extra=fields(exam=row.id, instance=inst.id, reason=str(exc)))
            return _json({"error": f"the image cannot be rendered: {exc}"}, 422)
        await read_audit(request, row, "image", sop_instance_uid=uid)
        return web.Response(body=png, content_type="image/png")

    def trend_of(row: ExamRow) -> str:
        current = BmdExam.from_dict(row.exam)
        earlier = []
        for other in store.list_exams(patient_id=row.patient_id, limit=1000):
            if other.id == row.id or other.state not in ("parsed", "prior") or not other.exam:
                continue
            prior = BmdExam.from_dict(other.exam)
            if prior_identity_problem(current, prior):  # the same ID, another patient (README "Priors from the PACS"): never drawn
                continue
            earlier.append(prior)
        sites = trend_sites(current, earlier, lsc=service.lsc, cross_calibrated=service.settings.cross_calibrated)
        day = current.exam_date
        return trend_svg(sites, title=f"BMD by site, {day[:4]}-{day[4:6]}-{day[6:8]} and earlier exams" if len(day) == 8 else "BMD by site")

    async def trend(request: web.Request) -> web.Response:
        row = await exam_row(request)
        if row is None:
            return _json({"error": "no such exam"}, 404)
        if row.state not in ("parsed", "prior") or not row.exam:
            return _json({"error": "the exam has no results to plot"}, 404)
        svg = await db(trend_of, row)
        await read_audit(request, row, "trend")
        return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")

    async def report_pdf(request: web.Request) -> web.Response:
        row = await exam_row(request)
        if row is None:
            return _json({"error": "no such exam"}, 404)
        found = await db(store.latest_report_pdf, row.id)
        if found is None:
            return _json({"error": "no released report for this exam"}, 404)
        version, pdf = found
        if pdf is None:
            return _json({"error": "this version was released before report PDFs were rendered"}, 404)
        await read_audit(request, row, "report.pdf", report=version.id)
        return web.Response(
            body=pdf.body, content_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="dxa-report-{row.id}-{version.id}.pdf"', "ETag": f'"{pdf.sha256}"'},
        )  # fmt: skip

    app.add_routes(
        [
            web.get("/api/exams/{id}/images", list_images),
            web.get("/api/exams/{id}/images/{sop_instance_uid}.png", image_png),
            web.get("/api/exams/{id}/trend.svg", trend),
            web.get("/api/exams/{id}/report.pdf", report_pdf),
        ]
    )
