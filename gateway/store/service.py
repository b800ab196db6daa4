"""The service-KPI aggregate of the store: each order's way through the
service as :class:`mappings.kpis.Episode` values.

A mixin over the database contract of gateway/store/db.py (uses ``_query``).
Times without a zone (HL7 TS, DICOM DA/TM) are the gateway host's local time.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

import orjson

from mappings.kpis import Episode
from mappings.kpis import dose_finding
from mappings.kpis import findings as exam_findings


def _local(value: str | None) -> datetime | None:
    """ISO 8601 or HL7/DICOM digits (YYYYMMDD[HH[MM[SS]]]) as an aware datetime;
    one without a zone is taken as local time."""
    if not value:
        return None
    try:
        if "-" in value[:8] or "T" in value:
            when = datetime.fromisoformat(value)
            return when if when.tzinfo is not None else when.astimezone()
        d = value.split(".", 1)[0].split("+", 1)[0].split("-", 1)[0]
        if len(d) < 8 or not d.isdigit():
            return None
        d = (d + "000000")[:14]
        return datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]), int(d[10:12]), int(d[12:14])).astimezone()
    except ValueError:
        return None


def _day(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return None


def _dicom_value(attrs: dict, tag: str) -> str:
    values = (attrs.get(tag) or {}).get("Value") or [""]
    return str(values[0] or "")


class ServiceAggregate(Protocol):
    """The service KPIs' episodes."""

    def service_episodes(self) -> list[Episode]: ...  # fmt: skip


class ServiceStore:
    #: worklist_items.item's "referred_at" (SQLite; the PostgreSQL store has its own)
    _REFERRED_AT = "json_extract(CAST(item AS TEXT), '$.referred_at')"

    def service_episodes(self) -> list[Episode]:
        """Every order, and every study scanned without one (blocking read)."""
        first_mpps: dict[str, tuple[str, datetime | None]] = {}  # study or "#item" -> (scanner, start)
        for item_id, study, calling_ae, created, attributes in self._query(
            "SELECT worklist_item_id, study_uid, calling_ae, created_at, attributes FROM mpps ORDER BY id"
        ):
            try:
                attrs = orjson.loads(attributes)
            except orjson.JSONDecodeError:
                attrs = {}
            # PS3.3 C.4.14: Performed Procedure Step Start Date (0040,0244) and Time (0040,0245)
            start = _local(_dicom_value(attrs, "00400244") + _dicom_value(attrs, "00400245")) or _local(created)
            for key in (f"#{item_id}" if item_id is not None else None, study):
                if key and key not in first_mpps:
                    first_mpps[key] = (calling_ae, start)
        first_object = {
            study: (calling_ae, _local(received))
            for study, received, calling_ae in self._query(
                # the study's first object (by arrival): when, and from which scanner
                "SELECT i.study_uid, i.received_at, i.calling_ae FROM instances i"
                " JOIN (SELECT MIN(id) AS id FROM instances WHERE study_uid != '' GROUP BY study_uid) f ON f.id = i.id"
            )
        }
        findings: dict[str, tuple] = {}
        for study, analysis in self._query("SELECT study_uid, analysis FROM exams WHERE state = 'parsed' ORDER BY id"):
            if study in findings or not analysis:
                continue
            data = orjson.loads(analysis)
            findings[study] = (*exam_findings(data), dose_finding(data))
        delivery: dict[int, list[tuple[str, str | None]]] = {}
        for ref_id, state, delivered in self._query("SELECT ref_id, state, delivered_at FROM outbox WHERE ref_table = 'reports' AND kind = 'report'"):
            delivery.setdefault(ref_id, []).append((state, delivered))
        reports: dict[str, tuple[datetime | None, datetime | None]] = {}
        for study, report_id, released in self._query(
            "SELECT e.study_uid, r.id, r.released_at FROM reports r JOIN exams e ON e.id = r.exam_id ORDER BY r.id"
        ):
            if study in reports:
                continue
            rows = delivery.get(report_id, [])
            done = bool(rows) and all(state == "done" for state, _ in rows)
            times = [t for t in (_local(d) for _, d in rows) if t is not None]
            reports[study] = (_local(released), max(times) if done and times else None)

        episodes: list[Episode] = []
        seen_studies: set[str] = set()
        # The item is JSON text stored as a BLOB: the database reads the one key.
        for item_id, status, start_date, station, study, created, referred in self._query(
            f"SELECT id, status, start_date, station_ae, study_uid, created_at, {self._REFERRED_AT} FROM worklist_items"
        ):
            seen_studies.add(study)
            episodes.append(self._episode(status, _day(start_date), station, _local(referred) or _local(created),
                                          first_mpps.get(f"#{item_id}") or first_mpps.get(study) or first_object.get(study),
                                          findings.get(study), reports.get(study)))  # fmt: skip
        for study, scan in first_object.items():
            if study not in seen_studies:
                episodes.append(self._episode("", None, "", None, first_mpps.get(study) or scan, findings.get(study), reports.get(study)))
        return episodes

    @staticmethod
    def _episode(status, scheduled, station, referred, scan, finding, report) -> Episode:
        scanner, scanned_at = scan or ("", None)
        category, prompts, dose = finding or ("", 0, None)
        reported_at, delivered_at = report or (None, None)
        return Episode(status, scheduled, station, referred, scanned_at, scanner, reported_at, delivered_at, category, prompts, dose)
