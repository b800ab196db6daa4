"""Scanner QA service over a real SQLite store (gateway/qa.py).

Seed 001 "Quality assurance": issues that could affect a scan's reliability
are given to the person reporting it -- the flag on a patient exam from a
scanner whose QA failed or is overdue.  Metric labels are bounded.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from gateway.config import QaSettings
from gateway.qa import MAX_SCANNER_LABELS, QaCollector, QaService
from gateway.store import InstanceRecord
from gateway.store.sqlite import SqliteStore
from mappings.bmd.models import BmdExam, Device, RegionResult

NOW = datetime.now(timezone.utc)


def _record(uid: str, patient_id: str = "PHANTOM1", ae: str = "DXAQA1") -> InstanceRecord:
    return InstanceRecord(uid, "1.2.840.10008.5.1.4.1.1.88.33", "1.2." + uid, "1.3." + uid, patient_id, "", "SR", "HOLOGIC", "sr", "1.2.840.10008.1.2.1", 1, "0" * 64, f"x/{uid}.dcm", ae)


def _phantom(serial: str, bmd: str, at: datetime) -> dict:
    local = at.astimezone()
    return BmdExam(
        patient_id="PHANTOM1", exam_date=local.strftime("%Y%m%d"), exam_time=local.strftime("%H%M%S"),
        device=Device("HOLOGIC", "Horizon A", serial), regions=(RegionResult("L1-L4", None, Decimal(bmd)),),
    ).to_dict()  # fmt: skip


def _take(store, qa, serial, bmd, at, n):
    rec = _record(f"9.{serial}.{n}".replace("-", ""))
    iid = store.add_instance(rec, supersede=False, destinations=())
    return qa.take(iid, store.get_instance(iid).record, _phantom(serial, bmd, at))


def test_patient_exam_flagged_when_its_scanner_failed_or_is_overdue(tmp_path):
    store = SqliteStore(tmp_path / "gw.sqlite")
    try:
        qa = QaService(store, QaSettings(baseline_scans=3))
        start = NOW - timedelta(hours=5)
        for n, bmd in enumerate(["1.000", "1.002", "0.998"]):
            assert _take(store, qa, "SN1", bmd, start + timedelta(minutes=n), n)
        patient = BmdExam(patient_id="P1", device=Device("HOLOGIC", "Horizon A", "SN1"))
        assert qa.flag(patient) == patient  # baseline complete, no check failed
        assert _take(store, qa, "SN1", "0.970", start + timedelta(hours=1), 3)
        flagged = qa.flag(patient)
        assert flagged.flags[-1].startswith("Scanner QA failed: the last phantom scan of scanner SN1") and "-3.0%" in flagged.flags[-1]
        assert qa.flag(flagged) == flagged  # said once
        assert qa.blocked_stations() == frozenset()  # block_worklist_on_fail off
        assert _take(store, qa, "SN1", "1.000", start + timedelta(hours=2), 4)
        overdue = qa.flag(patient, now=NOW + timedelta(days=4))
        assert overdue.flags[-1].startswith("Scanner QA overdue: no phantom scan of scanner SN1 since")
        # an exam from a scanner without phantom scans, or without a serial, is not flagged
        assert qa.flag(BmdExam(patient_id="P2", device=Device("GE", "iDXA", "OTHER"))).flags == ()
        # a patient object is not taken; the phantom's object is marked read
        iid = store.add_instance(_record("7.7", patient_id="P1"), supersede=False, destinations=())
        assert not qa.take(iid, store.get_instance(iid).record, _phantom("SN1", "1.0", NOW))
        assert store.results_state(iid) == "pending"
        assert [s.bmd for s in store.qa_scans("SN1")] == ["1.000", "1.002", "0.998", "0.970", "1.000"]
    finally:
        store.close()


def test_phantom_without_serial_is_kept_out_and_marked(tmp_path):
    store = SqliteStore(tmp_path / "gw.sqlite")
    try:
        qa = QaService(store, QaSettings())
        iid = store.add_instance(_record("5.5"), supersede=False, destinations=())
        assert qa.take(iid, store.get_instance(iid).record, _phantom("", "1.0", NOW))
        assert store.results_state(iid) == "none" and qa.serials() == []
    finally:
        store.close()


def test_metric_labels_are_capped_with_the_rest_as_other(tmp_path):
    store = SqliteStore(tmp_path / "gw.sqlite")
    try:
        qa = QaService(store, QaSettings(baseline_scans=2, block_worklist_on_fail=True))
        for s in range(MAX_SCANNER_LABELS + 3):
            for n, bmd in enumerate(["1.000", "1.000", "0.950" if s == MAX_SCANNER_LABELS + 1 else "1.000"]):
                _take(store, qa, f"SN{s:03d}", bmd, NOW - timedelta(hours=3 - n), n)
        status, deviation = list(QaCollector(qa).collect())
        labels = [sample.labels["scanner"] for sample in status.samples]
        assert len(labels) == MAX_SCANNER_LABELS + 1 and labels[-1] == "other"
        assert status.samples[-1].value == 3  # the worst of the rest: one failed
        assert deviation.samples[-1].labels == {"scanner": "other"} and deviation.samples[-1].value == -5.0
        assert qa.blocked_stations() == frozenset({"DXAQA1"})
    finally:
        store.close()
