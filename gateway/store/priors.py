"""The priors aggregate of the store (README "Priors from the PACS"): studies asked of the PACS,
each exam's prior lookup, backfill runs.

A mixin over the database contract of gateway/store/db.py (``_transaction``,
``_query``, ``_query_one``, and the audit's ``_audit``).  A ``prior_studies`` row is written
before the C-MOVE is sent, so the objects it brings through our own C-STORE
SCP are known as priors (kept out of the routes and the reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class PriorStudyRow:
    study_uid: str
    patient_id: str
    issuer: str
    study_date: str
    source: str
    origin: str  # lookup, backfill
    state: str  # queued, retrieving, retrieved, failed, mismatch
    note: str
    for_exam: int | None


@dataclass(frozen=True, slots=True)
class PriorLookupRow:
    exam_id: int
    state: str  # running, done, failed
    deadline: str
    note: str
    found: int
    started_at: str
    finished_at: str | None


_STUDY = "study_uid, patient_id, issuer, study_date, source, origin, state, note, for_exam"
_LOOKUP = "exam_id, state, deadline, note, found, started_at, finished_at"


class PriorsAggregate(Protocol):
    """Priors from the PACS: studies asked for, each exam's lookup, backfill runs."""

    def prior_study(self, study_uid: str) -> PriorStudyRow | None: ...  # fmt: skip
    def add_prior_studies(self, rows: list[PriorStudyRow]) -> int: ...  # fmt: skip
    def set_prior_study(self, study_uid: str, state: str, note: str=...) -> None: ...  # fmt: skip
    def prior_studies_for(self, patient_id: str, *, exam_id: int | None=..., state: str | None=...) -> list[PriorStudyRow]: ...  # fmt: skip
    def backfill_studies(self, states: tuple[str, ...], limit: int=...) -> list[PriorStudyRow]: ...  # fmt: skip
    def study_known(self, study_uid: str) -> bool: ...  # fmt: skip
    def prior_counts(self) -> dict[str, dict[str, int]]: ...  # fmt: skip
    def start_prior_lookup(self, exam_id: int, deadline: str) -> bool: ...  # fmt: skip
    def finish_prior_lookup(self, exam_id: int, *, state: str, note: str=..., found: int=...) -> None: ...  # fmt: skip
    def prior_lookup(self, exam_id: int) -> PriorLookupRow | None: ...  # fmt: skip
    def running_prior_lookups(self) -> list[PriorLookupRow]: ...  # fmt: skip
    def lookup_counts(self) -> dict[str, int]: ...  # fmt: skip
    def backfill_run(self, run_key: str, since: str) -> tuple[int, str, str]: ...  # fmt: skip
    def set_backfill_run(self, run_id: int, *, state: str | None=..., cursor: str | None=...) -> None: ...  # fmt: skip
    def backfill_runs(self) -> list[dict]: ...  # fmt: skip


