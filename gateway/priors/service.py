"""Prior lookup (README "Priors from the PACS"): when an exam arrives for a patient with no earlier
exam in the store, ask ``priors.sources`` in order for their earlier DXA
studies and fetch them; the report waits for the lookup up to
``priors.timeout``, then goes on with a note.

Each lookup is a durable ``prior_lookups`` row (deadline included), so a
restart resumes it.  Every study to fetch is recorded in ``prior_studies``
before the C-MOVE, so its objects, arriving through our own C-STORE SCP, are
priors: never routed, never reported (gateway/dicom/storage.py,
gateway/exams.py).  Objects fetched by WADO-RS are spooled and indexed here,
with no destinations.  The fetched objects are read by the same result
readers as live exams.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from pydicom import dcmread

from gateway.config import Config
from gateway.dicom.storage import read_received_header
from gateway.logs import fields
from gateway.priors.sources import CGetSource, CMoveSource, DicomWebSource, SourceDown, StudyQuery
from gateway.store import InstanceRecord
from gateway.store.priors import PriorStudyRow
from mappings.instances import HEADER_KEYWORDS, STORAGE_SOP_CLASSES, read_header, text_value
from mappings.priors import FoundStudy, PatientIdentity, identity_problem, is_wrong_patient, lookback_start, mismatch_flag, qualifies

log = logging.getLogger("gateway.priors")

RETRY_PAUSE = 2.0  # seconds between attempts at a source that is down, until the deadline


def build_sources(config: Config) -> list:
    """The configured sources, each with its destination's own network timeout
    (``ack_timeout``): how long a report waits (``priors.timeout``) does not
    cut a lookup short, so priors that arrive late still redraft it."""
    out = []
    for src in config.priors.sources:
        dest = config.destinations[src.destination]
        t = dest.ack_timeout
        if src.method == "c-move":
            out.append(CMoveSource(src.destination, dest.host, dest.port, dest.ae_title, dest.calling_ae_title or config.dicom.ae_title,
                                   src.move_destination or config.dicom.ae_title, t))  # fmt: skip
        elif src.method == "c-get":
            classes = tuple(dict.fromkeys([*STORAGE_SOP_CLASSES, *config.dicom.storage.extra_sop_classes]))
            out.append(CGetSource(src.destination, dest.host, dest.port, dest.ae_title, dest.calling_ae_title or config.dicom.ae_title, classes, t))
        else:
            out.append(DicomWebSource(src.destination, dest.url, dest.auth, t))
    return out


def _now() -> datetime:
    return datetime.now(timezone.utc)


def exam_identity(path: Path, patient_id: str) -> tuple[PatientIdentity, str]:
    """The patient's identity and the study date from a stored object of the exam."""
    ds = dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "StudyDate"])
    ident = PatientIdentity(
        patient_id=text_value(ds, "PatientID") or patient_id.strip(),
        issuer=text_value(ds, "IssuerOfPatientID"),
        name=text_value(ds, "PatientName"),
        birth_date=text_value(ds, "PatientBirthDate"),
    )
    return ident, text_value(ds, "StudyDate")


