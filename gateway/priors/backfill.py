"""``dxa-gateway priors backfill``: import the results of a PACS's past DXA
studies, so the first day's reports have their comparisons (issue 18).

Two phases, both resumable from the store (another run of the same command
goes on where a stopped or killed one left off):

1. survey: study-level C-FIND per date window (``priors.backfill.query_days``)
   or per patient of ``--patients``; each qualifying study becomes a
   ``prior_studies`` row (queued), the window is the run's cursor;
2. retrieve: each queued study is C-MOVEd to the running daemon, at most
   ``priors.backfill.studies_per_second``; the daemon's C-STORE SCP knows
   the rows, so the objects are priors (not routed, not reported).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from tqdm import tqdm

from gateway.config import Config, storage_path
from gateway.priors.service import PriorService
from gateway.priors.sources import SourceDown, StudyQuery
from gateway.spool import Spool
from gateway.store import open_store
from mappings.priors import query_windows


@dataclass
class Summary:
    found: int = 0
    retrieved: int = 0
    failed: int = 0
    mismatch: int = 0
    objects: int = 0
    seconds: float = 0.0


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
    sources = [s for s in config.priors.sources if s.method == "c-move"]
    if not sources:
        raise SystemExit("priors backfill needs a priors source with method c-move (the objects go to the running daemon)")
    data = storage_path(config)
    store = open_store(str(data))
    service = PriorService(config, store, Spool(data, 0), notify=lambda kind, row: None, on_done=lambda exam_id: None)
    source = next(s for s in service.sources if s.method == "c-move")
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
