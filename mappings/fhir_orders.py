"""FHIR R4 ServiceRequest (+ Patient) -> worklist actions.

Takes a ServiceRequest with its Patient contained, or a transaction Bundle
holding both; validates them with fhir.resources (R4B models) and maps them
to the same actions an HL7 order gives.  ``priority`` and the Observations
(height, weight, pregnancy) and AllergyIntolerances of ``supportingInfo``
become the worklist's Patient Medical attributes (docs/fhir.md).  Pure:
dicts in, actions out.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from mappings.hl7_orders import OrderKey, SetOrderStatus, UpsertOrder
from mappings.patient_medical import FHIR_PRIORITY, HEIGHT_CODES, PREGNANCY_CODES, WEIGHT_CODES, MeasureError, height_m, pregnancy_status, weight_kg
from mappings.worklist import CANCELLED, COMPLETED, DEFAULT_MODALITY, SCHEDULED, Code, WorklistItem, derived_uid

STATION_AE_EXTENSION = "http://dxa-gateway.org/fhir/StructureDefinition/scheduled-station-ae"
MODALITY_EXTENSION = "http://dxa-gateway.org/fhir/StructureDefinition/modality"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# ServiceRequest.status (FHIR R4 request-status) -> step status
STATUS = {
    "draft": SCHEDULED,
    "active": SCHEDULED,
    "on-hold": SCHEDULED,
    "revoked": CANCELLED,
    "entered-in-error": CANCELLED,
    "completed": COMPLETED,
}
GENDER = {"male": "M", "female": "F", "other": "O", "unknown": ""}


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue: what is wrong and where (FHIRPath)."""

    code: str  # invalid, required, value, not-supported, not-found
    diagnostics: str
    expression: str = ""


class FhirOrderError(ValueError):
    def __init__(self, issues: list[Issue], status: int = 422) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.issues = issues
        self.status = status


def operation_outcome(issues: list[Issue]) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": i.code, "diagnostics": i.diagnostics, **({"expression": [i.expression]} if i.expression else {})}
            for i in issues
        ],
    }


def _validation_issues(exc: ValidationError, root: str) -> list[Issue]:
    out = []
    for err in exc.errors()[:20]:
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        out.append(Issue("invalid", err["msg"], f"{root}.{loc}" if loc else root))
    return out


