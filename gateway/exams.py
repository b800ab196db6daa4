"""BMD exams: from stored result objects to a released report in the outbox.

Every SR, image and dose SR is indexed with ``results_state = pending`` in
the commit that acknowledges it; :class:`ExamService` has each read from the
spool by the result reader process (gateway/sr_reader.py), which extracts a
``BmdExam`` (mappings/bmd) from whatever carrier the object has (SR content,
Hologic report text, GE Image Comments XML).  All result-bearing objects of
a study make one exam (mappings/bmd/merge.py), updated as later objects
arrive; the report is drafted ``reports.settle_seconds`` after the last one
(state ``settling`` until then).  Pending objects and settling exams are
taken up again at start, so nothing acknowledged is lost to a crash.  The
service classifies the exam with the clinical context (from the order, and
from the radiographer), compares it with the patient's previous exam and
writes the report text.  The report is preliminary until a reporter signs
it (or ``reports.auto_release``).  Each released version (final, then
corrected) has its outbound payloads -- the ORU^R01 for HL7 destinations,
the FHIR Bundle for FHIR ones, the PDF of the report (for download and the
Bundle's ``presentedForm``) and its DICOM Encapsulated PDF for ``report-pdf``
routes -- rendered once, in the same commit as the version and its outbox
rows, and stored with their sha256: every delivery attempt sends exactly
those bytes (docs/architecture.md rule 9).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, Mapping

import yaml

from gateway.config import DoseSettings, ReportsSettings
from gateway.fls import FlsNotifier
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.sr_reader import ReaderFailed, SrReader, SrReading, read_dose_sr, read_results
from gateway.store.exams import PDF_DOCUMENT, REPORT_PDF_PREFIX, ExamRow, NoSuchExam, RenderedPayload, ResultReading
from mappings.bmd.classify import CATEGORY_TEXT, Classification, classify, menopausal_status
from mappings.bmd.drl import ReferenceLevel, check_dose, report_note
from mappings.bmd.compare import DEFAULT_LSC_PERCENT, Comparison, LscTable, SiteChange, compare_exams
from mappings.bmd.fhir_bundle import FhirContext, build_bundle, bundle_json
from mappings.bmd.hl7_oru import OruContext, build_oru_r01
from mappings.bmd.merge import merge_exams
from mappings.bmd.models import BmdExam, RegionResult
from mappings.bmd.encapsulated_pdf import PdfObjectContext, encapsulated_pdf_bytes, object_uids
from mappings.bmd.report import ReportDetails, render_report, report_values, row_use
from mappings.bmd.report_pdf import PdfContext, report_pdf
from mappings.clinical_context import ClinicalContext, ContextError, with_table_limit
from mappings.worklist import WorklistItem
from mappings.priors import prior_identity_problem
from routes.base import JsonBody
from routes.rules import Rule, RoutedObject, destinations_for

log = logging.getLogger("gateway.exams")


NOT_EVALUATED = "NOT CLINICALLY EVALUATED: released automatically, without a reporter's signature."


class SignError(ValueError):
    """A sign or amend request the exam cannot take; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def age_at(birth_date: str, on: str) -> int | None:
    """Whole years between two DA values, or None when either is missing."""
    try:
        born = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
        day = date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    except (ValueError, IndexError):
        return None
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, RegionResult):
        return {"site": value.site, "laterality": value.laterality, "name": value.name}
    if isinstance(value, SiteChange):
        return {
            "site": value.name,
            "change_g_cm2": str(value.change),
            "previous_bmd": str(value.previous_bmd),
            "current_bmd": str(value.current_bmd),
            "change_percent": str(value.change_percent),
            "significant": value.significant,
            "direction": value.direction,
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def classification_json(c: Classification) -> dict:
    return {
        "score_type": c.score_type,
        "category": c.category,
        "category_text": c.category_text,
        "lowest_site": _plain(c.lowest),
        "lowest_score": _plain(c.lowest_score),
        "sites_used": _plain(c.sites_used),
        "excluded_vertebrae": list(c.excluded_vertebrae),
        "spine_used": c.spine.site if c.spine is not None and c.used(c.spine) else None,
        "notes": list(c.notes),
        "flags": list(c.flags),
        "prompts": list(c.prompts),
    }


def comparison_json(c: Comparison | None) -> dict | None:
    if c is None:
        return None
    return {
        "comparable": c.comparable,
        "reason": c.reason,
        "previous_date": c.previous_date,
        "changes": _plain(c.changes),
        "interval_days": c.interval_days,
        "interval_note": c.interval_note,
        "interval_short": c.interval_short,
    }


@dataclass(frozen=True, slots=True)
class ExamReview:
    """What the reporting workbench shows of one exam (gateway/http/workbench.py)."""

    row: ExamRow
    exam: BmdExam | None
    order: WorklistItem | None
    context: ClinicalContext
    classification: Classification | None
    comparison: Comparison | None
    uses: tuple[str, ...]  # per region: lowest, used, excluded, in <spine>, not used (mappings/bmd/report.py row_use)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who signs a report or edits an exam's context.

    Today the name comes from the request body; when the HTTP side
    authenticates callers (docs/architecture.md rule 8) the identity -- name, role and
    identifier -- comes from there instead, in ``gateway/http/exams_api.py``
    (:func:`~gateway.http.exams_api.actor_of`), the one place that builds it.
    """

    name: str
    role: str = ""
    id: str = ""


def load_management(path: Path | None) -> dict[str, str]:
    """``reports.management_file``: YAML mapping of diagnostic category -> wording."""
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: reports.management_file must map category names to text")
    unknown = sorted(set(data) - set(CATEGORY_TEXT))
    if unknown:
        raise ValueError(f"{path}: unknown categories {', '.join(unknown)} (known: {', '.join(CATEGORY_TEXT)})")
    return {k: v.strip() for k, v in data.items()}


def _hl7_time(iso: str) -> str:
    """An ISO instant (UTC) -> HL7 DTM with its offset."""
    at = datetime.fromisoformat(iso).astimezone(timezone.utc)
    return at.strftime("%Y%m%d%H%M%S+0000")


class ExamService:
    #: gateway/priors/service.py PriorService when ``priors.sources`` are configured (README "Priors from the PACS")
    priors = None
    #: gateway/qa.py QaService: phantom scans and scanner QA flags (README "Running a DXA service")
    qa = None

    def __init__(
        self, store, data_dir: Path, settings: ReportsSettings, rules: tuple[Rule, ...], metrics: Metrics,
        wake: Callable[[], None], reader: SrReader, *, destination_types: Mapping[str, str] | None = None,
        hl7_application: str = "DXAGW", hl7_facility: str = "",
        defer: Callable[[float, Callable[[], None]], None] | None = None, dose: DoseSettings | None = None,
    ) -> None:
        self.store = store
        # defer(seconds, fn): run fn in the exam thread later (the settle window)
        self.defer = defer
        self.reader = reader
        self.data_dir = data_dir
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.wake = wake
        self.template = settings.template_file.read_text(encoding="utf-8") if settings.template_file else None
        self.management = load_management(settings.management_file)
        self.destination_types = dict(destination_types or {})
        self.hl7_application = hl7_application
        self.hl7_facility = hl7_facility
        # dose.reference_levels (docs/domain.md section 5; mappings/bmd/drl.py)
        self.dose_levels = {k: ReferenceLevel(Decimal(str(v.value)), v.units, v.quantity) for k, v in (dose.reference_levels if dose else {}).items()}
        self.fls = FlsNotifier(rules, self.destination_types, hl7_application=hl7_application, hl7_facility=hl7_facility, metrics=metrics)
        self.lsc = LscTable(
            percent={**DEFAULT_LSC_PERCENT, **{k: Decimal(str(v)) for k, v in settings.lsc_percent.items()}},
            absolute={k: Decimal(str(v)) for k, v in settings.lsc_absolute.items()},
            per_scanner={s: {k: Decimal(str(v)) for k, v in m.items()} for s, m in settings.lsc_per_scanner.items()},
        )

    # -- analysis ----------------------------------------------------------------

    def _order(self, exam: BmdExam, row: ExamRow | None) -> tuple[WorklistItem | None, ClinicalContext]:
        """The order the exam answers and the clinical context: the order's,
        with the radiographer's (``PUT /api/exams/{id}/context``) over it."""
        item_json, order_ctx = self.store.order_for_exam(exam.study_instance_uid, exam.accession_number or (row.accession if row else ""))
        item = WorklistItem.from_json(item_json) if item_json else None
        ctx = ClinicalContext()
        for source, data in (("order", order_ctx), ("radiographer", row.context if row is not None else None)):
            if not data:
                continue
            try:
                ctx = ctx.merged(ClinicalContext.from_dict(data))
            except ContextError as exc:  # kept by an older version, or edited: say so, use the rest
                log.warning("exam.context_unreadable", extra=fields(exam=row.id if row else None, source=source, key=exc.key))
        limit = self.settings.table_limit_kg
        return item, with_table_limit(ctx, Decimal(str(limit)) if limit else None)

    def _analyse(
        self, exam: BmdExam, exam_id: int | None = None, context: ClinicalContext | None = None, *, early_repeat: bool = False
    ) -> tuple[Classification, Comparison | None, int | None]:
        ctx = context or ClinicalContext()
        age = exam.patient_age if exam.patient_age is not None else age_at(exam.patient_birth_date, exam.exam_date)
        sex = (exam.patient_sex or "").upper()[:1]
        # reports.menopausal_default concerns women under 50 only (ISCD; docs/domain.md section 4)
        menopausal = menopausal_status(age, sex, ctx.menopausal, self.settings.menopausal_default)
        classification = classify(exam, age=age, sex=sex, menopausal=menopausal, context=ctx)
        previous = self.store.previous_exam(exam.patient_id, exam.exam_date or "99999999", exam_id) if exam.patient_id else None
        comparison = None
        if previous is not None and previous.state == "prior" and previous.exam:
            problem = prior_identity_problem(exam, BmdExam.from_dict(previous.exam))
            if problem:  # README "Priors from the PACS": the same ID, another patient's study
                reason = f"held in the PACS under this patient ID, but its {problem}: not compared (wrong-patient risk; check the patient's identity)"
                return classification, Comparison(False, reason, previous.exam_date), None
        if previous is not None and previous.exam:
            comparison = compare_exams(
                exam, BmdExam.from_dict(previous.exam), lsc=self.lsc, cross_calibrated=self.settings.cross_calibrated,
                early_repeat_requested=early_repeat,
            )
        return classification, comparison, previous.id if previous else None

    def _details(self, item: WorklistItem | None, ctx: ClinicalContext, **signature) -> ReportDetails:
        referrer = (item.requesting_physician or item.referring_physician) if item else ""
        return ReportDetails(
            referrer=referrer,
            context=ctx,
            management=self.management,
            recommended_interval=self.settings.recommended_interval,
            **signature,
        )

    def _text(self, exam: BmdExam, classification: Classification, comparison: Comparison | None, status: str, details: ReportDetails) -> str:
        """The report text, with the reader's technical flags (docs/domain.md section 4)."""
        return render_report(
            exam, classification, comparison, status=status, template=self.template, details=details,
            technical_notes=tuple(exam.flags) + tuple(n for n in [report_note(check_dose(exam, self.dose_levels))] if n),
        )

    def _preliminary(self, exam: BmdExam, row: ExamRow | None, status: str = "P"):
        """(classification, comparison, previous id, analysis JSON, report text) before signing."""
        item, ctx = self._order(exam, row)
        classification, comparison, previous_id = self._analyse(exam, row.id if row else None, ctx)
        text = self._text(exam, classification, comparison, status, self._details(item, ctx))
        analysis = {
            "classification": classification_json(classification),
            "comparison": comparison_json(comparison),
            "previous_exam": previous_id,
            "context": ctx.to_dict(),
        }
        dose = check_dose(exam, self.dose_levels)
        if dose is not None:
            analysis["dose"] = dose.to_dict()
        return classification, comparison, previous_id, analysis, text

    def _destinations(self, exam_manufacturer: str) -> tuple[str, ...]:
        return destinations_for(self.rules, RoutedObject(kind="report", modality="BMD", manufacturer=exam_manufacturer))

    # -- events ------------------------------------------------------------------

    def on_stored(self, kind: str, instance_id: int) -> None:
        """Called (in the exam thread) after an SR, image or dose SR was stored,
        and at start for every object still pending."""
        try:
            inst = self.store.get_instance(instance_id)
            if inst is None:
                return
            # Replicas on one database (storage.database) read a study's objects
            # one at a time, as this one thread does here.
            with self.store.exclusive(f"study:{inst.record.study_uid}"):
                if self.store.results_state(instance_id) != "pending":
                    return  # read already (the start-up rescan and a live event met, or another replica)
                if kind == "dose":
                    self._dose(instance_id)
                else:
                    self._results(instance_id)
        except Exception:
            log.exception("exam.error", extra=fields(instance=instance_id))

    def resume(self) -> None:
        """At start (in the exam thread): read what was acknowledged but not read, and
        draft or re-schedule the exams whose settle window was running."""
        count, last = 0, 0
        while batch := self.store.pending_results(after_id=last):
            for instance_id, kind in batch:
                self.on_stored(kind, instance_id)
            count, last = count + len(batch), batch[-1][0]
        if count:
            log.warning("exam.resumed", extra=fields(objects=count))
        self.draft_due()

    def _now(self) -> datetime:
        return datetime.now(timezone.utc)

    def _schedule(self, at: datetime) -> None:
        if self.defer is not None:
            self.defer(max(0.0, (at - self._now()).total_seconds()) + 0.05, self.draft_due)

    def draft_due(self) -> None:
        """Draft the report of every exam whose settle window is over; schedule the next."""
        try:
            now = self._now()
            for row in self.store.settling_exams():
                due = self._due(row, now)
                if due > now:
                    self._schedule(due)
                    break
                with self.store.exclusive(f"study:{row.study_uid}"):
                    fresh = self.store.get_exam(row.id)  # another replica may have drafted it, or an object re-opened the window
                    if fresh is not None and fresh.state == "settling" and self._due(fresh, now) <= now:
                        self._draft(fresh)
        except Exception:
            log.exception("exam.error", extra=fields(step="draft"))

    def _due(self, row: ExamRow, now: datetime) -> datetime:
        """When a settling exam's window is over (a window shortened in the config since applies at once)."""
        due = datetime.fromisoformat(row.settle_until) if row.settle_until else now
        return min(due, datetime.fromisoformat(row.updated_at) + timedelta(seconds=self.settings.settle_seconds))

    def _with_dose(self, exam: BmdExam, study_uid: str) -> BmdExam:
        # The RDSR is the dose record (IR(ME)R): it replaces a dose from the
        # objects' own attributes; an MPPS dose is used only when there is none.
        known = self.store.study_dose(study_uid)
        if known is not None and (known.get("source") == "rdsr" or exam.dose is None):
            return BmdExam.from_dict({**exam.to_dict(), "dose": known})
        return exam

    def _study_exam(self, readings: list[ResultReading], study_uid: str) -> tuple[BmdExam | None, str]:
        """The study's merged exam and the reasons of the objects that could not be read."""
        parts = [BmdExam.from_dict(r.exam) for r in readings if r.state == "read" and r.exam]
        unread = [f"{r.sop_instance_uid}: {r.reason}" for r in readings if r.state == "unparsed"]
        if not parts:
            return None, "; ".join(r.reason for r in readings if r.state == "unparsed")
        exam = merge_exams(parts)
        if unread:
            exam = BmdExam.from_dict({**exam.to_dict(), "flags": [*exam.flags, *(f"An object of this study could not be read ({u})." for u in unread)]})
        return self._with_dose(exam, study_uid), ""

    def _results(self, instance_id: int) -> None:
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return
        rec = inst.record
        try:
            reading = self.reader.call(read_results, str(self.data_dir / rec.path))
        except ReaderFailed as exc:
            reading = SrReading(None, str(exc))
        if self.qa is not None and self.qa.take(instance_id, rec, reading.exam):
            return  # a phantom scan: its scanner's QA series, never an exam
        if reading.exam is None and (reading.no_results and rec.kind == "image"):
            self.store.set_results(instance_id, "none", reading.unparsed or "")
            return
        state = "read" if reading.exam is not None else "unparsed"
        reason = "" if reading.exam is not None else (reading.unparsed or "no BMD results")
        this = (instance_id, state, reason[:300], reading.exam)
        row = self.store.study_exam(rec.study_uid)
        readings = [r for r in self.store.study_readings(rec.study_uid) if r.instance_id != instance_id]
        readings.append(ResultReading(instance_id, rec.sop_instance_uid, state, reason, reading.exam))
        exam, why = self._study_exam(readings, rec.study_uid)
        ident = dict(instance_id=instance_id, sop_instance_uid=rec.sop_instance_uid, study_uid=rec.study_uid, patient_id=rec.patient_id, accession=rec.accession)
        if self.priors is not None and self.priors.is_prior(rec.study_uid):
            self._keep_prior(row, this, ident, exam, why, reading.study_date)
            return
        if exam is None:
            values = {"state": "unparsed", "reason": why[:300], "exam_date": reading.study_date}
            if row is None:
                exam_id = self.store.save_study_exam(reading=this, exam_id=None, values={**ident, **values})
            elif row.state == "unparsed":
                exam_id = self.store.save_study_exam(reading=this, exam_id=row.id, values=values)
            else:
                exam_id = self.store.save_study_exam(reading=this, exam_id=row.id, values={})
            self.metrics.exams.labels("unparsed").inc()
            log.warning("exam.unparsed", extra=fields(exam=exam_id, instance=instance_id, reason=reason[:200]))
            return
        classification, comparison, _, analysis, text = self._preliminary(exam, row, "P")
        values = {
            "exam": exam.to_dict(), "analysis": analysis, "exam_date": exam.exam_date,
            "patient_id": exam.patient_id or rec.patient_id, "accession": exam.accession_number or rec.accession,
        }  # fmt: skip
        if row is None or row.state in ("settling", "unparsed"):
            # wait for the study's other scans before drafting the report
            until = self._now() + timedelta(seconds=self.settings.settle_seconds)
            values.update(state="settling", reason="", settle_until=until.isoformat(timespec="milliseconds"))
            if row is None:
                values.update(ident, patient_id=values["patient_id"], accession=values["accession"])
            exam_id = self.store.save_study_exam(reading=this, exam_id=row.id if row else None, values=values)
            log.info("exam.settling", extra=fields(exam=exam_id, instance=instance_id, seconds=self.settings.settle_seconds))
            if self.priors is not None:  # no earlier exam here: ask the PACS while the study settles
                self.priors.ensure_lookup(exam_id, self.data_dir / rec.path, values["patient_id"], rec.study_uid)
            self._schedule(until)
            return
        # drafted already: a later scan of the study updates it
        if row.report_status == "P":
            values["report_text"] = text
        else:
            log.warning("exam.after_release", extra=fields(exam=row.id, instance=instance_id))
            note = "Results arrived after the report was released: review them and amend the report."
            exam = BmdExam.from_dict({**exam.to_dict(), "flags": [*exam.flags, note]})
            values["exam"] = exam.to_dict()
        exam_id = self.store.save_study_exam(reading=this, exam_id=row.id, values=values)
        self.metrics.exams.labels("updated").inc()
        log.info("exam.updated", extra=fields(exam=exam_id, instance=instance_id, category=classification.category))

    def priors_done(self, exam_id: int) -> None:
        """The exam's prior lookup ended (exam thread, after the objects it fetched were read).

        A report that stopped waiting at ``priors.timeout`` and is still
        preliminary is drafted again, with the priors that came late."""
        try:
            row = self.store.get_exam(exam_id)
            if row is not None and row.state == "parsed" and row.report_status == "P":
                exam, _ = self._study_exam(self.store.study_readings(row.study_uid), row.study_uid)
                if exam is not None:
                    _, notes = self.priors.wait_state(row.id, row.patient_id)
                    if notes:
                        exam = BmdExam.from_dict({**exam.to_dict(), "flags": [*exam.flags, *notes]})
                    self._reanalyse(row, exam)
                    log.info("exam.priors_late", extra=fields(exam=exam_id))
        except Exception:
            log.exception("exam.error", extra=fields(exam=exam_id, step="priors"))
        self.draft_due()

    def _keep_prior(self, row: ExamRow | None, this: tuple, ident: dict, exam: BmdExam | None, why: str, study_date: str) -> None:
        """A study fetched from the PACS: kept for comparison, never reported."""
        if exam is None:
            values = {"state": "unparsed", "reason": f"prior from the PACS: {why}"[:300], "exam_date": study_date}
        else:
            values = {"state": "prior", "reason": "", "exam": exam.to_dict(), "exam_date": exam.exam_date,
                      "patient_id": ident["patient_id"] or exam.patient_id, "accession": exam.accession_number or ident["accession"]}  # fmt: skip
        exam_id = self.store.save_study_exam(reading=this, exam_id=row.id if row else None, values=values if row else {**ident, **values})
        log.info("exam.prior", extra=fields(exam=exam_id, instance=this[0], state=values["state"]))

    def _draft(self, row: ExamRow) -> None:
        """The settle window of ``row`` is over: classify, compare, draft (and maybe release)."""
        exam, _ = self._study_exam(self.store.study_readings(row.study_uid), row.study_uid)
        if exam is None:  # cannot happen for a settling exam; keep what it had
            exam = BmdExam.from_dict(row.exam)
        if self.priors is not None:  # the report waits for its prior lookup, up to priors.timeout
            until, notes = self.priors.wait_state(row.id, row.patient_id)
            if until is not None:
                self._schedule(until)
                return
            if notes:
                exam = BmdExam.from_dict({**exam.to_dict(), "flags": [*exam.flags, *notes]})
        if self.qa is not None:  # its scanner's QA failed or is overdue: said in the report
            exam = self.qa.flag(exam)
        release = None
        render = None
        status = "P"
        if self.settings.auto_release:
            # Released without a reporter: preliminary, and says so (README "Security").
            release = ("auto-release", self._destinations(exam.device.manufacturer))
        classification, comparison, _, analysis, text = self._preliminary(exam, row, status)
        if release:
            item, ctx = self._order(exam, row)
            details = self._details(item, ctx, reporter="auto-release", reporter_comment="Released automatically (reports.auto_release) without a reporter's review.")
            text = self._text(exam, classification, comparison, status, details)
            text = f"{text.rstrip()}\n\n{NOT_EVALUATED}\n"
            render = self._renderer(exam, row.accession, item, classification, comparison, text, status, Actor("auto-release"), release[1], ctx, details)
        values = {"state": "parsed", "exam": exam.to_dict(), "analysis": analysis, "report_status": status, "report_text": text, "settle_until": None}
        self.store.draft_exam(row.id, values=values, release=release, render=render)
        self.metrics.exams.labels("parsed").inc()
        if release:
            self.metrics.reports.labels("P").inc()
        log.info("exam.extracted", extra=fields(exam=row.id, objects=len(exam.sources), category=classification.category, released=bool(release)))
        if release and release[1]:
            self.wake()

    def _dose(self, instance_id: int) -> None:
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return
        try:
            dose = self.reader.call(read_dose_sr, str(self.data_dir / inst.record.path))
        except ReaderFailed as exc:
            log.warning("exam.dose_unread", extra=fields(instance=instance_id, reason=str(exc)))
            self.store.set_results(instance_id, "none", str(exc))
            return
        if dose is None:
            self.store.set_results(instance_id, "none", "no dose in the dose SR")
            return
        self.store.set_study_dose(inst.record.study_uid, dose)
        self.store.set_results(instance_id, "none", "dose")
        row = self.store.exam_for_study(inst.record.study_uid)
        # The RDSR is the dose record (IR(ME)R): it replaces a dose from MPPS
        # or from the BMD SR's own attributes.
        if row is not None and row.exam is not None and (row.exam.get("dose") or {}).get("source") != "rdsr":
            exam = BmdExam.from_dict({**row.exam, "dose": dose})
            self._reanalyse(row, exam)
        log.info("exam.dose", extra=fields(instance=instance_id, study_uid=inst.record.study_uid, source="rdsr"))

    def on_mpps_dose(self, study_uid: str, dose: dict) -> None:
        """Called (in the exam thread) when an MPPS of the study carried dose attributes.

        Kept for the study unless an RDSR's dose is known; given to the
        study's exam only if it has no dose yet.
        """
        try:
            known = self.store.study_dose(study_uid)
            if known is not None and known.get("source") == "rdsr":
                return
            self.store.set_study_dose(study_uid, dose)
            row = self.store.exam_for_study(study_uid)
            if row is not None and row.exam is not None and row.exam.get("dose") is None:
                self._reanalyse(row, BmdExam.from_dict({**row.exam, "dose": dose}))
            log.info("exam.dose", extra=fields(study_uid=study_uid, source="mpps"))
        except Exception:
            log.exception("exam.error", extra=fields(study_uid=study_uid))

    def _reanalyse(self, row: ExamRow, exam: BmdExam) -> None:
        """New data for an exam (dose, context): a preliminary report is
        rewritten; a released one keeps its text (an amendment makes a new version)."""
        status = row.report_status or "P"
        _, _, _, analysis, text = self._preliminary(exam, row, status)
        self.store.update_exam_analysis(row.id, exam=exam.to_dict(), analysis=analysis, report_text=text if status == "P" else row.report_text)

    def set_context(self, exam_id: int, data: dict, actor: Actor) -> dict:
        """The radiographer's clinical context (merged over what they gave
        before); the exam is analysed again.  Raises ContextError, NoSuchExam."""
        row = self.store.get_exam(exam_id)
        if row is None:
            raise NoSuchExam(exam_id)
        given = ClinicalContext.from_dict({k: v for k, v in data.items() if k != "sources"})
        if given.is_empty():
            raise SignError("the context states nothing", 422)
        given = dataclasses.replace(given, sources=("radiographer",))
        before = ClinicalContext.from_dict(row.context) if row.context else ClinicalContext()
        merged = before.merged(given)
        self.store.set_exam_context(exam_id, merged.to_dict(), actor=actor.name or "api")
        row = self.store.get_exam(exam_id)
        if row is not None and row.state == "parsed" and row.exam:
            self._reanalyse(row, BmdExam.from_dict(row.exam))
        log.info("exam.context", extra=fields(exam=exam_id, role=actor.role or "-"))
        return merged.to_dict()

    def review(self, exam_id: int) -> ExamReview | None:
        """The exam analysed as the report would be (order and radiographer's context, previous exam)."""
        row = self.store.get_exam(exam_id)
        if row is None:
            return None
        if row.state != "parsed" or not row.exam:
            return ExamReview(row, None, None, ClinicalContext(), None, None, ())
        exam = BmdExam.from_dict(row.exam)
        item, ctx = self._order(exam, row)
        classification, comparison, _ = self._analyse(exam, row.id, ctx)
        return ExamReview(row, exam, item, ctx, classification, comparison, tuple(row_use(exam, classification)))

    # -- release: render once, store, send those bytes -------------------------------

    def _renderer(
        self, exam: BmdExam, accession: str, item: WorklistItem | None, classification: Classification,
        comparison: Comparison | None, text: str, status: str, actor: Actor, destinations: tuple[str, ...],
        context: ClinicalContext | None = None, details: ReportDetails | None = None,
    ):
        """The release-time renderer: every payload of this version, one per destination."""
        placer = item.placer_order_number if item else ""
        values = report_values(exam, classification, comparison, status=status, details=details)
        pdf_destinations = self._pdf_destinations(exam.device.manufacturer)
        filler = (item.filler_order_number if item else "") or accession
        ordering = (item.requesting_physician or item.referring_physician) if item else ""

        def render(report_id: int, released_at: str):
            when = _hl7_time(released_at)
            at = datetime.fromisoformat(released_at)
            issued = at.isoformat(timespec="seconds")
            # the PDF: a layout of this text, dated by the release (reproducible bytes)
            pdf = report_pdf(text, values, PdfContext(created=at, author=actor.name))
            yield RenderedPayload(PDF_DOCUMENT, "pdf", f"R{report_id}", pdf)
            if pdf_destinations:
                yield from self._pdf_objects(exam, item, pdf, report_id, at, status, pdf_destinations)
            for n, destination in enumerate(destinations, start=1):
                if self.destination_types.get(destination) == "fhir":
                    ctx = FhirContext(
                        issued=issued, status=status, placer_order_number=placer,
                        performer=self.hl7_facility or self.hl7_application, interpreter=actor.name, interpreter_id=actor.id,
                    )
                    body = bundle_json(build_bundle(exam, classification, text, ctx, pdf=pdf)).encode("utf-8")
                    yield RenderedPayload(destination, "fhir-bundle", f"R{report_id}", body)
                else:
                    control_id = f"DXAGWR{report_id}.{n}"  # MSH-10: one per version per destination
                    oru = OruContext(
                        message_control_id=control_id, timestamp=when, sending_application=self.hl7_application,
                        sending_facility=self.hl7_facility, result_status=status, placer_order_number=placer,
                        filler_order_number=filler, ordering_provider=ordering, interpreter=actor.name,
                        interpreter_id=actor.id, interpreted_at=when,
                    )
                    yield RenderedPayload(destination, "hl7-oru", control_id, build_oru_r01(exam, classification, comparison, text, oru).encode("utf-8"))
            # fracture liaison (docs/fls.md): in the same commit, as stored bytes
            yield from self.fls.payloads(
                exam, classification, context or ClinicalContext(), report_id=report_id, released_at=released_at, hl7_time=when,
                status=status, referrer=actor.name, referrer_id=actor.id, placer=placer, filler=filler,
            )

        return render

    def _pdf_destinations(self, manufacturer: str) -> tuple[str, ...]:
        """Destinations of routes naming kind ``report-pdf`` (a catch-all route sends no documents)."""
        rules = tuple(r for r in self.rules if "report-pdf" in r.kinds)
        return destinations_for(rules, RoutedObject(kind="report-pdf", modality="BMD", manufacturer=manufacturer))

    def _pdf_objects(self, exam: BmdExam, item: WorklistItem | None, pdf: bytes, report_id: int, at: datetime, status: str, destinations):
        """The version's Encapsulated PDF (one object, the same bytes for every destination)."""
        utc = at.astimezone(timezone.utc)
        ctx = PdfObjectContext(
            report_id=report_id, content_date=utc.strftime("%Y%m%d"), content_time=utc.strftime("%H%M%S"), status=status,
            institution=self.hl7_facility, referring_physician=(item.referring_physician if item else "") or "",
            issuer_of_patient_id=(item.issuer_of_patient_id if item else "") or "",
        )
        try:
            body = encapsulated_pdf_bytes(exam, pdf, ctx)
        except ValueError as exc:  # no study to join: the release stands, the PACS copy is not made
            log.warning("report_pdf.not_built", extra=fields(report=report_id, reason=str(exc)))
            return
        sop_uid = object_uids(exam, report_id)[1]  # the control id: receivers are idempotent by it (docs/architecture.md rule 2)
        for destination in destinations:
            yield RenderedPayload(REPORT_PDF_PREFIX + destination, "dicom-pdf", sop_uid, body)

    def payload(self, store, ref_table: str, ref_id: int, destination_type: str, control_id: str, now: datetime):
        """A version released before payloads were stored (schema 3): rendered
        now, as the gateway used to.  Versions released since are sent from
        ``report_payloads`` by the dispatcher and never come here."""
        if ref_table != "reports":
            return None
        report = store.get_report(ref_id)
        row = store.get_exam(report.exam_id) if report else None
        if row is None or not row.exam:
            return None
        exam = BmdExam.from_dict(row.exam)
        item, ctx = self._order(exam, row)
        classification, comparison, _ = self._analyse(exam, row.id, ctx)
        log.warning("report.rendered_at_delivery", extra=fields(report=ref_id))
        if destination_type == "fhir":
            issued = datetime.fromisoformat(report.released_at).isoformat(timespec="seconds")
            bundle = build_bundle(exam, classification, report.text, FhirContext(issued=issued, status=report.status, placer_order_number=row.accession))
            return JsonBody(bundle_json(bundle).encode("utf-8"))
        ctx_ = OruContext(
            message_control_id=control_id,
            timestamp=now.strftime("%Y%m%d%H%M%S"),
            sending_application="DXAGW",
            result_status=report.status,
            placer_order_number=row.accession,
            filler_order_number=row.accession,
        )
        return build_oru_r01(exam, classification, comparison, report.text, ctx_).encode("utf-8")

    # -- signing -------------------------------------------------------------------

    def sign(
        self, exam_id: int, reporter: str | Actor, amendment: str = "", *, comment: str = "", early_repeat: bool = False,
        today: date | None = None,
    ) -> int:
        """Release the report: final, or corrected when it was final already.

        The report text, the ORU^R01 and the FHIR Bundle of this version are
        rendered here, stored with their hashes in the same commit as the
        version and its outbox rows, and sent as they are (docs/architecture.md rule 9).
        """
        actor = reporter if isinstance(reporter, Actor) else Actor(reporter)
        row = self.store.get_exam(exam_id)
        if row is None:
            raise NoSuchExam(exam_id)
        if row.state == "settling":
            raise SignError("the exam is waiting for the rest of its study (reports.settle_seconds): no report yet")
        if row.state == "prior":
            raise SignError("a prior fetched from the PACS is never reported again")
        if row.state != "parsed":
            raise SignError("an unparsed exam has no report to sign")
        if not actor.name.strip():
            raise SignError("a named reporter is required", 422)
        exam = BmdExam.from_dict(row.exam)
        item, ctx = self._order(exam, row)
        classification, comparison, _ = self._analyse(exam, row.id, ctx, early_repeat=early_repeat)
        if row.report_status in ("F", "C"):
            if not amendment.strip():
                raise SignError("the report is final: send an amendment to correct it")
            status = "C"
        else:
            status = "F"
        details = self._details(
            item, ctx, reporter=actor.name.strip(), reporter_role=actor.role, reporter_comment=comment,
            amendment=amendment, signed_on=(today or datetime.now(timezone.utc).date()).isoformat(),
        )
        text = self._text(exam, classification, comparison, status, details)
        destinations = self._destinations(exam.device.manufacturer)
        render = self._renderer(exam, row.accession, item, classification, comparison, text, status, actor, destinations, ctx, details)
        report_id = self.store.release_report(exam_id, status=status, text=text, reporter=actor.name.strip(), destinations=destinations, render=render)
        self.metrics.reports.labels(status).inc()
        log.info("report.released", extra=fields(exam=exam_id, report=report_id, status=status))
        self.wake()
        return report_id
