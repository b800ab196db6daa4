"""The exams aggregate of the store: BMD results, reports, study doses.

A mixin over the database contract of gateway/store/db.py (SQLite or
PostgreSQL); it uses ``_transaction``, ``_query``, ``_query_one``, and the
outbox's ``_enqueue`` and the audit's ``_audit``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Protocol

import orjson


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class ExamRow:
    id: int
    instance_id: int
    sop_instance_uid: str
    study_uid: str
    patient_id: str
    accession: str
    exam_date: str
    state: str  # parsed, unparsed
    reason: str
    exam: dict | None  # BmdExam.to_dict()
    analysis: dict | None  # classification, comparison, previous exam
    report_status: str  # P, F, C
    report_text: str
    reporter: str
    signed_at: str | None
    created_at: str
    updated_at: str
    settle_until: str | None = None  # state "settling": the report is drafted after this
    context: dict | None = None  # the radiographer's ClinicalContext (JSON)


@dataclass(frozen=True, slots=True)
class RenderedPayload:
    """One outbound payload of a released report version, as rendered at release."""

    destination: str
    format: str  # hl7-oru, fhir-bundle, fls-*, pdf, dicom-pdf
    control_id: str
    body: bytes
    sha256: str = ""


#: report_payloads.destination of a fracture liaison notification: "fls:<destination>"
FLS_PREFIX = "fls:"
#: report_payloads.destination of the version's PDF (every version has one, routed or not)
PDF_DOCUMENT = "document:pdf"
#: report_payloads.destination of its Encapsulated PDF for a ``report-pdf`` route: "report-pdf:<destination>"
REPORT_PDF_PREFIX = "report-pdf:"

#: Called inside the release transaction: (report id, released at) -> payloads.
Renderer = Callable[[int, str], Iterable[RenderedPayload]]


@dataclass(frozen=True, slots=True)
class ResultReading:
    """What one stored object gave the result reader."""

    instance_id: int
    sop_instance_uid: str
    state: str  # read, unparsed
    reason: str
    exam: dict | None  # BmdExam.to_dict() of this object alone


#: Instance kinds handed to the result reader when indexed (results_state "pending").
RESULT_KINDS = frozenset({"sr", "image", "dose"})


@dataclass(frozen=True, slots=True)
class ReportRow:
    id: int
    exam_id: int
    status: str
    text: str
    reporter: str
    released_at: str


class NoSuchExam(LookupError):
    pass


_COLUMNS = (
    "id, instance_id, sop_instance_uid, study_uid, patient_id, accession, exam_date, state, reason, exam, analysis,"
    " report_status, report_text, reporter, signed_at, created_at, updated_at, settle_until"
)


_SELECT = _COLUMNS + ", context"


def _exam_row(row: tuple) -> ExamRow:
    values = list(row)
    values[9] = orjson.loads(values[9]) if values[9] else None
    values[10] = orjson.loads(values[10]) if values[10] else None
    values[18] = orjson.loads(values[18]) if values[18] else None  # context
    return ExamRow(*values)


class ExamsAggregate(Protocol):
    """BMD exams, study doses, report versions and their payloads, the clinical context."""

    def add_exam(self, *, instance_id: int, sop_instance_uid: str, study_uid: str, patient_id: str, accession: str, exam_date: str, state: str, reason: str=..., exam: dict | None=..., analysis: dict | None=..., report_status: str=..., report_text: str=..., release: tuple[str, tuple[str, ...]] | None=..., render: Renderer | None=...) -> int: ...  # fmt: skip
    def release_report(self, exam_id: int, *, status: str, text: str, reporter: str, destinations: tuple[str, ...], render: Renderer | None=...) -> int: ...  # fmt: skip
    def get_exam(self, exam_id: int) -> ExamRow | None: ...  # fmt: skip
    def list_exams(self, *, patient_id: str | None=..., state: str | None=..., date: str | None=..., limit: int=...) -> list[ExamRow]: ...  # fmt: skip
    def report_queue(self, *, status: str = ..., date: str | None = ..., limit: int = ...) -> list[ExamRow]: ...  # fmt: skip
    def previous_exam(self, patient_id: str, before: str, exclude_id: int | None=...) -> ExamRow | None: ...  # fmt: skip
    def exam_for_study(self, study_uid: str) -> ExamRow | None: ...  # fmt: skip
    def get_report(self, report_id: int) -> ReportRow | None: ...  # fmt: skip
    def set_study_dose(self, study_uid: str, dose: dict) -> None: ...  # fmt: skip
    def study_dose(self, study_uid: str) -> dict | None: ...  # fmt: skip
    def update_exam_analysis(self, exam_id: int, *, exam: dict, analysis: dict, report_text: str) -> None: ...  # fmt: skip
    def report_payload(self, report_id: int, destination: str) -> RenderedPayload | None: ...  # fmt: skip
    def report_payloads(self, report_id: int) -> list[RenderedPayload]: ...  # fmt: skip
    def latest_report_pdf(self, exam_id: int) -> tuple[ReportRow, RenderedPayload | None] | None: ...  # fmt: skip
    def list_reports(self, exam_id: int) -> list[ReportRow]: ...  # fmt: skip
    def set_order_context(self, worklist_item_ids: Iterable[int], context: dict) -> None: ...  # fmt: skip
    def order_for_exam(self, study_uid: str, accession: str) -> tuple[dict | None, dict | None]: ...  # fmt: skip
    def set_exam_context(self, exam_id: int, context: dict, *, actor: str) -> None: ...  # fmt: skip
    def pending_results(self, after_id: int=..., limit: int=...) -> list[tuple[int, str]]: ...  # fmt: skip
    def results_state(self, instance_id: int) -> str | None: ...  # fmt: skip
    def set_results(self, instance_id: int, state: str, reason: str=..., exam: dict | None=...) -> None: ...  # fmt: skip
    def study_readings(self, study_uid: str) -> list[ResultReading]: ...  # fmt: skip
    def study_exam(self, study_uid: str) -> ExamRow | None: ...  # fmt: skip
    def save_study_exam(self, *, reading: tuple[int, str, str, dict | None], exam_id: int | None, values: dict, release: tuple[str, tuple[str, ...]] | None=..., render: Renderer | None=...) -> int: ...  # fmt: skip
    def draft_exam(self, exam_id: int, *, values: dict, release: tuple[str, tuple[str, ...]] | None=..., render: Renderer | None=...) -> None: ...  # fmt: skip
    def settling_exams(self) -> list[ExamRow]: ...  # fmt: skip


class ExamStore:
    def add_exam(
        self,
        *,
        instance_id: int,
        sop_instance_uid: str,
        study_uid: str,
        patient_id: str,
        accession: str,
        exam_date: str,
        state: str,
        reason: str = "",
        exam: dict | None = None,
        analysis: dict | None = None,
        report_status: str = "",
        report_text: str = "",
        release: tuple[str, tuple[str, ...]] | None = None,
        render: Renderer | None = None,
    ) -> int:
        """Keep an exam (parsed or not); ``release`` = (reporter, destinations) releases it now, as ``report_status``."""
        now = _now()
        with self._transaction() as conn:
            exam_id = conn.execute(
                f"INSERT INTO exams ({_COLUMNS.replace('id, ', '', 1)}) VALUES ({', '.join('?' * 17)})",
                (
                    instance_id, sop_instance_uid, study_uid, patient_id, accession, exam_date, state, reason,
                    orjson.dumps(exam) if exam is not None else None,
                    orjson.dumps(analysis) if analysis is not None else None,
                    report_status, report_text, "", None, now, now, None,
                ),
            ).lastrowid
            if release is not None:
                reporter, destinations = release
                self._release(conn, exam_id, report_status or "P", report_text, reporter, destinations, study_uid, now, render)
            self._audit(conn, now, "exam.create", "gateway", {"exam": exam_id, "state": state})
        return exam_id

    def _release(
        self, conn, exam_id: int, status: str, text: str, reporter: str, destinations, study_uid: str, now: str, render: Renderer | None = None
    ) -> int:
        """The report version, its outbound payloads (rendered now, with their
        sha256: docs/architecture.md rule 9) and its outbox rows, in one transaction."""
        conn.execute(
            "UPDATE exams SET report_status = ?, report_text = ?, reporter = ?, signed_at = ?, updated_at = ? WHERE id = ?",
            (status, text, reporter, now, now, exam_id),
        )
        report_id = conn.execute(
            "INSERT INTO reports (exam_id, status, text, reporter, released_at) VALUES (?, ?, ?, ?, ?)",
            (exam_id, status, text, reporter, now),
        ).lastrowid
        fls: list[str] = []
        pdf_to: list[str] = []
        if render is not None:
            for p in render(report_id, now):
                conn.execute(
                    "INSERT INTO report_payloads (report_id, destination, format, control_id, body, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (report_id, p.destination, p.format, p.control_id, p.body, hashlib.sha256(p.body).hexdigest(), now),
                )
                if p.destination.startswith(FLS_PREFIX):  # a fracture liaison notification (gateway/fls.py)
                    fls.append(p.destination[len(FLS_PREFIX):])
                elif p.destination.startswith(REPORT_PDF_PREFIX):  # an Encapsulated PDF for the PACS
                    pdf_to.append(p.destination[len(REPORT_PDF_PREFIX):])
        self._enqueue(conn, tuple(destinations), "report", "reports", report_id, study_uid or f"exam-{exam_id}", now)
        self._enqueue(conn, tuple(fls), "fls", "reports", report_id, study_uid or f"exam-{exam_id}", now)
        self._enqueue(conn, tuple(pdf_to), "report-pdf", "reports", report_id, study_uid or f"exam-{exam_id}", now)
        return report_id

    def release_report(
        self, exam_id: int, *, status: str, text: str, reporter: str, destinations: tuple[str, ...], render: Renderer | None = None
    ) -> int:
        """A final (F) or corrected (C) report version, its payloads rendered by
        ``render`` and stored, queued for the routes."""
        now = _now()
        with self._transaction() as conn:
            row = conn.execute("SELECT study_uid FROM exams WHERE id = ?", (exam_id,)).fetchone()
            if row is None:
                raise NoSuchExam(exam_id)
            report_id = self._release(conn, exam_id, status, text, reporter, destinations, row[0], now, render)
            self._audit(conn, now, f"report.{'final' if status == 'F' else 'corrected'}", reporter, {"exam": exam_id, "report": report_id})
        return report_id

    def get_exam(self, exam_id: int) -> ExamRow | None:
        row = self._query_one(f"SELECT {_SELECT} FROM exams WHERE id = ?", (exam_id,))
        return _exam_row(row) if row else None

    def list_exams(self, *, patient_id: str | None = None, state: str | None = None, date: str | None = None, limit: int = 100) -> list[ExamRow]:
        where, args = [], []
        for column, value in (("patient_id", patient_id), ("state", state), ("exam_date", date)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {_SELECT} FROM exams" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return [_exam_row(r) for r in self._query(sql, (*args, limit))]

    def report_queue(self, *, status: str = "P", date: str | None = None, limit: int = 500) -> list[ExamRow]:
        """Parsed exams by report status (P: not yet signed; "" every one), oldest first (the workbench's queue)."""
        where, args = ["state = 'parsed'"], []
        if status == "P":
            where.append("COALESCE(report_status, '') IN ('', 'P')")
        elif status:
            where.append("report_status = ?")
            args.append(status)
        if date:
            where.append("exam_date = ?")
            args.append(date)
        sql = f"SELECT {_SELECT} FROM exams WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT ?"
        return [_exam_row(r) for r in self._query(sql, (*args, limit))]

    def previous_exam(self, patient_id: str, before: str, exclude_id: int | None = None) -> ExamRow | None:
        """The patient's latest parsed exam (or prior from the PACS) dated before ``before`` (DA)."""
        row = self._query_one(
            f"SELECT {_SELECT} FROM exams WHERE patient_id = ? AND state IN ('parsed', 'prior') AND exam_date < ? AND id != ?"
            " ORDER BY exam_date DESC, id DESC LIMIT 1",
            (patient_id, before, exclude_id or -1),
        )
        return _exam_row(row) if row else None

    def exam_for_study(self, study_uid: str) -> ExamRow | None:
        row = self._query_one(f"SELECT {_SELECT} FROM exams WHERE study_uid = ? AND state = 'parsed' ORDER BY id DESC LIMIT 1", (study_uid,))
        return _exam_row(row) if row else None

    def get_report(self, report_id: int) -> ReportRow | None:
        row = self._query_one("SELECT id, exam_id, status, text, reporter, released_at FROM reports WHERE id = ?", (report_id,))
        return ReportRow(*row) if row else None

    def set_study_dose(self, study_uid: str, dose: dict) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO study_doses (study_uid, dose) VALUES (?, ?) ON CONFLICT (study_uid) DO UPDATE SET dose = excluded.dose",
                (study_uid, orjson.dumps(dose)),
            )

    def study_dose(self, study_uid: str) -> dict | None:
        row = self._query_one("SELECT dose FROM study_doses WHERE study_uid = ?", (study_uid,))
        return orjson.loads(row[0]) if row else None

    def update_exam_analysis(self, exam_id: int, *, exam: dict, analysis: dict, report_text: str) -> None:
        now = _now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE exams SET exam = ?, analysis = ?, report_text = ?, updated_at = ? WHERE id = ?",
                (orjson.dumps(exam), orjson.dumps(analysis), report_text, now, exam_id),
            )

    # -- what was released, and the clinical context ---------------------------------

    def report_payload(self, report_id: int, destination: str) -> RenderedPayload | None:
        """The payload rendered for ``destination`` when the version was released."""
        row = self._query_one(
            "SELECT destination, format, control_id, body, sha256 FROM report_payloads WHERE report_id = ? AND destination = ?",
            (report_id, destination),
        )
        return RenderedPayload(row[0], row[1], row[2], bytes(row[3]), row[4]) if row else None

    def report_payloads(self, report_id: int) -> list[RenderedPayload]:
        rows = self._query("SELECT destination, format, control_id, body, sha256 FROM report_payloads WHERE report_id = ? ORDER BY id", (report_id,))
        return [RenderedPayload(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def latest_report_pdf(self, exam_id: int) -> tuple[ReportRow, RenderedPayload | None] | None:
        """The exam's latest released version and its PDF (None for a version
        released before PDFs were rendered); None when nothing was released."""
        row = self._query_one(
            "SELECT id, exam_id, status, text, reporter, released_at FROM reports WHERE exam_id = ? ORDER BY id DESC LIMIT 1", (exam_id,)
        )
        if row is None:
            return None
        return ReportRow(*row), self.report_payload(row[0], PDF_DOCUMENT)

    def list_reports(self, exam_id: int) -> list[ReportRow]:
        rows = self._query("SELECT id, exam_id, status, text, reporter, released_at FROM reports WHERE exam_id = ? ORDER BY id", (exam_id,))
        return [ReportRow(*r) for r in rows]

    def set_order_context(self, worklist_item_ids: Iterable[int], context: dict) -> None:
        """The clinical context an order carried, kept with its worklist items."""
        now = _now()
        with self._transaction() as conn:
            for item_id in worklist_item_ids:
                conn.execute(
                    "INSERT INTO order_contexts (worklist_item_id, context, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (worklist_item_id) DO UPDATE SET context = excluded.context, updated_at = excluded.updated_at",
                    (item_id, orjson.dumps(context), now),
                )

    def order_for_exam(self, study_uid: str, accession: str) -> tuple[dict | None, dict | None]:
        """(worklist item JSON, order context JSON) of the order an exam answers:
        matched by Study Instance UID, else by accession number."""
        for column, value in (("study_uid", study_uid), ("accession", accession)):
            if not value:
                continue
            row = self._query_one(
                f"SELECT w.item, c.context FROM worklist_items w LEFT JOIN order_contexts c ON c.worklist_item_id = w.id"
                f" WHERE w.{column} = ? ORDER BY w.id DESC LIMIT 1",
                (value,),
            )
            if row:
                return orjson.loads(row[0]), (orjson.loads(row[1]) if row[1] else None)
        return None, None

    def set_exam_context(self, exam_id: int, context: dict, *, actor: str) -> None:
        """The radiographer's clinical context for an exam (audited)."""
        now = _now()
        with self._transaction() as conn:
            if conn.execute("UPDATE exams SET context = ?, updated_at = ? WHERE id = ?", (orjson.dumps(context), now, exam_id)).rowcount == 0:
                raise NoSuchExam(exam_id)
            self._audit(conn, now, "exam.context", actor, {"exam": exam_id, "keys": sorted(k for k, v in context.items() if v not in (None, "", []))})

    # -- the result reader's hand-off (instances.results_state) and study exams ---------

    def pending_results(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
        """(instance id, kind) of objects not yet read, oldest first, after ``after_id``."""
        return [(r[0], r[1]) for r in self._query(
            "SELECT id, kind FROM instances WHERE results_state = 'pending' AND id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )]  # fmt: skip

    def results_state(self, instance_id: int) -> str | None:
        row = self._query_one("SELECT results_state FROM instances WHERE id = ?", (instance_id,))
        return row[0] if row else None

    def set_results(self, instance_id: int, state: str, reason: str = "", exam: dict | None = None) -> None:
        """Record what the reader found in an object that changes no exam (none, a dose)."""
        with self._transaction() as conn:
            self._set_results(conn, instance_id, state, reason, exam)

    @staticmethod
    def _set_results(conn, instance_id: int, state: str, reason: str, exam: dict | None) -> None:
        conn.execute(
            "UPDATE instances SET results_state = ?, results_reason = ?, results = ? WHERE id = ?",
            (state, reason[:300], orjson.dumps(exam) if exam is not None else None, instance_id),
        )

    def study_readings(self, study_uid: str) -> list[ResultReading]:
        """Every current object of the study the reader read or could not read, in arrival order."""
        rows = self._query(
            "SELECT id, sop_instance_uid, results_state, results_reason, results FROM instances"
            " WHERE study_uid = ? AND is_current = 1 AND results_state IN ('read', 'unparsed') ORDER BY id",
            (study_uid,),
        )
        return [ResultReading(r[0], r[1], r[2], r[3], orjson.loads(r[4]) if r[4] else None) for r in rows]

    def study_exam(self, study_uid: str) -> ExamRow | None:
        """The study's exam in any state (one per study since schema 6; the latest for older data)."""
        row = self._query_one(f"SELECT {_SELECT} FROM exams WHERE study_uid = ? ORDER BY id DESC LIMIT 1", (study_uid,))
        return _exam_row(row) if row else None

    def save_study_exam(
        self,
        *,
        reading: tuple[int, str, str, dict | None],
        exam_id: int | None,
        values: dict,
        release: tuple[str, tuple[str, ...]] | None = None,
        render: Renderer | None = None,
    ) -> int:
        """One commit: the object's reading (instance id, state, reason, exam) and its study's exam.

        ``values`` are exams columns (state, reason, exam, analysis, report_status,
        report_text, settle_until, and on insert the identifying columns).
        A crash before this commit leaves the object pending, read again at start.
        """
        now = _now()
        cols = dict(values)
        for key in ("exam", "analysis"):
            if key in cols:
                cols[key] = orjson.dumps(cols[key]) if cols[key] is not None else None
        with self._transaction() as conn:
            self._set_results(conn, *reading)
            if exam_id is None:
                cols.setdefault("report_status", "")
                cols.setdefault("report_text", "")
                cols.update(reporter="", signed_at=None, created_at=now, updated_at=now)
                names = ", ".join(cols)
                exam_id = conn.execute(f"INSERT INTO exams ({names}) VALUES ({', '.join('?' * len(cols))})", tuple(cols.values())).lastrowid
                self._audit(conn, now, "exam.create", "gateway", {"exam": exam_id, "state": cols.get("state")})
            else:
                cols["updated_at"] = now
                conn.execute(f"UPDATE exams SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?", (*cols.values(), exam_id))
            if release is not None:
                reporter, destinations = release
                study_uid = conn.execute("SELECT study_uid FROM exams WHERE id = ?", (exam_id,)).fetchone()[0]
                self._release(conn, exam_id, cols.get("report_status") or "P", cols.get("report_text", ""), reporter, destinations, study_uid, now, render)
        return exam_id

    def draft_exam(
        self, exam_id: int, *, values: dict, release: tuple[str, tuple[str, ...]] | None = None, render: Renderer | None = None
    ) -> None:
        """The settle window is over: the exam becomes parsed with its drafted report
        (and, with ``release``, its released version -- as ``report_status`` -- and
        payloads in the same commit)."""
        with self._transaction() as conn:
            now = _now()
            cols = {**values, "exam": orjson.dumps(values["exam"]), "analysis": orjson.dumps(values["analysis"]), "updated_at": now}
            conn.execute(f"UPDATE exams SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?", (*cols.values(), exam_id))
            if release is not None:
                reporter, destinations = release
                study_uid = conn.execute("SELECT study_uid FROM exams WHERE id = ?", (exam_id,)).fetchone()[0]
                self._release(conn, exam_id, values.get("report_status") or "P", values["report_text"], reporter, destinations, study_uid, now, render)

    def settling_exams(self) -> list[ExamRow]:
        """Exams waiting for their settle window, soonest first."""
        return [_exam_row(r) for r in self._query(f"SELECT {_SELECT} FROM exams WHERE state = 'settling' ORDER BY settle_until, id")]
