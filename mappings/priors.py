"""Priors from the PACS (README "Priors from the PACS"), the pure part: whose study it is, which
studies qualify, and the query windows of a backfill.

A study found under the patient's ID is used only when its issuer (when
configured), name and birth date agree with the exam's; the same ID with
another name or birth date is a wrong-patient risk, flagged for the reporter
and never compared (docs/dicom-conformance.md, Query/Retrieve SCU).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

from mappings.bmd.models import BmdExam


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    patient_id: str
    issuer: str = ""
    name: str = ""  # PN, DICOM form Family^Given^Middle^Prefix^Suffix
    birth_date: str = ""  # DA


@dataclass(frozen=True, slots=True)
class FoundStudy:
    """One study-level C-FIND / QIDO-RS match."""

    study_uid: str
    study_date: str  # DA
    modalities: tuple[str, ...]
    identity: PatientIdentity


def _name_parts(pn: str) -> tuple[str, ...]:
    # PS3.5 6.2.1: only the alphabetic group (before the first '='), components split by '^'
    alphabetic = pn.split("=", 1)[0]
    folded = unicodedata.normalize("NFKD", alphabetic).encode("ascii", "ignore").decode().upper()
    parts = [re.sub(r"[^A-Z]", "", p) for p in folded.split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return tuple(parts)


def same_name(a: str, b: str) -> bool:
    """Family and given names agree (case, accents, spaces and empty trailing components ignored).

    A middle name present on one side only is not a disagreement."""
    pa, pb = _name_parts(a), _name_parts(b)
    if not pa or not pb:
        return True  # nothing to compare
    return pa[:2] == pb[:2] and all(x == y for x, y in zip(pa[2:3], pb[2:3]) if x and y)


def identity_problem(current: PatientIdentity, found: PatientIdentity, *, use_issuer: bool) -> str | None:
    """None when ``found`` is the same patient; else why it is not used.

    Another issuer is another patient (a different ID namespace): the
    reason starts with "issuer" and is not a wrong-patient flag."""
    if found.patient_id != current.patient_id:
        return "issuer: another patient ID"
    if use_issuer and current.issuer and found.issuer and found.issuer != current.issuer:
        return "issuer: another issuer of the patient ID"
    problems = []
    if not same_name(current.name, found.name):
        problems.append("name")
    if current.birth_date and found.birth_date and current.birth_date != found.birth_date:
        problems.append("birth date")
    if not problems:
        return None
    return " and ".join(problems) + (" differ" if len(problems) > 1 else " differs")


def prior_identity_problem(current: BmdExam, prior: BmdExam) -> str | None:
    """A stored prior (e.g. from a backfill, fetched with no exam to check it against)
    against the exam it would be compared with: None, or what differs."""
    me = PatientIdentity(current.patient_id, "", current.patient_name, current.patient_birth_date)
    other = PatientIdentity(current.patient_id, "", prior.patient_name, prior.patient_birth_date)
    return identity_problem(me, other, use_issuer=False)


def is_wrong_patient(problem: str | None) -> bool:
    return bool(problem) and not problem.startswith("issuer")


def mismatch_flag(study_date: str, problem: str) -> str:
    """The reporter's flag for a study under the patient's ID that is not theirs."""
    day = f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:8]}" if len(study_date) == 8 else "unknown date"
    return (
        f"An earlier study in the PACS ({day}) has this patient ID but its {problem}: "
        "not used for comparison (wrong-patient risk); check the patient's identity."
    )


def lookback_start(exam_date: str, years: int) -> str:
    """The first DA a prior may have: ``years`` before the exam."""
    d = _da(exam_date)
    try:
        start = d.replace(year=d.year - years)
    except ValueError:  # 29 February
        start = d.replace(year=d.year - years, day=28)
    return start.strftime("%Y%m%d")


def qualifies(study: FoundStudy, *, current_study_uid: str, exam_date: str, lookback_years: int, modalities: tuple[str, ...]) -> bool:
    """A study is a candidate prior: another study, earlier than the exam, within the
    lookback, with a DXA modality (or no ModalitiesInStudy given)."""
    if not study.study_uid or study.study_uid == current_study_uid:
        return False
    if not study.study_date or (exam_date and study.study_date >= exam_date):
        return False
    if exam_date and study.study_date < lookback_start(exam_date, lookback_years):
        return False
    wanted = {m.upper() for m in modalities}
    return not study.modalities or bool(wanted & {m.upper() for m in study.modalities})


def query_windows(since: str, until: str, days: int) -> list[tuple[str, str]]:
    """Consecutive inclusive DA ranges covering since..until, each ``days`` long at most."""
    start, end, out = _da(since), _da(until), []
    while start <= end:
        stop = min(end, start + timedelta(days=days - 1))
        out.append((start.strftime("%Y%m%d"), stop.strftime("%Y%m%d")))
        start = stop + timedelta(days=1)
    return out


def _da(value: str) -> date:
    v = value.replace("-", "")
    return date(int(v[:4]), int(v[4:6]), int(v[6:8]))
