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
service classifies the exam, compares it with the patient's previous exam
and writes the report text.  The report
is preliminary until a reporter signs it (or ``reports.auto_release``);
each released version (final, then corrected) is queued for the ``report``
routes in the same commit; the dispatcher gets the ORU^R01 or the
FHIR Bundle of a released version at delivery time (:meth:`ExamService.payload`).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

from gateway.config import ReportsSettings
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.sr_reader import ReaderFailed, SrReader, SrReading, read_dose_sr, read_results
from gateway.store.exams import ExamRow, NoSuchExam, ResultReading
from mappings.bmd.classify import Classification, classify
from mappings.bmd.compare import DEFAULT_LSC_PERCENT, Comparison, LscTable, SiteChange, compare_exams
from mappings.bmd.fhir_bundle import FhirContext, build_bundle, bundle_json
from mappings.bmd.hl7_oru import OruContext, build_oru_r01
from mappings.bmd.merge import merge_exams
from mappings.bmd.models import BmdExam, DoseRecord, RegionResult
from mappings.bmd.report import render_report
from mappings.priors import prior_identity_problem
from routes.base import JsonBody
from routes.rules import Rule, RoutedObject, destinations_for

log = logging.getLogger("gateway.exams")


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
        "notes": list(c.notes),
        "flags": list(c.flags),
        "prompts": list(c.prompts),
    }


def comparison_json(c: Comparison | None) -> dict | None:
    if c is None:
        return None
    return {"comparable": c.comparable, "reason": c.reason, "previous_date": c.previous_date, "changes": _plain(c.changes)}


