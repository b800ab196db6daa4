"""PACS simulator: C-STORE, Storage Commitment (Push Model) and MPPS SCP.

Keeps what it receives in a folder (``<study uid>/<sop uid>.dcm``, names
validated), checks each object and answers commitment requests with an
N-EVENT-REPORT, on the same association by default or on a new one to a
peer from ``commit_peers`` (``{"DXA1": ("127.0.0.1", 11113)}``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from simulators.dicom_common import (
    MPPS,
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    set_nodelay,
    status_of,
    status_text,
)
from simulators.report import ConformanceReport
from simulators.uids import safe_name, uid_problem

log = logging.getLogger("dxa-sim.pacs")

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID")
UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
STORAGE_UIDS = {cx.abstract_syntax for cx in AllStoragePresentationContexts}


@dataclass
class PacsOptions:
    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "PACS"
    folder: str = "pacs-received"
    commit_mode: str = "same"  # same | new
    commit_peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    commit_delay: float = 0.0  # seconds before the N-EVENT-REPORT
    store_status: int | None = None  # force this C-STORE status (fault tests)
    strict: bool = True  # answer a failure status when a check fails
    max_pdu: int = 1048576
    max_associations: int = 64
    tls_cert: str = ""  # DICOM TLS (PS3.15 B.9) on our port: our certificate and key (PEM)
    tls_key: str = ""
    tls_ca: str = ""  # with TLS: the CA a calling peer's certificate must chain to (then required)


class PacsSimulator:
    def __init__(self, options: PacsOptions | None = None, **kw) -> None:
        self.options = options or PacsOptions(**kw)
        self.folder = Path(self.options.folder)
        self._report = ConformanceReport("pacs")
        self._lock = threading.Lock()
        self.instances: dict[str, dict] = {}  # SOP instance UID -> info
        self.mpps: dict[str, Dataset] = {}
        self.commitments: list[dict] = []
        self._pending_reports: dict[int, list[Dataset]] = {}  # id(assoc) -> reports to send
        self._server = None
        self._done = threading.Event()
        self.ae = self._make_ae()

    # -- API -----------------------------------------------------------------

    def report(self) -> ConformanceReport:
        with self._lock:
            self._report.stats.update(
                instances=len(self.instances),
                bytes=sum(i["size"] for i in self.instances.values()),
                mpps=len(self.mpps),
                commitments=len(self.commitments),
            )
        return self._report

    def start(self) -> "PacsSimulator":
        self.folder.mkdir(parents=True, exist_ok=True)
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_C_ECHO, lambda e: 0x0000),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_N_ACTION, self._on_n_action),
            (evt.EVT_DIMSE_SENT, self._on_dimse_sent),
            (evt.EVT_N_CREATE, self._on_n_create),
            (evt.EVT_N_SET, self._on_n_set),
        ]
        context = None
        if self.options.tls_cert:
            from simulators.tls import server_tls

            context = server_tls(self.options.tls_cert, self.options.tls_key, self.options.tls_ca)
        self._server = self.ae.start_server((self.options.host, self.options.port), block=False, evt_handlers=handlers, ssl_context=context)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._done.set()

    def run(self) -> ConformanceReport:
        """Serve until :meth:`stop` (the CLI calls it on SIGINT/SIGTERM)."""
        if self._server is None:
            self.start()
        self._done.wait()
        return self.report()

    def wait_for(self, instances: int = 0, commitments: int = 0, mpps_completed: int = 0, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = (
                    len(self.instances) >= instances
                    and sum(1 for c in self.commitments if c.get("reported")) >= commitments
                    and sum(1 for d in self.mpps.values() if d.get("PerformedProcedureStepStatus") == "COMPLETED") >= mpps_completed
                )
            if done:
                return True
            time.sleep(0.02)
        return False

    # -- setup ---------------------------------------------------------------

    def _make_ae(self) -> AE:
        o = self.options
        ae = AE(ae_title=o.ae_title)
        ae.maximum_pdu_size = o.max_pdu
        ae.maximum_associations = o.max_associations
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TS)
        ae.add_supported_context(Verification)
        # the requestor may propose SCU role only (default) for commitment
        ae.add_supported_context(STORAGE_COMMITMENT)
        ae.add_supported_context(MPPS)
        ae.require_called_aet = False
        return ae

    # -- C-STORE -------------------------------------------------------------

    def _on_store(self, event) -> int:
        o = self.options
        r = self._report
        context_class = str(event.context.abstract_syntax)
        req_uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            ds = event.dataset
        except Exception as exc:  # noqa: BLE001 - any decode failure is bad input
            r.add(f"C-STORE {req_uid} decodes", False, f"{type(exc).__name__}: {exc}")
            return 0xC000
        problems = []
        for kw in REQUIRED:
            if not str(ds.get(kw, "") or ""):
                problems.append(f"{kw} missing")
        for kw in UID_KEYWORDS:
            if kw in ds and ds.get(kw):
                why = uid_problem(ds.get(kw))
                if why:
                    problems.append(f"{kw} {why}")
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class and sop_class != context_class:
            problems.append(f"SOPClassUID {sop_class} != presentation context {context_class}")
        if context_class not in STORAGE_UIDS:
            problems.append(f"{context_class} is not a storage SOP class")
        if req_uid and str(ds.get("SOPInstanceUID", "")) != req_uid:
            problems.append("SOPInstanceUID differs from the C-STORE Affected SOP Instance UID")
        sop_uid = str(ds.get("SOPInstanceUID", "") or req_uid)
        name = f"C-STORE {sop_uid or '?'} ({_class_name(context_class)})"
        r.add(name, not problems, "; ".join(problems) or f"from {event.assoc.requestor.ae_title}")
        if o.store_status is not None:
            return o.store_status
        if problems and o.strict:
            return 0xA900 if any("!=" in p for p in problems) else 0xC000
        study = safe_name(str(ds.get("StudyInstanceUID", "nostudy")))
        path = self.folder / study / f"{safe_name(sop_uid)}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = event.encoded_dataset(include_meta=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        with self._lock:
            self.instances[sop_uid] = {
                "sop_class": sop_class,
                "study": str(ds.get("StudyInstanceUID", "")),
                "series": str(ds.get("SeriesInstanceUID", "")),
                "patient_id": str(ds.get("PatientID", "")),
                "path": str(path),
                "size": len(data),
                "calling_ae": event.assoc.requestor.ae_title,
            }
        return 0x0000

    # -- Storage Commitment (PS3.4 J) ----------------------------------------

    def _on_n_action(self, event):
        r = self._report
        req = event.request
        if str(req.RequestedSOPClassUID) != STORAGE_COMMITMENT:
            return 0x0122, None
        if int(req.ActionTypeID) != 1:
            r.add("N-ACTION action type", False, f"Action Type ID {req.ActionTypeID} (expected 1)")
            return 0x0123, None
        info = event.action_information
        problems = []
        txn = str(info.get("TransactionUID", "") or "")
        if uid_problem(txn):
            problems.append(f"TransactionUID {uid_problem(txn)}")
        if str(req.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_INSTANCE:
            problems.append(f"Requested SOP Instance {req.RequestedSOPInstanceUID} is not the well-known {STORAGE_COMMITMENT_INSTANCE}")
        refs = info.get("ReferencedSOPSequence") or []
        if not refs:
            problems.append("ReferencedSOPSequence is empty")
        ok_refs, failed = Sequence(), Sequence()
        with self._lock:
            for item in refs:
                uid, cls = str(item.get("ReferencedSOPInstanceUID", "")), str(item.get("ReferencedSOPClassUID", ""))
                out = Dataset()
                out.ReferencedSOPClassUID = cls
                out.ReferencedSOPInstanceUID = uid
                have = self.instances.get(uid)
                if have is None:
                    out.FailureReason = 0x0112  # no such object instance
                    failed.append(out)
                elif have["sop_class"] != cls:
                    out.FailureReason = 0x0119  # class / instance conflict
                    failed.append(out)
                else:
                    ok_refs.append(out)
        r.add(f"N-ACTION storage commitment {txn}", not problems, "; ".join(problems) or f"{len(refs)} references")
        if problems and not txn:
            return 0x0110, None
        rep = Dataset()
        rep.TransactionUID = txn
        rep.RetrieveAETitle = self.options.ae_title
        if ok_refs:
            rep.ReferencedSOPSequence = ok_refs
        if failed:
            rep.FailedSOPSequence = failed
        entry = {"transaction": txn, "ok": len(ok_refs), "failed": len(failed), "calling_ae": event.assoc.requestor.ae_title, "reported": False}
        with self._lock:
            self.commitments.append(entry)
        if self.options.commit_mode == "new":
            threading.Thread(target=self._report_new_assoc, args=(event.assoc.requestor.ae_title, rep, entry), daemon=True).start()
        else:
            with self._lock:
                self._pending_reports.setdefault(id(event.assoc), []).append((rep, entry))
        return 0x0000, None

    def _on_dimse_sent(self, event) -> None:
        # The N-ACTION response is out: now the report may follow on the
        # same association (PS3.4 J.3.3), sent from another thread so the
        # association's reactor keeps running.
        if type(event.message).__name__ != "N_ACTION_RSP":
            return
        with self._lock:
            reps = self._pending_reports.pop(id(event.assoc), [])
        for rep, entry in reps:
            threading.Thread(target=self._report_same_assoc, args=(event.assoc, rep, entry), daemon=True).start()

    def _event_type(self, rep: Dataset) -> int:
        return 2 if "FailedSOPSequence" in rep else 1

    def _report_same_assoc(self, assoc, rep: Dataset, entry: dict) -> None:
        if self.options.commit_delay:
            time.sleep(self.options.commit_delay)
        if not assoc.is_established:
            peer = self.options.commit_peers.get(entry["calling_ae"])
            if peer:
                self._report_new_assoc(entry["calling_ae"], rep, entry, delay=False)
            else:
                self._report.add(f"N-EVENT-REPORT {entry['transaction']}", False, "association closed before the report and no commit peer is configured")
            return
        try:
            rsp = assoc.send_n_event_report(rep, self._event_type(rep), STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)[0]
        except Exception as exc:  # noqa: BLE001
            self._report.add(f"N-EVENT-REPORT {entry['transaction']}", False, f"{type(exc).__name__}: {exc}")
            return
        self._finish_report(entry, status_of(rsp), "same association")

    def _report_new_assoc(self, calling_ae: str, rep: Dataset, entry: dict, delay: bool = True) -> None:
        if self.options.commit_delay and delay:
            time.sleep(self.options.commit_delay)
        peer = self.options.commit_peers.get(calling_ae)
        if peer is None:
            self._report.add(f"N-EVENT-REPORT {entry['transaction']}", False, f"no commit peer for AE {calling_ae!r}")
            return
        ae = AE(ae_title=self.options.ae_title)
        # PS3.4 J.3.3: on a new association the commitment SCP proposes the SCP role
        ae.add_requested_context(STORAGE_COMMITMENT)
        role = build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
        assoc = ae.associate(peer[0], peer[1], ae_title=calling_ae, ext_neg=[role], evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
        if not assoc.is_established:
            self._report.add(f"N-EVENT-REPORT {entry['transaction']}", False, f"association to {calling_ae}@{peer[0]}:{peer[1]} refused")
            return
        try:
            rsp = assoc.send_n_event_report(rep, self._event_type(rep), STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)[0]
        finally:
            assoc.release()
        self._finish_report(entry, status_of(rsp), "new association")

    def _finish_report(self, entry: dict, status: int | None, how: str) -> None:
        ok = status == 0x0000
        with self._lock:
            entry["reported"] = ok
        self._report.add(f"N-EVENT-REPORT {entry['transaction']}", ok, f"{status_text(status)} ({how}, {entry['ok']} committed, {entry['failed']} failed)")

    # -- MPPS (PS3.4 F.7) ----------------------------------------------------

    def _on_n_create(self, event):
        r = self._report
        req = event.request
        uid = str(req.AffectedSOPInstanceUID or "")
        ds = event.attribute_list
        problems = []
        if uid_problem(uid):
            problems.append(f"Affected SOP Instance UID {uid_problem(uid)}")
        if ds.get("PerformedProcedureStepStatus") != "IN PROGRESS":
            problems.append(f"status {ds.get('PerformedProcedureStepStatus')!r} (PS3.4 F.7.2.1: must be IN PROGRESS)")
        for kw in ("ScheduledStepAttributesSequence", "PerformedProcedureStepID", "PerformedStationAETitle", "PerformedProcedureStepStartDate", "Modality"):
            if kw not in ds:
                problems.append(f"{kw} missing")
        sched = ds.get("ScheduledStepAttributesSequence") or []
        if sched and not sched[0].get("StudyInstanceUID"):
            problems.append("ScheduledStepAttributesSequence[0].StudyInstanceUID missing")
        with self._lock:
            dup = uid in self.mpps
        if dup:
            problems.append("duplicate SOP Instance UID")
        r.add(f"MPPS N-CREATE {uid}", not problems, "; ".join(problems) or f"accession {sched[0].get('AccessionNumber', '') if sched else ''}")
        if dup:
            return 0x0111, None
        if problems:
            return 0x0110, None
        with self._lock:
            self.mpps[uid] = ds
        return 0x0000, ds

    def _on_n_set(self, event):
        r = self._report
        uid = str(event.request.RequestedSOPInstanceUID or "")
        mod = event.modification_list
        with self._lock:
            current = self.mpps.get(uid)
        if current is None:
            r.add(f"MPPS N-SET {uid}", False, "no such MPPS instance")
            return 0x0112, None
        problems = []
        if current.get("PerformedProcedureStepStatus") in ("COMPLETED", "DISCONTINUED"):
            problems.append(f"already {current.PerformedProcedureStepStatus} (PS3.4 F.7.2.2: no N-SET after the final state)")
        status = mod.get("PerformedProcedureStepStatus", current.get("PerformedProcedureStepStatus"))
        missing_refs = []
        if status == "COMPLETED":
            series = mod.get("PerformedSeriesSequence") or []
            if not series:
                problems.append("COMPLETED without a Performed Series Sequence")
            for s in series:
                for kw in ("SeriesInstanceUID", "RetrieveAETitle"):
                    if kw not in s:
                        problems.append(f"Performed Series item without {kw}")
                refs = list(s.get("ReferencedImageSequence") or []) + list(s.get("ReferencedNonImageCompositeSOPInstanceSequence") or [])
                with self._lock:
                    missing_refs += [str(x.ReferencedSOPInstanceUID) for x in refs if str(x.ReferencedSOPInstanceUID) not in self.instances]
            if not mod.get("PerformedProcedureStepEndDate"):
                problems.append("COMPLETED without Performed Procedure Step End Date")
        detail = "; ".join(problems) or f"status {status}"
        if missing_refs:
            detail += f" ({len(missing_refs)} referenced instances not received here)"
        r.add(f"MPPS N-SET {uid} {status}", not problems, detail)
        if problems:
            return 0x0110, None
        with self._lock:
            for elem in mod:
                current[elem.tag] = elem
        return 0x0000, mod


ALL_TS = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
]


def _class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else uid
