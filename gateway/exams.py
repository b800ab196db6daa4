"""BMD exams: from a stored SR to a released report in the outbox.

When a BMD SR is stored, :class:`ExamService` has it read from the spool by
the SR reader process (gateway/sr_reader.py), which extracts a ``BmdExam``
(mappings/bmd); the service classifies it, compares
it with the patient's previous exam and writes the report text.  The report
is preliminary until a reporter signs it (or ``reports.auto_release``);
each released version (final, then corrected) is queued for the ``report``
routes in the same commit; the dispatcher gets the ORU^R01 or the
FHIR Bundle of a released version at delivery time (:meth:`ExamService.payload`).
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Callable

from gateway.config import ReportsSettings
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.sr_reader import ReaderFailed, SrReader, SrReading, read_bmd_sr, read_dose_sr
from gateway.store.exams import ExamRow, NoSuchExam
from mappings.bmd.classify import Classification, classify
from mappings.bmd.compare import DEFAULT_LSC_PERCENT, Comparison, LscTable, SiteChange, compare_exams
from mappings.bmd.fhir_bundle import FhirContext, build_bundle, bundle_json
from mappings.bmd.hl7_oru import OruContext, build_oru_r01
from mappings.bmd.models import BmdExam, DoseRecord, RegionResult
from mappings.bmd.report import render_report
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
        "notes": list(c.notes),
        "flags": list(c.flags),
        "prompts": list(c.prompts),
    }


def comparison_json(c: Comparison | None) -> dict | None:
    if c is None:
        return None
    return {"comparable": c.comparable, "reason": c.reason, "previous_date": c.previous_date, "changes": _plain(c.changes)}


class ExamService:
    def __init__(
        self, store, data_dir: Path, settings: ReportsSettings, rules: tuple[Rule, ...], metrics: Metrics,
        wake: Callable[[], None], reader: SrReader,
    ) -> None:
        self.store = store
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
        if previous is not None and previous.exam:
            comparison = compare_exams(
                exam, BmdExam.from_dict(previous.exam), lsc=self.lsc, cross_calibrated=self.settings.cross_calibrated
            )
        return classification, comparison, previous.id if previous else None

    def _destinations(self, exam_manufacturer: str) -> tuple[str, ...]:
        return destinations_for(self.rules, RoutedObject(kind="report", modality="BMD", manufacturer=exam_manufacturer))

    # -- events ------------------------------------------------------------------

    def on_stored(self, kind: str, instance_id: int) -> None:
        """Called (in an executor thread) after an SR or dose SR was stored."""
        try:
            if kind == "sr":
                self._sr(instance_id)
            elif kind == "dose":
                self._dose(instance_id)
        except Exception:
            log.exception("exam.error", extra=fields(instance=instance_id))

    def _dose(self, instance_id: int) -> None:
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return
        try:
            dose = self.reader.call(read_dose_sr, str(self.data_dir / inst.record.path))
        except ReaderFailed as exc:
            log.warning("exam.dose_unread", extra=fields(instance=instance_id, reason=str(exc)))
            return
        if dose is None:
            return
        self.store.set_study_dose(inst.record.study_uid, dose)
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
        text = render_report(exam, classification, comparison, status=status, template=self.template)
        analysis = {"classification": classification_json(classification), "comparison": comparison_json(comparison), "previous_exam": previous_id}
        self.store.update_exam_analysis(row.id, exam=exam.to_dict(), analysis=analysis, report_text=text if status == "P" else row.report_text)

    def _sr(self, instance_id: int) -> None:
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return
        rec = inst.record
        common = dict(instance_id=instance_id, sop_instance_uid=rec.sop_instance_uid, study_uid=rec.study_uid, patient_id=rec.patient_id, accession=rec.accession)
        try:
            reading = self.reader.call(read_bmd_sr, str(self.data_dir / rec.path))
        except ReaderFailed as exc:
            reading = SrReading(None, str(exc))
        if reading.exam is None:
            reason = reading.unparsed or "no BMD results"
            exam_id = self.store.add_exam(**common, exam_date=reading.study_date, state="unparsed", reason=reason[:300])
            self.metrics.exams.labels("unparsed").inc()
            log.warning("exam.unparsed", extra=fields(exam=exam_id, instance=instance_id, reason=reason[:200]))
            return
        exam = BmdExam.from_dict(reading.exam)
        if exam.dose is None:
            dose = self.store.study_dose(rec.study_uid)
            if dose is not None:
                exam = BmdExam.from_dict({**exam.to_dict(), "dose": dose})
        classification, comparison, previous_id = self._analyse(exam)
        release = None
        status = "P"
        text = render_report(exam, classification, comparison, status=status, template=self.template)
        if self.settings.auto_release:
            # Released without a reporter: preliminary, and says so (README "Security").
            release = ("auto-release", self._destinations(exam.device.manufacturer))
            text = f"{text.rstrip()}\n\n{NOT_EVALUATED}\n"
        analysis = {"classification": classification_json(classification), "comparison": comparison_json(comparison), "previous_exam": previous_id}
        exam_id = self.store.add_exam(
            **{**common, "patient_id": exam.patient_id or rec.patient_id, "accession": exam.accession_number or rec.accession},
            exam_date=exam.exam_date,
            state="parsed",
            exam=exam.to_dict(),
            analysis=analysis,
            report_status=status,
            report_text=text,
            release=release,
        )
        self.metrics.exams.labels("parsed").inc()
        if release:
            self.metrics.reports.labels("P").inc()
        log.info("exam.extracted", extra=fields(exam=exam_id, instance=instance_id, category=classification.category, released=bool(release)))
        if release and release[1]:
            self.wake()

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
        text = render_report(exam, classification, comparison, status=status, template=self.template)
        if amendment.strip():
            text = f"{text.rstrip()}\n\nAmendment ({reporter}): {amendment.strip()}\n"
        text = f"{text.rstrip()}\n\nReported by: {reporter}\n"
        report_id = self.store.release_report(exam_id, status=status, text=text, reporter=reporter, destinations=self._destinations(exam.device.manufacturer))
        self.metrics.reports.labels(status).inc()
        log.info("report.released", extra=fields(exam=exam_id, report=report_id, status=status))
        self.wake()
        return report_id