class ExamService:
    #: gateway/priors/service.py PriorService when ``priors.sources`` are configured (issue 18)
    priors = None

    def __init__(
        self, store, data_dir: Path, settings: ReportsSettings, rules: tuple[Rule, ...], metrics: Metrics,
        wake: Callable[[], None], reader: SrReader, defer: Callable[[float, Callable[[], None]], None] | None = None,
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
        self.lsc = LscTable(
            percent={**DEFAULT_LSC_PERCENT, **{k: Decimal(str(v)) for k, v in settings.lsc_percent.items()}},
            absolute={k: Decimal(str(v)) for k, v in settings.lsc_absolute.items()},
            per_scanner={s: {k: Decimal(str(v)) for k, v in m.items()} for s, m in settings.lsc_per_scanner.items()},
        )

    # -- analysis ----------------------------------------------------------------

    def _analyse(self, exam: BmdExam, exam_id: int | None = None) -> tuple[Classification, Comparison | None, int | None]:
        age = exam.patient_age if exam.patient_age is not None else age_at(exam.patient_birth_date, exam.exam_date)
        sex = (exam.patient_sex or "").upper()[:1]
        menopausal = self.settings.menopausal_default if sex == "F" else None
        classification = classify(exam, age=age, sex=sex, menopausal=menopausal, fragility_fracture=False)
        previous = self.store.previous_exam(exam.patient_id, exam.exam_date or "99999999", exam_id) if exam.patient_id else None
        comparison = None
        if previous is not None and previous.state == "prior" and previous.exam:
            problem = prior_identity_problem(exam, BmdExam.from_dict(previous.exam))
            if problem:  # issue 18: the same ID, another patient's study
                reason = f"held in the PACS under this patient ID, but its {problem}: not compared (wrong-patient risk; check the patient's identity)"
                return classification, Comparison(False, reason, previous.exam_date), None
        if previous is not None and previous.exam:
            comparison = compare_exams(
                exam, BmdExam.from_dict(previous.exam), lsc=self.lsc, cross_calibrated=self.settings.cross_calibrated
            )
        return classification, comparison, previous.id if previous else None

    def _destinations(self, exam_manufacturer: str) -> tuple[str, ...]:
        return destinations_for(self.rules, RoutedObject(kind="report", modality="BMD", manufacturer=exam_manufacturer))

    # -- events ------------------------------------------------------------------

    def on_stored(self, kind: str, instance_id: int) -> None:
        """Called (in the exam thread) after an SR, image or dose SR was stored,
        and at start for every object still pending."""
        try:
            if self.store.results_state(instance_id) != "pending":
                return  # read already (the start-up rescan and a live event met)
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
                due = datetime.fromisoformat(row.settle_until) if row.settle_until else now
                # a window shortened in the config since applies at once
                due = min(due, datetime.fromisoformat(row.updated_at) + timedelta(seconds=self.settings.settle_seconds))
                if due > now:
                    self._schedule(due)
                    break
                self._draft(row)
        except Exception:
            log.exception("exam.error", extra=fields(step="draft"))

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

    def _analysis(self, exam: BmdExam, exam_id: int | None) -> tuple[Classification, Comparison | None, dict]:
        classification, comparison, previous_id = self._analyse(exam, exam_id)
        return classification, comparison, {"classification": classification_json(classification), "comparison": comparison_json(comparison), "previous_exam": previous_id}

    def _render(self, exam: BmdExam, classification: Classification, comparison: Comparison | None, status: str) -> str:
        return render_report(exam, classification, comparison, status=status, template=self.template, technical_notes=tuple(exam.flags))

    def _results(self, instance_id: int) -> None:
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return
        rec = inst.record
        try:
            reading = self.reader.call(read_results, str(self.data_dir / rec.path))
        except ReaderFailed as exc:
            reading = SrReading(None, str(exc))
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
        classification, comparison, analysis = self._analysis(exam, row.id if row else None)
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
            values["report_text"] = self._render(exam, classification, comparison, "P")
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
        classification, comparison, analysis = self._analysis(exam, row.id)
        release = None
        status = "P"
        if self.settings.auto_release:
            status = "F"
            release = ("auto-release", self._destinations(exam.device.manufacturer))
        text = self._render(exam, classification, comparison, status)
        values = {"state": "parsed", "exam": exam.to_dict(), "analysis": analysis, "report_status": status, "report_text": text, "settle_until": None}
        self.store.draft_exam(row.id, values=values, release=release)
        self.metrics.exams.labels("parsed").inc()
        if release:
            self.metrics.reports.labels("F").inc()
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
        classification, comparison, previous_id = self._analyse(exam, row.id)
        status = row.report_status or "P"
        text = self._render(exam, classification, comparison, status)
        analysis = {"classification": classification_json(classification), "comparison": comparison_json(comparison), "previous_exam": previous_id}
        self.store.update_exam_analysis(row.id, exam=exam.to_dict(), analysis=analysis, report_text=text if status == "P" else row.report_text)

    # -- delivery ------------------------------------------------------------------

    def payload(self, store, ref_table: str, ref_id: int, destination_type: str, control_id: str, now: datetime):
        """What a released report version is at delivery: an ORU^R01 for HL7
        destinations (MSH-10 = ``control_id``), a FHIR transaction Bundle for
        FHIR ones.  Built from the stored version, so a resend is the same."""
        if ref_table != "reports":
            return None
        report = store.get_report(ref_id)
        row = store.get_exam(report.exam_id) if report else None
        if row is None or not row.exam:
            return None
        exam = BmdExam.from_dict(row.exam)
        classification, comparison, _ = self._analyse(exam, row.id)
        if destination_type == "fhir":
            issued = datetime.fromisoformat(report.released_at).isoformat(timespec="seconds")
            bundle = build_bundle(exam, classification, report.text, FhirContext(issued=issued, status=report.status, placer_order_number=row.accession))
            return JsonBody(bundle_json(bundle).encode("utf-8"))
        ctx = OruContext(
            message_control_id=control_id,
            timestamp=now.strftime("%Y%m%d%H%M%S"),
            sending_application="DXAGW",
            result_status=report.status,
            placer_order_number=row.accession,
            filler_order_number=row.accession,
        )
        return build_oru_r01(exam, classification, comparison, report.text, ctx).encode("utf-8")

    # -- signing -------------------------------------------------------------------

    def sign(self, exam_id: int, reporter: str, amendment: str = "") -> int:
        """Release the report: final, or corrected when it was final already."""
        row = self.store.get_exam(exam_id)
        if row is None:
            raise NoSuchExam(exam_id)
        if row.state == "settling":
            raise SignError("the exam is waiting for the rest of its study (reports.settle_seconds): no report yet")
        if row.state == "prior":
            raise SignError("a prior fetched from the PACS is never reported again")
        if row.state != "parsed":
            raise SignError("an unparsed exam has no report to sign")
        if not reporter.strip():
            raise SignError("a named reporter is required", 422)
        exam = BmdExam.from_dict(row.exam)
        classification, comparison, _ = self._analyse(exam, row.id)
        if row.report_status in ("F", "C"):
            if not amendment.strip():
                raise SignError("the report is final: send an amendment to correct it")
            status = "C"
        else:
            status = "F"
        text = self._render(exam, classification, comparison, status)
        if amendment.strip():
            text = f"{text.rstrip()}\n\nAmendment ({reporter}): {amendment.strip()}\n"
        text = f"{text.rstrip()}\n\nReported by: {reporter}\n"
        report_id = self.store.release_report(exam_id, status=status, text=text, reporter=reporter, destinations=self._destinations(exam.device.manufacturer))
        self.metrics.reports.labels(status).inc()
        log.info("report.released", extra=fields(exam=exam_id, report=report_id, status=status))
        self.wake()
        return report_id
