"""BMD results -> FHIR R4 transaction Bundle (docs/domain.md section 3).

Modelled on the US Core DiagnosticReport-bone-density-report example:
a DiagnosticReport coded 83311-1 with category LP29684-5, one Observation
per region measure (LOINC where one exists -- the lumbar-spine codes on the
spine total the diagnosis used -- plus a local code naming the site; UCUM
``g/cm2`` and ``1``), FRAX Observations (90265-0, 90266-8), the radiation
dose as Observations (DICOM 113722 / 113725), the report text (and the signed report's PDF, docs/fhir.md) as
``presentedForm``, the category as ``conclusionCode`` (local code, SNOMED CT
beside it where one fits), ``performer`` (the service) and
``resultsInterpreter`` (the reporting clinician).  An amendment is status
``amended``.
Entries are conditional (Patient: create-if-none-exist; Observation and
DiagnosticReport: conditional update by identifier), so a resent or
corrected report replaces the earlier one.  ``fullUrl`` UUIDs derive from
the SR's SOP Instance UID: the same exam gives the same Bundle.  Values are
:class:`~decimal.Decimal`; :func:`bundle_json` writes them digit for digit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mappings.bmd import codes as c
from mappings.bmd.classify import Classification
from mappings.bmd.models import BmdExam
from mappings.bmd.report import status_code

LOINC_URL = "http://loinc.org"
UCUM_URL = "http://unitsofmeasure.org"
LOCAL_URL = "urn:dxa-gateway:code"
DICOM_UID = "urn:dicom:uid"
OBSERVATION_ID = "urn:dxa-gateway:observation"
STATUS = {"P": "preliminary", "F": "final", "C": "amended"}
GENDER = {"F": "female", "M": "male", "O": "other"}


@dataclass(frozen=True, slots=True)
class FhirContext:
    """What the Bundle needs beyond the exam; no clock is read here."""

    issued: str  # FHIR instant, e.g. 2024-05-01T12:00:00+01:00
    status: str = "P"  # P / F / C  (or preliminary / final / corrected)
    timezone: str = "+00:00"  # offset of the scanner's local exam time
    patient_identifier_system: str = "urn:dxa-gateway:patient-id"
    accession_system: str = "urn:dxa-gateway:accession"
    placer_order_number: str = ""
    placer_system: str = "urn:dxa-gateway:placer"
    performer: str = ""  # the DXA service (organisation) that performed the exam
    interpreter: str = ""  # the reporting clinician as signed
    interpreter_id: str = ""  # their identifier, when the identity provider gives one
    practitioner_system: str = "urn:dxa-gateway:practitioner"


def _coding(code: tuple[str, str, str]) -> dict[str, str]:
    system = {"LN": LOINC_URL, "UCUM": UCUM_URL, "SCT": c.SCT, "DCM": c.DCM_URL}.get(code[1], LOCAL_URL)
    return {"system": system, "code": code[0], "display": code[2]}


def _uuid(exam: BmdExam, suffix: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_OID, f"{exam.sop_instance_uid}/{suffix}"))


def _datetime(exam: BmdExam, tz: str) -> str | None:
    d, t = exam.exam_date, exam.exam_time
    if len(d) < 8 or not d[:8].isdigit():
        return None
    day = f"{d[:4]}-{d[4:6]}-{d[6:8]}"
    if len(t) >= 4 and t[:4].isdigit():
        sec = t[4:6] if len(t) >= 6 and t[4:6].isdigit() else "00"
        return f"{day}T{t[:2]}:{t[2:4]}:{sec}{tz}"
    return day


def _entry(full_url: str, resource: dict, method: str, url: str, if_none_exist: str = "") -> dict:
    request = {"method": method, "url": url}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url, "resource": resource, "request": request}


def _patient(exam: BmdExam, ctx: FhirContext) -> dict:
    parts = exam.patient_name.split("^")
    name: dict[str, Any] = {}
    if parts[0]:
        name["family"] = parts[0]
    given = [p for p in parts[1:3] if p]
    if given:
        name["given"] = given
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": ctx.patient_identifier_system, "value": exam.patient_id}],
        "gender": GENDER.get(exam.patient_sex, "unknown"),
    }
    if name:
        patient["name"] = [name]
    b = exam.patient_birth_date
    if len(b) == 8 and b.isdigit():
        patient["birthDate"] = f"{b[:4]}-{b[4:6]}-{b[6:8]}"
    return patient


def _observation(exam, ctx, subject, codes, value: Decimal, unit: str, body_site: tuple[str, str] | None, text: str, ident: str) -> dict:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": OBSERVATION_ID, "value": ident}],
        "status": STATUS[status_code(ctx.status)],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}],
        "code": {"coding": [_coding(x) for x in codes], "text": text},
        "subject": {"reference": subject},
        "issued": ctx.issued,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM_URL, "code": unit},
    }
    when = _datetime(exam, ctx.timezone)
    if when:
        obs["effectiveDateTime"] = when
    if body_site:
        obs["bodySite"] = {"coding": [{"system": c.SCT, "code": body_site[0], "display": body_site[1]}], "text": text.rsplit(" ", 1)[0]}
    return obs


def _category_codings(classification: Classification) -> list[dict[str, str]]:
    codings = [{"system": LOCAL_URL, "code": classification.category, "display": classification.category_text}]
    sct = c.CATEGORY_SCT.get(classification.category)
    if sct:
        codings.append({"system": c.SCT, "code": sct[0], "display": sct[1]})
    return codings


def pdf_attachment(pdf: bytes, title: str = "DXA report (PDF)") -> dict[str, str]:
    """FHIR R4 Attachment of the signed report's PDF: the data in base64 and
    ``hash``, the base64 of its SHA-1 (FHIR R4 Attachment.hash)."""
    return {
        "contentType": "application/pdf",
        "data": base64.b64encode(pdf).decode("ascii"),
        "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode("ascii"),  # noqa: S324 (the FHIR-defined hash)
        "title": title,
    }


def build_bundle(exam: BmdExam, classification: Classification, report_text: str, ctx: FhirContext, *, pdf: bytes | None = None) -> dict:
    """A transaction Bundle (dict) with Patient, Observations and the DiagnosticReport;
    ``pdf``, the signed report's PDF, is a second ``presentedForm`` beside the text."""
    patient_url = _uuid(exam, "patient")
    pid = f"{ctx.patient_identifier_system}|{exam.patient_id}"
    entries = [_entry(patient_url, _patient(exam, ctx), "POST", "Patient", f"identifier={pid}")]
    results = []

    def add_obs(key: str, obs: dict) -> None:
        url = _uuid(exam, key)
        ident = obs["identifier"][0]
        entries.append(_entry(url, obs, "PUT", f"Observation?identifier={ident['system']}|{ident['value']}"))
        results.append({"reference": url})

    spine = classification.spine.site if classification.spine is not None else None
    for r in exam.regions:
        loinc = c.loinc_codes(r.site, r.laterality, spine)
        scan = c.scan_of_site(r.site)
        body = c.BODY_SITES["femur" if r.site == "neck" else scan]
        for measure in ("bmd", "t_score", "z_score"):
            value = getattr(r, measure)
            if value is None:
                continue
            local = c.local_code(r.site, r.laterality, measure)
            codes = ([(loinc[measure], "LN", local[2])] if measure in loinc else []) + [local]
            ident = f"{exam.sop_instance_uid}/{local[0]}"
            add_obs(local[0], _observation(exam, ctx, patient_url, codes, value, c.MEASURE_UNITS[measure], body, local[2], ident))
    if exam.frax is not None:
        for code, value in c.frax_items(exam.frax):
            ident = f"{exam.sop_instance_uid}/{code[0]}"
            add_obs(code[0], _observation(exam, ctx, patient_url, [code], value, "%", None, code[2], ident))
    if exam.dose is not None:
        for measure, unit in (("dap", exam.dose.dap_units), ("dose_rp_total", exam.dose.dose_rp_units), ("entrance_dose", exam.dose.entrance_dose_units)):
            value = getattr(exam.dose, measure)
            if value is not None:
                code = c.DOSE_CODES[measure]
                ident = f"{exam.sop_instance_uid}/dose.{measure}"
                add_obs(f"dose.{measure}", _observation(exam, ctx, patient_url, [code], value, unit or "1", None, code[2], ident))

    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{exam.sop_instance_uid}"}],
        "status": STATUS[status_code(ctx.status)],
        "category": [{"coding": [_coding(c.RADIOLOGY_CATEGORY)]}],
        "code": {"coding": [_coding(c.PANEL)]},
        "subject": {"reference": patient_url},
        "issued": ctx.issued,
        "result": results,
        "conclusion": classification.category_text,
        "conclusionCode": [{"coding": _category_codings(classification)}],
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(report_text.encode("utf-8")).decode("ascii"),
                "title": "DXA report",
            }
        ],
    }
    if pdf is not None:
        report["presentedForm"].append(pdf_attachment(pdf))
    if exam.accession_number:
        report["identifier"].append(
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "system": ctx.accession_system,
                "value": exam.accession_number,
            }
        )
    if ctx.placer_order_number:
        report["basedOn"] = [{"identifier": {"system": ctx.placer_system, "value": ctx.placer_order_number}, "type": "ServiceRequest"}]
    if ctx.performer:
        report["performer"] = [{"display": ctx.performer}]
    if ctx.interpreter:
        interpreter: dict[str, Any] = {"display": ctx.interpreter}
        if ctx.interpreter_id:
            interpreter["identifier"] = {"system": ctx.practitioner_system, "value": ctx.interpreter_id}
        report["resultsInterpreter"] = [interpreter]
    when = _datetime(exam, ctx.timezone)
    if when:
        report["effectiveDateTime"] = when
    entries.append(
        _entry(_uuid(exam, "report"), report, "PUT", f"DiagnosticReport?identifier={DICOM_UID}|urn:oid:{exam.sop_instance_uid}")
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


_MARK = "\u0000dec:"


def bundle_json(bundle: dict) -> str:
    """JSON text with every Decimal written as a number with its own digits."""

    def mark(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"{_MARK}{value}\u0000"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(bundle), ensure_ascii=False, separators=(",", ":"))
    return re.sub(r'"\\u0000dec:([-+0-9.Ee]+)\\u0000"', r"\1", text)