class PriorStore:
    # -- prior studies -------------------------------------------------------------

    def prior_study(self, study_uid: str) -> PriorStudyRow | None:
        row = self._query_one(f"SELECT {_STUDY} FROM prior_studies WHERE study_uid = ?", (study_uid,))
        return PriorStudyRow(*row) if row else None

    def add_prior_studies(self, rows: list[PriorStudyRow]) -> int:
        """Record studies to fetch (or refused); an existing row is kept. Returns how many were new."""
        now, added = _now(), 0
        with self._transaction() as conn:
            for r in rows:
                cur = conn.execute(
                    f"INSERT INTO prior_studies ({_STUDY}, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (study_uid) DO NOTHING",
                    (r.study_uid, r.patient_id, r.issuer, r.study_date, r.source, r.origin, r.state, r.note[:300], r.for_exam, now, now),
                )
                added += cur.rowcount
        return added

    def set_prior_study(self, study_uid: str, state: str, note: str = "") -> None:
        now = _now()
        with self._transaction() as conn:
            conn.execute("UPDATE prior_studies SET state = ?, note = ?, updated_at = ? WHERE study_uid = ?", (state, note[:300], now, study_uid))
            if state == "retrieved":  # patient data imported from the PACS: in the audit trail
                row = conn.execute("SELECT source, origin FROM prior_studies WHERE study_uid = ?", (study_uid,)).fetchone()
                if row is not None:
                    self._audit(conn, now, "priors.retrieved", row[1], {"study_uid": study_uid, "source": row[0]})

    def prior_studies_for(self, patient_id: str, *, exam_id: int | None = None, state: str | None = None) -> list[PriorStudyRow]:
        sql, args = f"SELECT {_STUDY} FROM prior_studies WHERE patient_id = ?", [patient_id]
        if exam_id is not None:
            sql += " AND for_exam = ?"
            args.append(exam_id)
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        return [PriorStudyRow(*r) for r in self._query(sql + " ORDER BY study_date", tuple(args))]

    def backfill_studies(self, states: tuple[str, ...], limit: int = 100) -> list[PriorStudyRow]:
        """Backfill studies in ``states``, oldest first."""
        marks = ", ".join("?" * len(states))
        rows = self._query(
            f"SELECT {_STUDY} FROM prior_studies WHERE origin = 'backfill' AND state IN ({marks}) ORDER BY study_date, study_uid LIMIT ?",
            (*states, limit),
        )
        return [PriorStudyRow(*r) for r in rows]

    def study_known(self, study_uid: str) -> bool:
        """True when objects of the study are in the spool index already."""
        return self._query_one("SELECT 1 FROM instances WHERE study_uid = ? LIMIT 1", (study_uid,)) is not None

    def prior_counts(self) -> dict[str, dict[str, int]]:
        """{origin: {state: count}} of prior studies."""
        out: dict[str, dict[str, int]] = {}
        for origin, state, n in self._query("SELECT origin, state, COUNT(*) FROM prior_studies GROUP BY origin, state"):
            out.setdefault(origin, {})[state] = n
        return out

    # -- each exam's lookup -------------------------------------------------------------

    def start_prior_lookup(self, exam_id: int, deadline: str) -> bool:
        """Record the exam's lookup; False when it has one already."""
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO prior_lookups (exam_id, state, deadline, started_at) VALUES (?, 'running', ?, ?) ON CONFLICT (exam_id) DO NOTHING",
                (exam_id, deadline, _now()),
            )
            return cur.rowcount == 1

    def finish_prior_lookup(self, exam_id: int, *, state: str, note: str = "", found: int = 0) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE prior_lookups SET state = ?, note = ?, found = ?, finished_at = ? WHERE exam_id = ?",
                (state, note[:300], found, _now(), exam_id),
            )

    def prior_lookup(self, exam_id: int) -> PriorLookupRow | None:
        row = self._query_one(f"SELECT {_LOOKUP} FROM prior_lookups WHERE exam_id = ?", (exam_id,))
        return PriorLookupRow(*row) if row else None

    def running_prior_lookups(self) -> list[PriorLookupRow]:
        return [PriorLookupRow(*r) for r in self._query(f"SELECT {_LOOKUP} FROM prior_lookups WHERE state = 'running' ORDER BY exam_id")]

    def lookup_counts(self) -> dict[str, int]:
        return {s: n for s, n in self._query("SELECT state, COUNT(*) FROM prior_lookups GROUP BY state")}

    # -- backfill runs -----------------------------------------------------------------

    def backfill_run(self, run_key: str, since: str) -> tuple[int, str, str]:
        """(id, state, cursor) of the run with this key, created when new."""
        now = _now()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO backfill_runs (run_key, since, state, started_at, updated_at) VALUES (?, ?, 'surveying', ?, ?)"
                " ON CONFLICT (run_key) DO NOTHING",
                (run_key, since, now, now),
            )
            return conn.execute("SELECT id, state, cursor FROM backfill_runs WHERE run_key = ?", (run_key,)).fetchone()

    def set_backfill_run(self, run_id: int, *, state: str | None = None, cursor: str | None = None) -> None:
        with self._transaction() as conn:
            if state is not None:
                conn.execute("UPDATE backfill_runs SET state = ?, updated_at = ? WHERE id = ?", (state, _now(), run_id))
            if cursor is not None:
                conn.execute("UPDATE backfill_runs SET cursor = ?, updated_at = ? WHERE id = ?", (cursor, _now(), run_id))

    def backfill_runs(self) -> list[dict]:
        rows = self._query("SELECT id, since, state, cursor, started_at, updated_at FROM backfill_runs ORDER BY id")
        return [dict(zip(("id", "since", "state", "cursor", "started_at", "updated_at"), r)) for r in rows]

    # -- ADT^A40: priors move with the patient ------------------------------------------

    @staticmethod
    def _merge_priors(conn, old_id: str, old_issuer: str, new_id: str, new_issuer: str) -> None:
        """Called inside the merge's transaction: exams and prior studies follow the patient."""
        conn.execute("UPDATE exams SET patient_id = ? WHERE patient_id = ?", (new_id, old_id))
        sql, args = "UPDATE prior_studies SET patient_id = ?, issuer = ? WHERE patient_id = ?", [new_id, new_issuer, old_id]
        if old_issuer:
            sql += " AND issuer IN (?, '')"
            args.append(old_issuer)
        conn.execute(sql, tuple(args))