class PriorService:
    def __init__(self, config: Config, store, spool, notify: Callable[[str, int], None], on_done: Callable[[int], None]) -> None:
        self.settings = config.priors
        self.store = store
        self.spool = spool
        self.notify = notify  # (kind, instance id) of an object indexed here (WADO-RS)
        self.on_done = on_done  # (exam id) a lookup ended: draft or update the exam (after the fetched objects are read)
        self.sources = build_sources(config)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dxagw-priors")

    @property
    def enabled(self) -> bool:
        return bool(self.sources)

    # -- asked by the storage SCP and the exam thread ----------------------------------

    def is_prior(self, study_uid: str) -> bool:
        row = self.store.prior_study(study_uid)
        return row is not None and row.state != "mismatch"

    def ensure_lookup(self, exam_id: int, instance_path: Path, patient_id: str, study_uid: str) -> None:
        """Start the exam's lookup unless it has one, or the patient has an earlier exam here."""
        if not self.enabled or not patient_id or self.store.prior_lookup(exam_id) is not None:
            return
        try:
            identity, study_date = exam_identity(instance_path, patient_id)
        except Exception as exc:  # never stop the exam's own path: it is reported without priors
            log.warning("priors.lookup_not_started", extra=fields(exam=exam_id, reason=type(exc).__name__))
            return
        if self.store.previous_exam(patient_id, study_date or "99999999", exam_id) is not None:
            return
        deadline = _now() + timedelta(seconds=self.settings.timeout)
        if self.store.start_prior_lookup(exam_id, deadline.isoformat(timespec="milliseconds")):
            log.info("priors.lookup", extra=fields(exam=exam_id, sources=len(self.sources)))
            self.executor.submit(self._lookup, exam_id, identity, study_uid, study_date, deadline)

    def wait_state(self, exam_id: int, patient_id: str) -> tuple[datetime | None, list[str]]:
        """(the time to wait until, or None; the notes for the report)."""
        lookup = self.store.prior_lookup(exam_id)
        if lookup is None:
            return None, []
        deadline = datetime.fromisoformat(lookup.deadline)
        if lookup.state == "running" and _now() < deadline:
            return deadline, []
        notes = []
        if lookup.state != "done":
            why = lookup.note or f"no answer within priors.timeout ({self.settings.timeout:g} s)"
            notes.append(f"Priors could not be fetched from the PACS ({why}): earlier scans held only there are not compared.")
        for row in self.store.prior_studies_for(patient_id, exam_id=exam_id, state="mismatch"):
            notes.append(mismatch_flag(row.study_date, row.note))
        return None, notes

    def resume(self) -> None:
        """At start: take up the lookups a stop or crash left running."""
        for lookup in self.store.running_prior_lookups():
            row = self.store.get_exam(lookup.exam_id)
            inst = self.store.get_instance(row.instance_id) if row else None
            if inst is None:
                self.store.finish_prior_lookup(lookup.exam_id, state="failed", note="the exam is gone")
                continue
            try:
                identity, study_date = exam_identity(self.spool.root / inst.record.path, row.patient_id)
            except Exception as exc:  # the spooled file cannot be read: the report goes on with the note
                log.warning("priors.resume_failed", extra=fields(exam=lookup.exam_id, reason=type(exc).__name__))
                self.store.finish_prior_lookup(lookup.exam_id, state="failed", note="the exam's object could not be read again")
                continue
            log.info("priors.resumed", extra=fields(exam=lookup.exam_id))
            self.executor.submit(self._lookup, lookup.exam_id, identity, row.study_uid, study_date, datetime.fromisoformat(lookup.deadline))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- the lookup (priors thread) ---------------------------------------------------

    def _lookup(self, exam_id: int, identity: PatientIdentity, study_uid: str, exam_date: str, deadline: datetime) -> None:
        state, note, found = "failed", "", 0
        try:
            state, note, found = self._ask_sources(exam_id, identity, study_uid, exam_date, deadline)
        except Exception as exc:
            log.exception("priors.error", extra=fields(exam=exam_id))
            note = f"internal error {type(exc).__name__}"
        self.store.finish_prior_lookup(exam_id, state=state, note=note, found=found)
        log.info("priors.lookup_done", extra=fields(exam=exam_id, state=state, found=found, note=note))
        self.on_done(exam_id)

    def _ask_sources(self, exam_id, identity, study_uid, exam_date, deadline) -> tuple[str, str, int]:
        problems: list[str] = []
        while True:
            for source in self.sources:
                try:
                    return "done", "", self._from_source(source, exam_id, identity, study_uid, exam_date)
                except SourceDown as exc:
                    log.warning("priors.source_down", extra=fields(exam=exam_id, source=source.name, reason=str(exc)))
                    problems.append(str(exc))
            if _now() + timedelta(seconds=RETRY_PAUSE) >= deadline:
                return "failed", problems[-1] if problems else "no source answered", 0
            time.sleep(RETRY_PAUSE)

    def _from_source(self, source, exam_id: int, identity: PatientIdentity, study_uid: str, exam_date: str) -> int:
        day_before = exam_date or ""
        query = StudyQuery(patient_id=identity.patient_id, issuer=identity.issuer,
                           date_from=lookback_start(exam_date, self.settings.lookback_years) if exam_date else "", date_to=day_before)  # fmt: skip
        studies = source.find(query)
        rows = self.choose(studies, identity, study_uid, exam_date, source.name, origin="lookup", exam_id=exam_id)
        self.store.add_prior_studies(rows)
        fetched = 0
        for row in rows:
            if row.state != "retrieving":
                continue
            fetched += self.fetch(source, row.study_uid)
        return fetched

    def choose(self, studies: list[FoundStudy], identity: PatientIdentity | None, study_uid: str, exam_date: str, source: str,
               *, origin: str, exam_id: int | None = None) -> list[PriorStudyRow]:  # fmt: skip
        """The rows to record for the studies found: to fetch, or refused as another patient's."""
        rows = []
        mods = tuple(self.settings.match.modalities)
        for s in studies:
            if not qualifies(s, current_study_uid=study_uid, exam_date=exam_date, lookback_years=self.settings.lookback_years, modalities=mods):
                continue
            if self.store.study_known(s.study_uid):
                continue  # went through the gateway already
            problem = identity_problem(identity, s.identity, use_issuer=self.settings.match.issuer_of_patient_id) if identity else None
            if problem and not is_wrong_patient(problem):
                continue
            state = "mismatch" if problem else ("retrieving" if origin == "lookup" else "queued")
            rows.append(PriorStudyRow(s.study_uid, s.identity.patient_id, s.identity.issuer, s.study_date, source, origin, state, problem or "", exam_id))
            if problem:
                log.warning("priors.mismatch", extra=fields(exam=exam_id, study_uid=s.study_uid, problem=problem))
        return rows

    def fetch(self, source, study_uid: str) -> int:
        """Fetch one recorded study; its row says how it went. Raises SourceDown."""
        self.store.set_prior_study(study_uid, "retrieving")
        try:
            count = source.retrieve(study_uid, keep=self.keep)
        except SourceDown as exc:
            self.store.set_prior_study(study_uid, "failed", str(exc))
            raise
        self.store.set_prior_study(study_uid, "retrieved", f"{count} objects")
        return count

    # -- WADO-RS objects: spooled and indexed here, never routed --------------------------

    def keep(self, data: bytes) -> None:
        incoming = self.spool.incoming_file()
        try:
            incoming.write(data)
            incoming.flush()
        finally:
            incoming.close()
        temp = Path(incoming.name)
        try:
            try:
                with open(temp, "rb") as fp:
                    ds = read_received_header(fp, sorted(HEADER_KEYWORDS))
                sop_class, sop_instance = text_value(ds, "SOPClassUID"), text_value(ds, "SOPInstanceUID")
                header = read_header(ds, sop_class=sop_class, sop_instance=sop_instance)
            except Exception as exc:  # pydicom may raise anything on broken data
                log.warning("priors.object_refused", extra=fields(reason=f"{type(exc).__name__}: {str(exc)[:120]}"))
                return
            if self.store.current_instances(header.sop_instance_uid):
                return
            path, size, sha256 = self.spool.keep(temp, header, None)
            syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
        finally:
            temp.unlink(missing_ok=True)
        record = InstanceRecord(
            sop_instance_uid=header.sop_instance_uid, sop_class_uid=header.sop_class_uid, study_uid=header.study_uid,
            series_uid=header.series_uid, patient_id=header.patient_id, accession=header.accession, modality=header.modality,
            manufacturer=header.manufacturer, kind=header.kind, transfer_syntax=syntax, size=size, sha256=sha256,
            path=str(path.relative_to(self.spool.root)), calling_ae="dicomweb",
        )  # fmt: skip
        row_id = self.store.add_instance(record, supersede=False, destinations=())
        self.notify(header.kind, row_id)