def _validate(model, data: dict, root: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FhirOrderError(_validation_issues(exc, root)) from None
    except (KeyError, TypeError):
        # fhir.resources looks a contained or entry resourceType up in its
        # model table: an unknown one is a KeyError, a non-string one a
        # TypeError, neither a ValidationError (found by tests/fuzz:
        # {"contained": [{"resourceType": "Patieot"}]}, "resourceType": [..]).
        raise FhirOrderError([Issue("invalid", "a contained or entry resourceType is not a known FHIR resource", root)]) from None


def _requester_id(sr: ServiceRequest) -> str:
    """ServiceRequest.requester's identifier value, else the id of its reference."""
    ref = sr.requester
    if ref is None:
        return ""
    if ref.identifier is not None and ref.identifier.value:
        return ref.identifier.value
    if ref.reference and "/" in ref.reference:
        return ref.reference.rsplit("/", 1)[-1]
    return ""


def _identifier(sr: ServiceRequest, type_code: str) -> str:
    for ident in sr.identifier or []:
        codings = (ident.type.coding if ident.type and ident.type.coding else []) or []
        if any(c.code == type_code for c in codings):
            return ident.value or ""
    return ""


def _dicom_datetime(value: str) -> tuple[str, str]:
    """FHIR dateTime (ISO 8601) -> DICOM DA, TM in the time as written."""
    date, _, time = value.partition("T")
    time = time.split("+")[0].split("-")[0].rstrip("Z")
    return date.replace("-", ""), time.replace(":", "").split(".")[0]


def _patient_fields(patient: Patient) -> dict:
    ident = None
    for candidate in patient.identifier or []:
        codings = candidate.type.coding if candidate.type and candidate.type.coding else []
        if any(c.code == "MR" for c in codings):
            ident = candidate
            break
    if ident is None and patient.identifier:
        ident = patient.identifier[0]
    if ident is None or not ident.value:
        raise FhirOrderError([Issue("required", "Patient.identifier with a value is required", "Patient.identifier")])
    name = ""
    if patient.name:
        n = patient.name[0]
        given = list(n.given or [])
        name = "^".join(
            [n.family or "", given[0] if given else "", " ".join(given[1:]), " ".join(n.prefix or []), " ".join(n.suffix or [])]
        ).rstrip("^")
    return {
        "patient_id": ident.value,
        "issuer_of_patient_id": ident.system or "",
        "patient_name": name,
        "birth_date": str(patient.birthDate).replace("-", "") if patient.birthDate else "",
        "sex": GENDER.get(patient.gender or "unknown", ""),
    }


def _find_patient(sr: ServiceRequest, bundle_patients: dict[str, Patient]) -> Patient:
    ref = sr.subject.reference if sr.subject else None
    if not ref:
        raise FhirOrderError([Issue("required", "ServiceRequest.subject is required", "ServiceRequest.subject")])
    if ref.startswith("#"):
        for res in sr.contained or []:
            if res.get_resource_type() == "Patient" and res.id == ref[1:]:
                return res
        raise FhirOrderError([Issue("not-found", f"contained Patient {ref} not found", "ServiceRequest.subject")])
    if ref in bundle_patients:
        return bundle_patients[ref]
    raise FhirOrderError(
        [Issue("not-supported", "subject must reference a contained Patient or one in the same Bundle", "ServiceRequest.subject")]
    )


def _extension(sr: ServiceRequest, url: str) -> str:
    for ext in sr.extension or []:
        if ext.url == url:
            return ext.valueString or (ext.valueCode or "")
    return ""


def service_request_actions(body: dict, *, default_station_ae: str = "", default_modality: str = DEFAULT_MODALITY):
    """Validate a ServiceRequest or transaction Bundle; return its actions."""
    if not isinstance(body, dict):
        raise FhirOrderError([Issue("invalid", "the body must be a JSON object")], status=400)
    kind = body.get("resourceType")
    patients: dict[str, Patient] = {}
    others: dict[str, object] = {}  # Observation, AllergyIntolerance entries by reference
    requests: list[ServiceRequest] = []
    if kind == "Bundle":
        bundle = _validate(Bundle, body, "Bundle")
        if bundle.type != "transaction":
            raise FhirOrderError([Issue("not-supported", "only transaction Bundles are taken", "Bundle.type")])
        for i, entry in enumerate(bundle.entry or []):
            res = entry.resource
            if res is None:
                continue
            if res.get_resource_type() == "Patient":
                for key in (entry.fullUrl, f"Patient/{res.id}" if res.id else None):
                    if key:
                        patients[key] = res
            elif res.get_resource_type() == "ServiceRequest":
                requests.append(res)
            elif res.get_resource_type() in ("Observation", "AllergyIntolerance"):
                for key in (entry.fullUrl, f"{res.get_resource_type()}/{res.id}" if res.id else None):
                    if key:
                        others[key] = res
        if not requests:
            raise FhirOrderError([Issue("required", "the Bundle holds no ServiceRequest", "Bundle.entry")])
    elif kind == "ServiceRequest":
        requests.append(_validate(ServiceRequest, body, "ServiceRequest"))
    else:
        raise FhirOrderError([Issue("not-supported", f"resourceType {str(kind)[:64]!r} is not taken here", "resourceType")], status=400)

    actions = []
    for sr in requests:
        accession = _identifier(sr, "ACSN")
        placer = _identifier(sr, "PLAC") or (f"ServiceRequest/{sr.id}" if sr.id else "")
        filler = _identifier(sr, "FILL")
        if not accession:
            raise FhirOrderError(
                [Issue("required", "an identifier of type ACSN (accession number) is required", "ServiceRequest.identifier")]
            )
        key = OrderKey(placer=placer, filler=filler, accession=accession)
        status = STATUS.get(sr.status)
        if status is None:
            raise FhirOrderError([Issue("value", f"status {sr.status!r} is not taken", "ServiceRequest.status")])
        if status != SCHEDULED:
            actions.append(SetOrderStatus(key=key, status=status, control=f"fhir:{sr.status}"))
            continue
        patient = _patient_fields(_find_patient(sr, patients))
        when = sr.occurrenceDateTime or (sr.occurrencePeriod.start if sr.occurrencePeriod else None)
        if not when:
            raise FhirOrderError([Issue("required", "occurrenceDateTime is required", "ServiceRequest.occurrence")])
        start_date, start_time = _dicom_datetime(when.isoformat() if hasattr(when, "isoformat") else str(when))
        coding = sr.code.coding[0] if sr.code and sr.code.coding else None
        code = Code(coding.code or "", (coding.system or "").rsplit("/", 1)[-1][:16] or "L", coding.display or "") if coding else None
        description = (sr.code.text if sr.code and sr.code.text else "") or (coding.display if coding else "") or ""
        study_uid = ""
        for ident in sr.identifier or []:
            if ident.system == "urn:dicom:uid" and ident.value:
                study_uid = ident.value.removeprefix("urn:oid:")
        requester = sr.requester.display if sr.requester and sr.requester.display else ""
        requester_id = _requester_id(sr)
        item = WorklistItem(
            **patient,
            **_supporting_info(sr, others),
            requested_procedure_priority=FHIR_PRIORITY.get(sr.priority or "", ""),
            accession_number=accession,
            requested_procedure_id=accession,
            requested_procedure_description=description,
            requested_procedure_code=code,
            study_instance_uid=study_uid or derived_uid("fhir", placer, filler, accession),
            requesting_physician=requester.replace(" ", "^", 1) if requester else "",
            referrer_id=requester_id,
            referred_at=sr.authoredOn.isoformat() if getattr(sr, "authoredOn", None) else "",
            referrer_field="ServiceRequest.requester" if requester_id or requester else "",
            placer_order_number=placer[:64],
            filler_order_number=filler,
            sps_id=accession,
            station_ae=_extension(sr, STATION_AE_EXTENSION) or default_station_ae,
            modality=_extension(sr, MODALITY_EXTENSION) or default_modality,
            start_date=start_date,
            start_time=start_time,
            sps_description=description,
            character_set="ISO_IR 192",
            source="fhir",
            source_ref=sr.id or "",
        )
        actions.append(UpsertOrder(items=(item,), key=key))
    return tuple(actions)


def _codes(concept) -> set[str]:
    return {c.code for c in (concept.coding or []) if c.code} if concept is not None else set()


def _supporting_info(sr: ServiceRequest, others: dict[str, object]) -> dict:
    """Height, weight, pregnancy (Observation) and allergies (AllergyIntolerance) the order points to.

    ``supportingInfo`` references a contained resource or one in the same
    Bundle; references to anything else are not followed (docs/fhir.md).
    """
    contained = {f"#{r.id}": r for r in (sr.contained or []) if r.id}
    out: dict = {}
    allergies: list[str] = []
    for n, ref in enumerate(sr.supportingInfo or []):
        res = contained.get(ref.reference or "") or others.get(ref.reference or "")
        where = f"ServiceRequest.supportingInfo[{n}]"
        if res is None:
            continue
        kind = res.get_resource_type()
        if kind == "AllergyIntolerance":
            verification = _codes(res.verificationStatus)
            if verification & {"refuted", "entered-in-error"}:
                continue
            text = (res.code.text if res.code and res.code.text else "") or next(
                (c.display or c.code for c in (res.code.coding or []) if c.display or c.code), ""
            ) if res.code else ""
            if text and text not in allergies:
                allergies.append(text[:64])
        elif kind == "Observation":
            if res.status in ("entered-in-error", "cancelled"):
                continue
            codes = _codes(res.code)
            try:
                if codes & HEIGHT_CODES and res.valueQuantity is not None:
                    q = res.valueQuantity
                    out.setdefault("patient_size", height_m(str(q.value), q.code or q.unit or ""))
                elif codes & WEIGHT_CODES and res.valueQuantity is not None:
                    q = res.valueQuantity
                    out.setdefault("patient_weight", weight_kg(str(q.value), q.code or q.unit or ""))
                elif codes & PREGNANCY_CODES and res.valueCodeableConcept is not None:
                    status = next((pregnancy_status(c) for c in _codes(res.valueCodeableConcept) if pregnancy_status(c)), None)
                    if status is None:
                        raise FhirOrderError([Issue("value", "the pregnancy status answer is not a known code", f"{where}.valueCodeableConcept")])
                    out.setdefault("pregnancy_status", status)
            except MeasureError as exc:
                raise FhirOrderError([Issue("value", str(exc), f"{where}.valueQuantity")]) from None
    if allergies:
        out["allergies"] = tuple(allergies)
    return out
