"""Scanner QA (README "Running a DXA service").

A scan whose Patient ID matches ``qa.phantom_patient_ids`` is a phantom: it
is never routed (gateway/dicom/storage.py), never an exam or a report
(gateway/exams.py hands it here); its one BMD joins its scanner's series,
keyed by Device Serial Number.  The rules are in mappings/qa.py.  A patient
exam from a scanner whose QA failed or is overdue carries a flag into its
report; with ``qa.block_worklist_on_fail`` the scanner's station (the
calling AE title of its phantom scans) gets an empty worklist while it fails.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from gateway.config import QaSettings
from gateway.logs import fields
from gateway.store.qa import QaScanRow
from mappings import qa as rules
from mappings.bmd.models import BmdExam

log = logging.getLogger("gateway.qa")

MAX_SCANNER_LABELS = 64  # metric series per scanner; the rest are labelled "other"
STATUS_VALUE = {rules.OK: 0, rules.BASELINE: 1, rules.OVERDUE: 2, rules.FAIL: 3}  # dxagw_qa_status


def _utc(at: str) -> datetime:
    return datetime.fromisoformat(at).astimezone(timezone.utc)


class QaService:
    def __init__(self, store, settings: QaSettings) -> None:
        self.store = store
        self.settings = settings
        self._lock = threading.Lock()
        self._series: dict[str, list[QaScanRow]] = {}  # serial -> scans, loaded once, appended after

    def is_phantom(self, patient_id: str) -> bool:
        return rules.is_phantom(patient_id, self.settings.phantom_patient_ids)

    # -- intake (exam thread) -----------------------------------------------------

    def take(self, instance_id: int, record, exam: dict | None) -> bool:
        """Keep a phantom scan's BMD in its scanner's series; True when the object
        is a phantom (whatever it held: it never becomes an exam)."""
        patient_id = record.patient_id or str((exam or {}).get("patient_id") or "")
        if not self.is_phantom(patient_id):
            return False
        found = BmdExam.from_dict(exam) if exam else None
        serial = found.device.serial.strip() if found else ""
        value = rules.phantom_bmd(found) if found else None
        if not serial or value is None:
            why = "no BMD results read" if found is None else "no Device Serial Number" if not serial else "no single BMD (spine total) in it"
            self.store.set_results(instance_id, "none", f"phantom scan (QA) not kept: {why}")
            # an image without results is usual (the scan image beside the report): not a warning
            (log.info if found is None else log.warning)("qa.phantom_unused", extra=fields(instance=instance_id, calling_ae=record.calling_ae, reason=why))
            return True
        at = rules.scan_time(found.exam_date, found.exam_time)
        scanned = (at.astimezone(timezone.utc) if at else datetime.now(timezone.utc)).isoformat(timespec="seconds")
        row = QaScanRow(
            0, serial, instance_id, record.calling_ae, found.device.manufacturer, found.device.model,
            patient_id, value[0], str(value[1]), scanned, "",
        )
        with self._lock:
            self._load(serial)
            if self.store.add_qa_scan(row):
                self._series[serial] = self.store.qa_scans(serial)
        summary = self.summary(serial)
        log.info(
            "qa.scan",
            extra=fields(instance=instance_id, serial=serial, calling_ae=record.calling_ae, bmd=str(value[1]), status=summary.status,
                         deviation_percent=summary.last_deviation_percent, rules=list(summary.last_rules)),
        )  # fmt: skip
        return True

    # -- reading ------------------------------------------------------------------

    def _load(self, serial: str) -> list[QaScanRow]:
        if serial not in self._series:
            self._series[serial] = self.store.qa_scans(serial)
        return self._series[serial]

    def serials(self) -> list[str]:
        return self.store.qa_serials()

    def scans(self, serial: str) -> list[QaScanRow]:
        with self._lock:
            return list(self._load(serial))

    def summary(self, serial: str, now: datetime | None = None) -> rules.QaSummary:
        series = [rules.QaScan(_utc(r.scanned_at), float(r.bmd)) for r in self.scans(serial)]
        s = self.settings
        return rules.evaluate(
            series, now or datetime.now(timezone.utc),
            baseline_scans=s.baseline_scans, tolerance_percent=s.tolerance_percent, overdue_days=s.overdue_days,
        )

    def station_of(self, serial: str) -> str:
        scans = self.scans(serial)
        return scans[-1].station_ae if scans else ""

    # -- effects ------------------------------------------------------------------

    def flag(self, exam: BmdExam, now: datetime | None = None) -> BmdExam:
        """The patient exam with a flag when its scanner's QA failed or is overdue
        (docs/domain.md section 1 item 7: what affects reliability goes to the person reporting)."""
        serial = exam.device.serial.strip()
        if not serial or not self.scans(serial):
            return exam
        s = self.summary(serial, now)
        last = s.last.at.date().isoformat() if s.last else "?"
        if s.status == rules.FAIL:
            note = (
                f"Scanner QA failed: the last phantom scan of scanner {serial} ({last}) was {s.last_deviation_percent:+.1f}% "
                f"from its baseline ({', '.join(s.last_rules)}): these results may be unreliable."
            )
        elif s.status == rules.OVERDUE:
            note = f"Scanner QA overdue: no phantom scan of scanner {serial} since {last} (more than {self.settings.overdue_days:g} days)."
        else:
            return exam
        if note in exam.flags:
            return exam
        return BmdExam.from_dict({**exam.to_dict(), "flags": [*exam.flags, note]})

    def blocked_stations(self) -> frozenset[str]:
        """Station AE titles whose scanner failed QA (qa.block_worklist_on_fail)."""
        if not self.settings.block_worklist_on_fail:
            return frozenset()
        now = datetime.now(timezone.utc)
        return frozenset(self.station_of(s) for s in self.serials() if self.summary(s, now).status == rules.FAIL) - {""}

    def overview(self, now: datetime | None = None) -> list[dict]:
        """Every scanner: status, last scan, baseline, last value, deviation (GET /api/qa)."""
        now = now or datetime.now(timezone.utc)
        out = []
        for serial in self.serials():
            s, scans = self.summary(serial, now), self.scans(serial)
            last = scans[-1] if scans else None
            out.append({
                "serial": serial, "status": s.status, "scans": s.scans, "station_ae": last.station_ae if last else "",
                "manufacturer": last.manufacturer if last else "", "model": last.model if last else "",
                "last_scan": last.scanned_at if last else None, "last_bmd": last.bmd if last else None,
                "baseline_mean": _r(s.baseline_mean), "baseline_sd": _r(s.baseline_sd), "baseline_scans": self.settings.baseline_scans,
                "deviation_percent": s.last_deviation_percent, "rules": list(s.last_rules),
            })  # fmt: skip
        return out

    def series(self, serial: str, now: datetime | None = None) -> dict | None:
        """The scanner's control chart (GET /api/qa/{serial}); None when unknown."""
        scans = self.scans(serial)
        if not scans:
            return None
        s = self.summary(serial, now)
        checks = {c.at: c for c in s.checks}
        n_base = self.settings.baseline_scans
        points = []
        for i, r in enumerate(scans):
            c = checks.get(_utc(r.scanned_at)) if i >= n_base else None
            points.append({
                "scanned_at": r.scanned_at, "bmd": r.bmd, "site": r.site, "station_ae": r.station_ae, "patient_id": r.patient_id,
                "phase": "baseline" if i < n_base else "check",
                "deviation_percent": c.deviation_percent if c else None, "rules": list(c.rules) if c else [],
                "cusum_high": c.cusum_high if c else None, "cusum_low": c.cusum_low if c else None,
            })  # fmt: skip
        return {
            "serial": serial, "status": s.status, "baseline_mean": _r(s.baseline_mean), "baseline_sd": _r(s.baseline_sd),
            "tolerance_percent": self.settings.tolerance_percent, "scans": points,
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


class QaCollector:
    """Prometheus, at scrape time: ``dxagw_qa_status{scanner}`` (0 ok, 1 baseline,
    2 overdue, 3 fail) and ``dxagw_qa_deviation_percent{scanner}``; past
    MAX_SCANNER_LABELS scanners the rest are one series ``other`` (the worst)."""

    def __init__(self, qa: QaService) -> None:
        self.qa = qa

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        status = GaugeMetricFamily("dxagw_qa_status", "Scanner QA status: 0 ok, 1 baseline, 2 overdue, 3 fail", labels=["scanner"])
        deviation = GaugeMetricFamily("dxagw_qa_deviation_percent", "Last phantom BMD from the baseline mean, percent", labels=["scanner"])
        other_status, other_dev = None, None
        for n, row in enumerate(self.qa.overview()):
            value, dev = STATUS_VALUE[row["status"]], row["deviation_percent"]
            if n < MAX_SCANNER_LABELS:
                status.add_metric([row["serial"]], value)
                if dev is not None:
                    deviation.add_metric([row["serial"]], dev)
                continue
            other_status = max(value, other_status or 0)
            if dev is not None and (other_dev is None or abs(dev) > abs(other_dev)):
                other_dev = dev
        if other_status is not None:
            status.add_metric(["other"], other_status)
        if other_dev is not None:
            deviation.add_metric(["other"], other_dev)
        yield status
        yield deviation
