"""``dxa-gateway priors backfill``: import the results of a PACS's past DXA
studies, so the first day's reports have their comparisons (README "Priors from the PACS").

Two phases, both resumable from the store (another run of the same command
goes on where a stopped or killed one left off):

1. survey: study-level C-FIND (or QIDO-RS) of the first ``priors.sources``
   entry per date window (``priors.backfill.query_days``) or per patient of
   ``--patients``; each qualifying study becomes a ``prior_studies`` row
   (queued), the window is the run's cursor;
2. retrieve: each queued study is C-MOVEd to the running daemon (or fetched
   here by C-GET / WADO-RS and C-STOREd to it), at most
   ``priors.backfill.studies_per_second``; the daemon's C-STORE SCP knows
   the rows, so the objects are priors (not routed, not reported).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, _config
from tqdm import tqdm

from gateway.config import Config, open_configured_store, storage_path
from gateway.priors.service import PriorService
from gateway.priors.sources import SourceDown, StudyQuery
from gateway.spool import Spool
from mappings.priors import query_windows


@dataclass
class Summary:
    found: int = 0
    retrieved: int = 0
    failed: int = 0
    mismatch: int = 0
    objects: int = 0
    seconds: float = 0.0


class DaemonForwarder:
    """C-STORE SCU to the running daemon (``dicom.host``/``port``, called and calling AE
    ``dicom.ae_title``): an object this process fetched by C-GET or WADO-RS enters
    through the daemon's own Storage SCP, where its ``prior_studies`` row makes it a
    prior, read by the daemon's result reader like any other."""

    def __init__(self, config: Config) -> None:
        host = config.dicom.host
        self.host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        self.port = config.dicom.port
        self.ae_title = config.dicom.ae_title
        self.timeout = config.dicom.network_timeout
        self.folder = Path(tempfile.mkdtemp(prefix="dxagw-backfill-"))
        _config.STORE_SEND_CHUNKED_DATASET = True  # the file goes as fetched, not decoded and re-encoded

    def keep(self, data: bytes) -> None:
        head = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID"])
        sop_class, syntax = str(head.file_meta.MediaStorageSOPClassUID), str(head.file_meta.TransferSyntaxUID)
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.add_requested_context(sop_class, [syntax])  # sent as fetched, in its own transfer syntax
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        except OSError as exc:
            raise SourceDown(f"the daemon's Storage SCP: cannot connect ({type(exc).__name__})") from None
        if not assoc.is_established:
            raise SourceDown("the daemon's Storage SCP refused the association (is dicom.ae_title an allowed calling AE?)")
        path = self.folder / "object.dcm"
        try:
            path.write_bytes(data)
            status = assoc.send_c_store(path)
        finally:
            assoc.release()
            path.unlink(missing_ok=True)
        code = int(status.Status) if status is not None and "Status" in status else -1
        if code != 0x0000 and code & 0xF000 != 0xB000:  # PS3.4 B.2.3: success or warning
            raise SourceDown(f"the daemon's Storage SCP answered 0x{code:04X}" if code >= 0 else "the daemon's Storage SCP did not answer")


def read_patients(path: Path) -> list[tuple[str, str]]:
    """(patient ID, issuer) per non-empty line: ``ID`` or ``ID<TAB>ISSUER``; '#' starts a comment."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pid, _, issuer = line.partition("\t")
            out.append((pid.strip(), issuer.strip()))
    return out


def run_backfill(config: Config, since: str, patients_file: Path | None = None, rate: float | None = None, out=sys.stderr) -> Summary:
    since = since.replace("-", "")
    if not config.priors.sources:
        raise SystemExit("priors backfill needs priors.sources")
    data = storage_path(config)
    store = open_configured_store(config)
    service = PriorService(config, store, Spool(data, 0), notify=lambda kind, row: None, on_done=lambda exam_id: None)
    source = service.sources[0]  # the first source: the backfill walks one PACS
    forwarder = None
    if source.method != "c-move":
        # C-GET and WADO-RS bring the objects here: they go on to the daemon's Storage SCP
        forwarder = DaemonForwarder(config)
        service.keep = forwarder.keep
    patients = read_patients(patients_file) if patients_file else None
    key = since + "|" + (hashlib.sha256(patients_file.read_bytes()).hexdigest() if patients_file else "")
    run_id, state, cursor = store.backfill_run(key, since)
    started = time.monotonic()
    summary = Summary()
    try:
        if state == "surveying":
            _survey(service, store, source, run_id, since, cursor, patients, config.priors.backfill.query_days, out)
            store.set_backfill_run(run_id, state="retrieving")
        _retrieve(service, store, source, rate or config.priors.backfill.studies_per_second, summary, out)
        store.set_backfill_run(run_id, state="finished")
    finally:
        service.close()
        if forwarder is not None:
            shutil.rmtree(forwarder.folder, ignore_errors=True)
        counts = store.prior_counts().get("backfill", {})
        summary.found = sum(counts.values())
        summary.retrieved, summary.failed, summary.mismatch = counts.get("retrieved", 0), counts.get("failed", 0), counts.get("mismatch", 0)
        summary.seconds = time.monotonic() - started
        store.close()
    print(
        f"backfill since {since}: {summary.found} DXA studies found, {summary.retrieved} retrieved"
        f" ({summary.objects} objects this run), {summary.failed} failed, {summary.mismatch} refused (identity), in {summary.seconds:.1f} s",
        file=out,
    )
    return summary


def _survey(service, store, source, run_id, since, cursor, patients, days, out) -> None:
    if patients is not None:
        steps = [(str(i), StudyQuery(patient_id=pid, issuer=issuer, date_from=since)) for i, (pid, issuer) in enumerate(patients)]
        done = int(cursor) + 1 if cursor else 0
        steps = steps[done:]
    else:
        # up to yesterday: a study of today may still be on its way to the gateway as a live exam
        windows = query_windows(since, (date.today() - timedelta(days=1)).strftime("%Y%m%d"), days)
        steps = [(end, StudyQuery(date_from=start, date_to=end)) for start, end in windows if not cursor or end > cursor]
    for mark, query in tqdm(steps, desc="survey", unit="query", file=out, mininterval=0.5):
        studies = source.find(query)  # SourceDown stops the run; the cursor keeps what was done
        store.add_prior_studies(service.choose(studies, None, "", "", source.name, origin="backfill"))
        store.set_backfill_run(run_id, cursor=mark)


def _retrieve(service, store, source, rate: float, summary: Summary, out) -> None:
    counts = store.prior_counts().get("backfill", {})
    total = sum(counts.values())
    done = total - counts.get("queued", 0) - counts.get("retrieving", 0)
    pause = 1.0 / rate
    with tqdm(total=total, initial=done, desc="retrieve", unit="study", file=out, mininterval=0.5) as bar:
        while rows := store.backfill_studies(("retrieving", "queued"), limit=50):
            for row in rows:
                began = time.monotonic()
                try:
                    summary.objects += service.fetch(source, row.study_uid)
                except SourceDown as exc:
                    bar.write(f"{row.study_uid}: {exc}")
                bar.update(1)
                time.sleep(max(0.0, pause - (time.monotonic() - began)))  # the rate limit toward the PACS
