"""DXA scanner simulator: MWL query, MPPS, C-STORE, Storage Commitment.

One exam, as a densitometer does it (IHE RAD Scheduled Workflow):

1. C-FIND the Modality Worklist (1.2.840.10008.5.1.4.31) for this station's
   AE title, today and modality BMD;
2. MPPS N-CREATE IN PROGRESS (PS3.4 F.7.2.1) linking accession, requested
   procedure ID, SPS ID and Study Instance UID;
3. C-STORE the report images (Secondary Capture, 8-bit RGB), the BMD SR in
   the vendor's layout and an X-Ray Radiation Dose SR;
4. Storage Commitment N-ACTION (PS3.4 J.3.2) and wait for the
   N-EVENT-REPORT, on the same association or on a new one to our
   ``commit_port``;
5. MPPS N-SET COMPLETED with the Performed Series Sequence.

Every DIMSE status becomes a check in the report.  ``patients``,
``concurrency`` and ``rate`` turn it into a load generator.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from simulators import datasets
from simulators.dicom_common import (
    MPPS,
    MWL_FIND,
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    is_success,
    set_nodelay,
    status_of,
    status_text,
)
from simulators.report import ConformanceReport


@dataclass
class Endpoint:
    host: str
    port: int
    ae_title: str


@dataclass
class ScannerOptions:
    vendor: str = "hologic"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 11112
    called_ae: str = "DXAGW"
    ae_title: str = "DXA1"
    mwl: Endpoint | None = None  # default: the gateway
    mpps: Endpoint | None = None  # default: the gateway; None + no_mpps skips MPPS
    store: Endpoint | None = None  # default: the gateway (commitment goes here too)
    no_mpps: bool = False
    no_commit: bool = False
    commit_port: int | None = None  # listen here for N-EVENT-REPORT on a new association
    commit_timeout: float = 30.0
    patients: int | None = None  # None: every worklist hit (1 made-up when unscheduled)
    concurrency: int = 1
    rate: float = 0.0  # exams started per second (0 = as fast as possible)
    seed: int | None = None
    unscheduled: bool = False
    images: int = 2
    results: str = "sr"  # sr: results in the BMD SR; images: only in report images (one per scan); both
    modality: str = "OT"  # of the result images (Hologic: OT, BD at one site)
    date: str = ""  # YYYYMMDD to query (default today)
    timeout: float = 30.0
    max_pdu: int = 1048576
    ihe_keys: bool = False  # ask for the full IHE Scheduled Workflow return-key set (RAD-5)
    scan_at: str = ""  # YYYYMMDDHHMMSS local: the scanner's clock for MPPS and study dates (back-dated runs)
    tls_ca: str = ""  # DICOM TLS toward every endpoint: the gateway's CA (PEM); with tls_cert/tls_key our certificate
    tls_cert: str = ""
    tls_key: str = ""

    def endpoint(self, which: str) -> Endpoint:
        ep = getattr(self, which)
        return ep or Endpoint(self.gateway_host, self.gateway_port, self.called_ae)


@dataclass
class Exam:
    index: int
    header: Dataset  # patient/study attributes for the objects
    scheduled: Dataset | None  # the worklist item, None when unscheduled
    objects: list[Dataset] = field(default_factory=list)
    mpps_uid: str = ""
    ok: bool = True
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"exam {self.index} [{self.header.get('AccessionNumber', '') or 'unscheduled'}]"


class ScannerSimulator:
    def __init__(self, options: ScannerOptions | None = None, **kw) -> None:
        self.options = options or ScannerOptions(**kw)
        if self.options.vendor not in datasets.VENDORS:
            raise ValueError(f"vendor must be one of {sorted(datasets.VENDORS)}")
        self._report = ConformanceReport("scanner")
        self.seed = self.options.seed if self.options.seed is not None else random.SystemRandom().randrange(2**31)
        self.worklist: list[Dataset] = []
        self.exams: list[Exam] = []
        self._commit_waiters: dict[str, tuple[threading.Event, dict]] = {}
        self._lock = threading.Lock()
        self._commit_server = None
        self._stop = threading.Event()

    def report(self) -> ConformanceReport:
        return self._report

    def clock(self) -> tuple[str, str]:
        """(DA, TM) now, or the ``scan_at`` time when one is given."""
        at = self.options.scan_at
        if at:
            return at[:8], (at[8:] + "000000")[:6]
        return time.strftime("%Y%m%d"), time.strftime("%H%M%S")

    def stop(self) -> None:
        """Ask a running load to stop starting new exams."""
        self._stop.set()

    def start(self) -> ConformanceReport:
        return self.run()

    # -- the whole run -------------------------------------------------------

    def run(self) -> ConformanceReport:
        o = self.options
        r = self._report
        r.stats.update(seed=self.seed, vendor=o.vendor, sr_source=datasets.sr_source())
        t0 = time.perf_counter()
        if o.commit_port is not None and not o.no_commit:
            self._start_commit_scp()
        try:
            self.worklist = self.query_worklist()
            exams = self.plan_exams(self.worklist)
            if not exams:
                r.add("exams to perform", False, "no worklist hits (use --unscheduled to scan made-up patients)")
                return r
            self._perform_all(exams)
        finally:
            if self._commit_server is not None:
                self._commit_server.shutdown()
                self._commit_server = None
        elapsed = time.perf_counter() - t0
        self._stats(elapsed)
        return r

    def _perform_all(self, exams: list[Exam]) -> None:
        o = self.options
        start = time.monotonic()

        def one(exam: Exam) -> None:
            if o.rate > 0:
                due = start + exam.index / o.rate
                while not self._stop.is_set() and time.monotonic() < due:
                    time.sleep(min(0.05, due - time.monotonic()))
            if self._stop.is_set():
                return
            t = time.perf_counter()
            try:
                self.perform(exam)
            except Exception as exc:  # noqa: BLE001 - one exam's crash is a failed check
                self._report.add(f"{exam.label} completed", False, f"{type(exc).__name__}: {exc}")
                exam.ok = False
            exam.seconds = time.perf_counter() - t

        self.exams = exams
        if o.concurrency <= 1:
            for exam in exams:
                one(exam)
        else:
            with ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="exam") as pool:
                list(pool.map(one, exams))

    def _stats(self, elapsed: float) -> None:
        done = [e for e in self.exams if e.seconds]
        objects = sum(len(e.objects) for e in done)
        size = sum(len(getattr(d, "PixelData", b"") or b"") for e in done for d in e.objects)
        lat = sorted(e.seconds for e in done)
        self._report.stats.update(
            worklist_items=len(self.worklist),
            exams=len(done),
            exams_ok=sum(1 for e in done if e.ok),
            objects=objects,
            pixel_mb=round(size / 1e6, 1),
            elapsed_s=round(elapsed, 3),
        )
        if lat and elapsed:
            self._report.stats.update(
                exams_per_s=round(len(done) / elapsed, 2),
                exam_s_p50=round(lat[len(lat) // 2], 3),
                exam_s_p95=round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 3),
                exam_s_max=round(lat[-1], 3),
            )

    # -- association helper ---------------------------------------------------

    def _associate(self, ep: Endpoint, contexts: list[tuple[str, list[str]]], handlers=None):
        ae = AE(ae_title=self.options.ae_title)
        ae.maximum_pdu_size = self.options.max_pdu
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.options.timeout
        for abstract, ts in contexts:
            ae.add_requested_context(abstract, ts)
        tls_args = None
        if self.options.tls_ca:
            from simulators.tls import client_tls

            tls_args = (client_tls(self.options.tls_ca, self.options.tls_cert, self.options.tls_key), ep.host)
        return ae.associate(ep.host, ep.port, ae_title=ep.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)] + (handlers or []), tls_args=tls_args)

    # -- 1. worklist ----------------------------------------------------------

    def worklist_query(self) -> Dataset:
        o = self.options
        q = Dataset()
        q.SpecificCharacterSet = ""
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID", "ReferringPhysicianName"):
            setattr(q, kw, "")
        q.RequestedProcedureCodeSequence = Sequence()
        sps = Dataset()
        sps.ScheduledStationAETitle = o.ae_title
        sps.ScheduledProcedureStepStartDate = o.date or time.strftime("%Y%m%d")
        sps.ScheduledProcedureStepStartTime = ""
        sps.Modality = "BMD"
        sps.ScheduledProcedureStepID = ""
        sps.ScheduledProcedureStepDescription = ""
        sps.ScheduledPerformingPhysicianName = ""
        q.ScheduledProcedureStepSequence = Sequence([sps])
        return q

    def ihe_worklist_query(self) -> Dataset:
        """The RAD-5 query of IHE RAD TF-2 4.5 (Table 4.5-3): every required return key.

        The code and reference sequences are asked with an item of empty
        (universal) keys, as IHE modalities ask them (PS3.4 C.2.2.2.6).
        """
        o = self.options
        q = Dataset()
        q.SpecificCharacterSet = ""
        for kw in IHE_RETURN_KEYS:
            q.add_new(kw, dictionary_VR(kw), None)  # zero length, whatever the VR
        for kw, sub in IHE_SEQUENCE_KEYS.items():
            setattr(q, kw, Sequence([_empty_item(sub)]))
        sps = Dataset()
        for kw in IHE_SPS_RETURN_KEYS:
            sps.add_new(kw, dictionary_VR(kw), None)
        sps.ScheduledStationAETitle = o.ae_title
        sps.ScheduledProcedureStepStartDate = o.date or time.strftime("%Y%m%d")
        sps.Modality = "BMD"
        sps.ScheduledProtocolCodeSequence = Sequence([_empty_item(CODE_KEYS)])
        q.ScheduledProcedureStepSequence = Sequence([sps])
        return q

    def query_worklist(self) -> list[Dataset]:
        o = self.options
        r = self._report
        ep = o.endpoint("mwl")
        assoc = self._associate(ep, [(MWL_FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])])
        if not assoc.is_established:
            r.add("MWL association", False, f"{ep.ae_title}@{ep.host}:{ep.port} {'rejected' if assoc.is_rejected else 'not established'}")
            return []
        items: list[Dataset] = []
        final = None
        query = self.ihe_worklist_query() if o.ihe_keys else self.worklist_query()
        try:
            for status, identifier in assoc.send_c_find(query, MWL_FIND):
                final = status_of(status)
                if final in (0xFF00, 0xFF01) and identifier is not None:
                    items.append(identifier)
        finally:
            assoc.release()
        r.add("MWL C-FIND", final == 0x0000, f"final {status_text(final)}, {len(items)} items")
        want_ae = o.ae_title
        want_date = query.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate
        for i, item in enumerate(items):
            problems = []
            for kw in ("PatientID", "StudyInstanceUID"):
                if not item.get(kw):
                    problems.append(f"{kw} empty")
            sps = (item.get("ScheduledProcedureStepSequence") or [None])[0]
            if sps is None:
                problems.append("no Scheduled Procedure Step Sequence item")
            else:
                if sps.get("ScheduledStationAETitle") not in (None, "", want_ae):
                    problems.append(f"station AE {sps.ScheduledStationAETitle!r} != {want_ae!r}")
                date = str(sps.get("ScheduledProcedureStepStartDate", "") or "")
                if date and not _date_matches(date, want_date):
                    problems.append(f"start date {date} != {want_date}")
                if sps.get("Modality") not in (None, "", "BMD"):
                    problems.append(f"modality {sps.Modality!r} != BMD")
                if not sps.get("ScheduledProcedureStepID"):
                    problems.append("SPS ID empty")
            if o.ihe_keys:
                problems += [f"requested key {kw} not returned (PS3.4 C.4.1.1.3.2)" for kw in _missing_keys(query, item)]
            if not str(item.get("SpecificCharacterSet", "") or "").strip() and _has_non_ascii(item):
                problems.append("non-ASCII text without a Specific Character Set (PS3.3 C.12.1.1.2)")
            r.add(f"MWL item {i + 1} [{item.get('AccessionNumber', '')}] matches the query", not problems, "; ".join(problems) or str(item.get("PatientID", "")))
        return items

    # -- planning -------------------------------------------------------------

    def plan_exams(self, items: list[Dataset]) -> list[Exam]:
        o = self.options
        want = o.patients if o.patients is not None else (len(items) if items else (1 if o.unscheduled else 0))
        exams: list[Exam] = []
        now_date, now_time = self.clock()
        for i, item in enumerate(items[:want]):
            h = Dataset()
            for kw in ("SpecificCharacterSet", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID", "StudyInstanceUID", "AccessionNumber", "ReferringPhysicianName", "EthnicGroup"):
                if kw in item and item.get(kw) is not None:
                    setattr(h, kw, item.get(kw))
            h.StudyDate, h.StudyTime = now_date, now_time
            exams.append(Exam(i, h, item))
        if o.unscheduled:
            for i in range(len(exams), want):
                exams.append(Exam(i, self._made_up_patient(i, now_date, now_time), None))
        return exams

    def _made_up_patient(self, i: int, date: str, tm: str) -> Dataset:
        from simulators.orders import random_order

        rng = random.Random(f"{self.seed}-patient-{i}")
        order = random_order(rng, i, day=date, station_ae=self.options.ae_title, prefix="UNS")
        h = Dataset()
        h.SpecificCharacterSet = "ISO_IR 192"
        h.PatientID = order.patient.patient_id
        h.PatientName = order.patient.dicom_name
        h.PatientBirthDate = order.patient.birth_date
        h.PatientSex = order.patient.sex
        h.StudyInstanceUID = datasets.seeded_uid(rng)
        h.AccessionNumber = ""
        h.StudyDate, h.StudyTime = date, tm
        return h

    # -- one exam -------------------------------------------------------------

    def build_objects(self, exam: Exam) -> list[Dataset]:
        o = self.options
        rng = random.Random(f"{self.seed}-exam-{exam.index}-{exam.header.get('StudyInstanceUID', '')}")
        if o.results in ("images", "both"):
            objs = datasets.build_result_objects(o.vendor, exam.header, rng, results=o.results, modality=o.modality)
        else:
            objs = [
                datasets.build_report_image(o.vendor, exam.header, rng, index=n, station_ae=o.ae_title) for n in range(o.images)
            ]
            objs.append(datasets.build_bmd_sr(o.vendor, exam.header, rng))
        objs.append(datasets.build_dose_sr(exam.header, rng))
        for ds in objs:
            ds.StudyInstanceUID = exam.header.StudyInstanceUID
            if exam.mpps_uid:
                ref = Dataset()
                ref.ReferencedSOPClassUID = MPPS
                ref.ReferencedSOPInstanceUID = exam.mpps_uid
                ds.ReferencedPerformedProcedureStepSequence = Sequence([ref])
            if exam.scheduled is not None and "PixelData" in ds:
                ds.RequestAttributesSequence = Sequence([_request_attributes(exam.scheduled)])
        return objs

    def perform(self, exam: Exam) -> None:
        o = self.options
        rng = random.Random(f"{self.seed}-mpps-{exam.index}")
        exam.mpps_uid = "" if o.no_mpps else datasets.seeded_uid(rng)
        start_date, start_time = self.clock()
        if not o.no_mpps:
            exam.ok &= self._mpps_create(exam, start_date, start_time)
        exam.objects = self.build_objects(exam)
        exam.ok &= self._store_and_commit(exam)
        if not o.no_mpps:
            exam.ok &= self._mpps_set(exam)
        self._report.add(f"{exam.label} completed", exam.ok, f"{len(exam.objects)} objects")

    def mpps_create_dataset(self, exam: Exam, start_date: str, start_time: str) -> Dataset:
        o = self.options
        h, s = exam.header, exam.scheduled
        ds = Dataset()
        ds.SpecificCharacterSet = h.get("SpecificCharacterSet", "ISO_IR 192") or "ISO_IR 192"
        # PS3.4 F.7.2.1 Table F.7.2-1, Performed Procedure Step Relationship
        ssa = Dataset()
        ssa.StudyInstanceUID = h.StudyInstanceUID
        ssa.ReferencedStudySequence = Sequence()
        ssa.AccessionNumber = h.get("AccessionNumber", "")
        ssa.RequestedProcedureID = s.get("RequestedProcedureID", "") if s is not None else ""
        ssa.RequestedProcedureDescription = s.get("RequestedProcedureDescription", "") if s is not None else ""
        sps = (s.get("ScheduledProcedureStepSequence") or [Dataset()])[0] if s is not None else Dataset()
        ssa.ScheduledProcedureStepID = sps.get("ScheduledProcedureStepID", "")
        ssa.ScheduledProcedureStepDescription = sps.get("ScheduledProcedureStepDescription", "")
        ssa.ScheduledProtocolCodeSequence = Sequence()
        ds.ScheduledStepAttributesSequence = Sequence([ssa])
        ds.PatientName = h.get("PatientName", "")
        ds.PatientID = h.get("PatientID", "")
        ds.IssuerOfPatientID = h.get("IssuerOfPatientID", "")
        ds.PatientBirthDate = h.get("PatientBirthDate", "")
        ds.PatientSex = h.get("PatientSex", "")
        ds.ReferencedPatientSequence = Sequence()
        # Performed Procedure Step Information
        ds.PerformedProcedureStepID = f"PPS{exam.index:04d}{start_time}"
        ds.PerformedStationAETitle = o.ae_title
        ds.PerformedStationName = o.ae_title
        ds.PerformedLocation = "DXA room 1"
        ds.PerformedProcedureStepStartDate = start_date
        ds.PerformedProcedureStepStartTime = start_time
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.PerformedProcedureStepDescription = ssa.RequestedProcedureDescription or "DXA"
        ds.PerformedProcedureTypeDescription = ""
        ds.ProcedureCodeSequence = Sequence()
        ds.PerformedProcedureStepEndDate = ""
        ds.PerformedProcedureStepEndTime = ""
        # Image Acquisition Results
        ds.Modality = "BMD"
        ds.StudyID = ""
        ds.PerformedProtocolCodeSequence = Sequence()
        ds.PerformedSeriesSequence = Sequence()
        return ds

    def mpps_set_dataset(self, exam: Exam) -> Dataset:
        o = self.options
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "COMPLETED"
        ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = self.clock()
        store = o.endpoint("store")
        series: dict[str, list[Dataset]] = {}
        for obj in exam.objects:
            series.setdefault(obj.SeriesInstanceUID, []).append(obj)
        items = []
        for uid, objs in series.items():
            it = Dataset()
            it.PerformingPhysicianName = ""
            it.OperatorsName = "Tech^Tina"
            it.ProtocolName = str(objs[0].get("ProtocolName", "") or objs[0].get("SeriesDescription", "") or "DXA")
            it.SeriesInstanceUID = uid
            it.SeriesDescription = str(objs[0].get("SeriesDescription", "") or "")
            it.RetrieveAETitle = store.ae_title
            images = [d for d in objs if "PixelData" in d]
            others = [d for d in objs if "PixelData" not in d]
            it.ReferencedImageSequence = Sequence([_ref(d) for d in images])
            it.ReferencedNonImageCompositeSOPInstanceSequence = Sequence([_ref(d) for d in others])
            items.append(it)
        ds.PerformedSeriesSequence = Sequence(items)
        return ds

    def _mpps_create(self, exam: Exam, start_date: str, start_time: str) -> bool:
        ep = self.options.endpoint("mpps")
        assoc = self._associate(ep, [(MPPS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])])
        name = f"{exam.label} MPPS N-CREATE IN PROGRESS"
        if not assoc.is_established:
            return self._report.add(name, False, f"association to {ep.ae_title}@{ep.host}:{ep.port} failed")
        try:
            status, _ = assoc.send_n_create(self.mpps_create_dataset(exam, start_date, start_time), MPPS, exam.mpps_uid)
        finally:
            assoc.release()
        st = status_of(status)
        return self._report.add(name, is_success(st), status_text(st))

    def _mpps_set(self, exam: Exam) -> bool:
        ep = self.options.endpoint("mpps")
        assoc = self._associate(ep, [(MPPS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])])
        name = f"{exam.label} MPPS N-SET COMPLETED"
        if not assoc.is_established:
            return self._report.add(name, False, f"association to {ep.ae_title}@{ep.host}:{ep.port} failed")
        try:
            status, _ = assoc.send_n_set(self.mpps_set_dataset(exam), MPPS, exam.mpps_uid)
        finally:
            assoc.release()
        st = status_of(status)
        return self._report.add(name, is_success(st), status_text(st))

    # -- 3 + 4. storage and commitment ----------------------------------------

    def _store_and_commit(self, exam: Exam) -> bool:
        o = self.options
        r = self._report
        ep = o.endpoint("store")
        classes = sorted({str(d.SOPClassUID) for d in exam.objects})
        contexts = []
        for c in classes:  # one context per transfer syntax, so the dataset's own is accepted as is
            contexts.append((c, [ExplicitVRLittleEndian]))
            contexts.append((c, [ImplicitVRLittleEndian]))
        if not o.no_commit:
            contexts.append((STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
        assoc = self._associate(
            ep, contexts, handlers=[(evt.EVT_N_EVENT_REPORT, self._on_event_report), (evt.EVT_PDU_SENT, self._on_pdu_sent)]
        )
        if not assoc.is_established:
            return r.add(f"{exam.label} storage association", False, f"{ep.ae_title}@{ep.host}:{ep.port} {'rejected' if assoc.is_rejected else 'not established'}")
        ok = True
        try:
            for n, ds in enumerate(exam.objects, 1):
                kind = "image" if "PixelData" in ds else ("dose SR" if str(ds.SOPClassUID) == datasets.XRAY_DOSE_SR else "BMD SR")
                try:
                    status = assoc.send_c_store(ds)
                    st = status_of(status)
                    detail = status_text(st)
                except (ValueError, RuntimeError) as exc:
                    st, detail = None, f"{type(exc).__name__}: {exc}"
                ok &= r.add(f"{exam.label} C-STORE {kind} {n}", is_success(st), detail)
                if not assoc.is_established:
                    break
            if o.no_commit or not ok or not assoc.is_established:
                return ok
            ok &= self._commit(exam, assoc)
        finally:
            if assoc.is_established:
                assoc.release()
        return ok

    def commit_request(self, exam: Exam, txn: str) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = txn
        ds.ReferencedSOPSequence = Sequence([_ref(d) for d in exam.objects])
        return ds

    def _commit(self, exam: Exam, assoc) -> bool:
        o = self.options
        r = self._report
        txn = datasets.seeded_uid(random.Random(f"{self.seed}-txn-{exam.index}"))
        done = threading.Event()
        result: dict = {}
        with self._lock:
            self._commit_waiters[txn] = (done, result)
        try:
            status, _ = assoc.send_n_action(self.commit_request(exam, txn), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
            st = status_of(status)
            if not r.add(f"{exam.label} StgCmt N-ACTION", is_success(st, warning_ok=False), status_text(st)):
                return False
            # the report may come on this association (the reactor serves it)
            # or on a new one to our commit SCP; keep this one open meanwhile
            if not done.wait(o.commit_timeout):
                return r.add(f"{exam.label} StgCmt N-EVENT-REPORT", False, f"none within {o.commit_timeout:g} s")
        finally:
            with self._lock:
                self._commit_waiters.pop(txn, None)
        info: Dataset = result["info"]
        sent = {str(d.SOPInstanceUID) for d in exam.objects}
        committed = {str(x.ReferencedSOPInstanceUID) for x in info.get("ReferencedSOPSequence") or []}
        failed = {str(x.ReferencedSOPInstanceUID): int(x.get("FailureReason", 0) or 0) for x in info.get("FailedSOPSequence") or []}
        problems = []
        if result["event_type"] != 1:
            problems.append(f"Event Type ID {result['event_type']} (1 = all committed)")
        if failed:
            problems.append(f"{len(failed)} failed (reasons {sorted({f'0x{v:04X}' for v in failed.values()})})")
        if committed != sent and not failed:
            problems.append(f"{len(sent - committed)} sent but not listed, {len(committed - sent)} listed but not sent")
        return r.add(f"{exam.label} StgCmt N-EVENT-REPORT", not problems, "; ".join(problems) or f"{len(committed)} committed ({result['how']})")

    def _on_event_report(self, event):
        info = event.event_information
        txn = str(info.get("TransactionUID", ""))
        with self._lock:
            waiter = self._commit_waiters.get(txn)
        if waiter is None:
            self._report.add("StgCmt N-EVENT-REPORT for a known transaction", False, f"unknown Transaction UID {txn!r}")
            return 0x0110, None
        done, result = waiter
        same = event.assoc.is_requestor
        result.update(info=info, event_type=int(event.request.EventTypeID), how="same association" if same else "new association")
        if same:
            # Release only after our N-EVENT-REPORT-RSP has gone out:
            # pynetdicom refuses a P-DATA once its A-RELEASE-RQ is sent
            # (InvalidEventError in Sta7), and the gateway would wait for it.
            event.assoc._sim_commit_done = done
        else:
            done.set()
        return 0x0000, None

    @staticmethod
    def _on_pdu_sent(event):
        # The N-EVENT-REPORT-RSP is the only P-DATA we send while we wait
        # (EVT_DIMSE_SENT fires before its PDU is even queued).
        done = getattr(event.assoc, "_sim_commit_done", None)
        if done is not None and type(event.pdu).__name__ == "P_DATA_TF":
            event.assoc._sim_commit_done = None
            done.set()

    def _start_commit_scp(self) -> None:
        o = self.options
        ae = AE(ae_title=o.ae_title)
        ae.add_supported_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], scu_role=False, scp_role=True)
        ae.require_called_aet = False
        self._commit_server = ae.start_server(
            ("0.0.0.0", o.commit_port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_event_report), (evt.EVT_CONN_OPEN, set_nodelay)],
        )


# IHE RAD TF-2 Table 4.5-3 (RAD-5 Modality Worklist return keys, R and R+).
IHE_RETURN_KEYS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "PatientBirthDate", "PatientSex",
    "PatientWeight", "PatientSize", "ConfidentialityConstraintOnPatientDataDescription",
    "PatientState", "PregnancyStatus", "MedicalAlerts", "Allergies", "SpecialNeeds",
    "AdmissionID", "CurrentPatientLocation",
    "AccessionNumber", "RequestingPhysician", "ReferringPhysicianName",
    "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID",
    "RequestedProcedurePriority", "PatientTransportArrangements",
)
CODE_KEYS = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
REFERENCE_KEYS = ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID")
IHE_SEQUENCE_KEYS = {
    "RequestedProcedureCodeSequence": CODE_KEYS,
    "ReferencedStudySequence": REFERENCE_KEYS,
    "ReferencedPatientSequence": REFERENCE_KEYS,
}
IHE_SPS_RETURN_KEYS = (
    "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "Modality",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledStationName",
    "ScheduledProcedureStepLocation", "PreMedication", "ScheduledProcedureStepID", "RequestedContrastAgent",
    "ScheduledProcedureStepStatus",
)


def _empty_item(keywords) -> Dataset:
    ds = Dataset()
    for kw in keywords:
        ds.add_new(kw, dictionary_VR(kw), None)
    return ds


def _missing_keys(query: Dataset, item: Dataset, prefix: str = "") -> list[str]:
    """Requested keys absent from a response (an SCP returns every key it supports)."""
    out = []
    for elem in query:
        if elem.keyword == "SpecificCharacterSet":
            continue
        if elem.tag not in item:
            out.append(prefix + elem.keyword)
        elif elem.VR == "SQ" and elem.value and len(elem.value[0]):
            for n, sub in enumerate(item[elem.tag].value or []):
                out += _missing_keys(elem.value[0], sub, f"{prefix}{elem.keyword}[{n}].")
    return out


def _ref(ds: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return ref


def _request_attributes(item: Dataset) -> Dataset:
    """Request Attributes Sequence item (PS3.3 C.7.3.1) from the worklist item."""
    ra = Dataset()
    ra.AccessionNumber = item.get("AccessionNumber", "")
    ra.RequestedProcedureID = item.get("RequestedProcedureID", "")
    sps = (item.get("ScheduledProcedureStepSequence") or [Dataset()])[0]
    ra.ScheduledProcedureStepID = sps.get("ScheduledProcedureStepID", "")
    ra.ScheduledProcedureStepDescription = sps.get("ScheduledProcedureStepDescription", "")
    return ra


def _has_non_ascii(ds: Dataset) -> bool:
    """Any text value with a byte/character beyond ASCII (sequences included)."""
    for elem in ds.iterall():
        if elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC") and elem.value is not None:
            values = elem.value if elem.VM > 1 else [elem.value]
            if any(not str(v).isascii() for v in values):
                return True
    return False


def _date_matches(value: str, want: str) -> bool:
    if "-" in value:
        lo, _, hi = value.partition("-")
        return (not lo or lo <= want) and (not hi or want <= hi)
    return value == want
