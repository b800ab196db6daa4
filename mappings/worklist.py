"""The worklist item: one Scheduled Procedure Step of one Requested Procedure.

A :class:`WorklistItem` is what an order (HL7, FHIR or DICOM JSON) becomes and
what the Modality Worklist serves.  It converts to and from the MWL dataset of
PS3.4 K.6.1.2.2 (Table K.6-1) with :func:`item_to_dataset` and
:func:`item_from_dataset`.  Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal, InvalidOperation
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

# Scheduled Procedure Step Status (0040,0020), PS3.3 C.4.10 plus the two
# states the gateway uses for orders that left the worklist.
SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
CANCELLED = "CANCELLED"
# An order whose referrer is not entitled (IR(ME)R; docs/domain.md section 1 item 8): kept,
# shown in the REST API with its reason, never served by the MWL until a
# practitioner justifies it.
HELD = "HELD"
STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, DISCONTINUED, CANCELLED, HELD)
#: States the MWL serves; the others have left the worklist.
ACTIVE_STATUSES = (SCHEDULED, IN_PROGRESS)

DEFAULT_MODALITY = "BMD"  # PS3.3 C.7.3.1.1.1: Bone Mineral Densitometry

# The Modality Worklist IOD's attributes (PS3.4 Table K.6-1, with the
# Patient Medical (PS3.3 C.2.4) and Visit keys the densitometers ask for):
# an item keeps each one that arrives and the MWL returns it when asked.
MWL_ATTRIBUTES = frozenset(
    {
        "SpecificCharacterSet",
        "TimezoneOffsetFromUTC",
        "ScheduledProcedureStepSequence",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "RequestedProcedureCodeSequence",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferencedStudySequence",
        "RequestedProcedurePriority",
        "PatientTransportArrangements",
        "ReasonForTheRequestedProcedure",
        "RequestedProcedureComments",
        "AccessionNumber",
        "IssuerOfAccessionNumberSequence",
        "RequestingPhysician",
        "RequestingService",
        "ReferringPhysicianName",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "ImagingServiceRequestComments",
        "AdmissionID",
        "IssuerOfAdmissionIDSequence",
        "CurrentPatientLocation",
        "ReferencedPatientSequence",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "EthnicGroup",
        "PatientComments",
        "MedicalAlerts",
        "Allergies",
        "PregnancyStatus",
        "LastMenstrualDate",
        "SpecialNeeds",
        "PatientState",
        "ConfidentialityConstraintOnPatientDataDescription",
        "AdditionalPatientHistory",
        "PatientBreedDescription",
        "PatientSpeciesDescription",
        "ResponsiblePerson",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "MilitaryRank",
        "ResponsibleOrganization",
        "NamesOfIntendedRecipientsOfResults",
        "AdmittingDiagnosesDescription",
        "StudyComments",
        "ReasonForRequestedProcedureCodeSequence",
        "PerformedProcedureStepID",
    }
)
#: The attributes of a Scheduled Procedure Step Sequence item (PS3.4 Table K.6-1).
SPS_ATTRIBUTES = frozenset(
    {
        "ScheduledStationAETitle",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription",
        "ScheduledProtocolCodeSequence",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepStatus",
        "Modality",
        "AnatomicalOrientationType",
        "RequestedContrastAgent",
        "PreMedication",
        "CommentsOnTheScheduledProcedureStep",
        "ScheduledStationNameCodeSequence",
        "ScheduledStationClassCodeSequence",
        "ScheduledStationGeographicLocationCodeSequence",
    }
)

# Requested Procedure Priority (0040,1003), PS3.3 C.4.11 (enumerated values).
PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")
# Pregnancy Status (0010,21C0), PS3.3 C.2.4 (enumerated values).
NOT_PREGNANT, POSSIBLY_PREGNANT, DEFINITELY_PREGNANT, PREGNANCY_UNKNOWN = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Code:
    """A coded entry (PS3.3 Table 8.8-1): value, scheme and meaning."""

    value: str
    scheme: str
    meaning: str = ""


@dataclass(frozen=True, slots=True)
class WorklistItem:
    """One scheduled procedure step with its patient and requested procedure."""

    # Patient (PS3.3 C.2.2, C.7.1.1)
    patient_id: str
    patient_name: str = ""  # DICOM PN: Family^Given^Middle^Prefix^Suffix
    issuer_of_patient_id: str = ""
    birth_date: str = ""  # DA YYYYMMDD
    sex: str = ""  # M, F, O or empty
    ethnic_group: str = ""
    other_patient_ids: tuple[str, ...] = ()
    # Imaging Service Request / Requested Procedure (PS3.3 C.4.11, C.4.12)
    accession_number: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    requested_procedure_code: Code | None = None
    study_instance_uid: str = ""
    referring_physician: str = ""
    requesting_physician: str = ""
    # The referrer's identifier (XCN-1 of ORC-12, else OBR-16, else PV1-8;
    # FHIR requester) and the field it came from, for the entitlement check.
    referrer_id: str = ""
    referrer_field: str = ""
    hold_reason: str = ""  # why the step is HELD (mappings.entitlement reasons)
    # When the referral was made: HL7 ORC-9 / OBR-6 (YYYYMMDD[HHMM[SS]], local
    # time) or FHIR authoredOn (ISO 8601); empty when the order did not say.
    referred_at: str = ""
    placer_order_number: str = ""
    filler_order_number: str = ""
    admission_id: str = ""
    requested_procedure_priority: str = ""  # one of PRIORITIES, or empty
    # Patient Medical (PS3.3 C.2.4)
    medical_alerts: tuple[str, ...] = ()
    allergies: tuple[str, ...] = ()
    pregnancy_status: int | None = None  # 1 not, 2 possibly, 3 definitely pregnant, 4 unknown
    patient_size: str = ""  # DS, metres
    patient_weight: str = ""  # DS, kilograms
    special_needs: str = ""
    patient_state: str = ""
    confidentiality_constraint: str = ""
    # Scheduled Procedure Step (PS3.3 C.4.10)
    sps_id: str = ""
    station_ae: str = ""
    station_name: str = ""
    modality: str = DEFAULT_MODALITY
    start_date: str = ""  # DA
    start_time: str = ""  # TM
    performing_physician: str = ""
    sps_description: str = ""
    sps_location: str = ""
    status: str = SCHEDULED
    requested_contrast_agent: str = ""
    # Every other attribute of the MWL IOD that arrived, as DICOM JSON (PS3.18
    # F.2) text: top level, and inside the Scheduled Procedure Step item.
    other_attributes: str = ""
    other_sps_attributes: str = ""
    # Where it came from
    character_set: str = ""  # DICOM Specific Character Set of the source text
    source: str = ""  # hl7, fhir, api
    source_ref: str = ""  # message control id or resource id (not PHI)

    def replace(self, **changes: object) -> "WorklistItem":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """A plain dict for storage (orjson-serialisable)."""
        data = dataclasses.asdict(self)
        for name in ("other_patient_ids", "medical_alerts", "allergies"):
            data[name] = list(getattr(self, name))
        return data

    @classmethod
    def from_json(cls, data: dict) -> "WorklistItem":
        data = dict(data)
        code = data.get("requested_procedure_code")
        data["requested_procedure_code"] = Code(**code) if code else None
        for name in ("other_patient_ids", "medical_alerts", "allergies"):
            data[name] = tuple(data.get(name) or ())  # hashable: the item is a cache key
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class PatientDemographics:
    """What an ADT^A08/A31 may change on the open items of one patient."""

    patient_id: str
    issuer_of_patient_id: str = ""
    patient_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    ethnic_group: str | None = None
    extra: dict = field(default_factory=dict)

    def changes(self) -> dict[str, str]:
        """The fields this update sets (None means 'not sent')."""
        out = {}
        for name in ("patient_name", "birth_date", "sex", "ethnic_group"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


_UID_NAMESPACE = uuid.UUID("6f1c2a52-3d5e-4c1b-9d7a-0b8c5e2f4a61")


def derived_uid(*parts: str) -> str:
    """A UID derived from ``parts`` (PS3.5 B.2, UUID-derived ``2.25``).

    The same parts always give the same UID: an order's Study Instance UID
    is generated once and kept across resends and changes.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(parts)).int}"


def _code_item(code: Code) -> Dataset:
    ds = Dataset()
    ds.CodeValue = code.value
    ds.CodingSchemeDesignator = code.scheme
    ds.CodeMeaning = code.meaning
    return ds


def item_to_dataset(item: WorklistItem) -> Dataset:
    """The full MWL dataset for ``item`` (PS3.4 Table K.6-1), no charset set."""
    ds = Dataset()
    # SOP Common
    # Patient Identification / Demographic
    ds.PatientName = item.patient_name
    ds.PatientID = item.patient_id
    ds.IssuerOfPatientID = item.issuer_of_patient_id
    ds.PatientBirthDate = item.birth_date
    ds.PatientSex = item.sex
    ds.EthnicGroup = item.ethnic_group
    if item.other_patient_ids:
        ds.OtherPatientIDs = list(item.other_patient_ids)
    # Patient Medical (PS3.3 C.2.4): only what the order said
    if item.medical_alerts:
        ds.MedicalAlerts = list(item.medical_alerts)
    if item.allergies:
        ds.Allergies = list(item.allergies)
    if item.pregnancy_status is not None:
        ds.PregnancyStatus = item.pregnancy_status
    if item.patient_size:
        ds.PatientSize = item.patient_size
    if item.patient_weight:
        ds.PatientWeight = item.patient_weight
    if item.special_needs:
        ds.SpecialNeeds = item.special_needs
    if item.patient_state:
        ds.PatientState = item.patient_state
    if item.confidentiality_constraint:
        ds.ConfidentialityConstraintOnPatientDataDescription = item.confidentiality_constraint
    # Visit
    ds.AdmissionID = item.admission_id
    # Imaging Service Request
    ds.AccessionNumber = item.accession_number
    ds.ReferringPhysicianName = item.referring_physician
    ds.RequestingPhysician = item.requesting_physician
    ds.PlacerOrderNumberImagingServiceRequest = item.placer_order_number
    ds.FillerOrderNumberImagingServiceRequest = item.filler_order_number
    # Requested Procedure
    ds.RequestedProcedureID = item.requested_procedure_id
    ds.RequestedProcedureDescription = item.requested_procedure_description
    ds.RequestedProcedureCodeSequence = Sequence(
        [_code_item(item.requested_procedure_code)] if item.requested_procedure_code else []
    )
    ds.StudyInstanceUID = item.study_instance_uid
    if item.requested_procedure_priority:
        ds.RequestedProcedurePriority = item.requested_procedure_priority
    # Scheduled Procedure Step (PS3.4 K.6.1.2.2: one item)
    sps = Dataset()
    sps.ScheduledStationAETitle = item.station_ae
    sps.ScheduledStationName = item.station_name
    sps.ScheduledProcedureStepLocation = item.sps_location
    sps.ScheduledProcedureStepStartDate = item.start_date
    sps.ScheduledProcedureStepStartTime = item.start_time
    sps.Modality = item.modality
    sps.ScheduledPerformingPhysicianName = item.performing_physician
    sps.ScheduledProcedureStepDescription = item.sps_description
    sps.ScheduledProcedureStepID = item.sps_id
    sps.ScheduledProcedureStepStatus = item.status
    sps.ScheduledProtocolCodeSequence = Sequence([])
    if item.requested_contrast_agent:
        sps.RequestedContrastAgent = item.requested_contrast_agent
    _merge_json(sps, item.other_sps_attributes)
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    _merge_json(ds, item.other_attributes)
    return ds


def _merge_json(ds: Dataset, text: str) -> None:
    """Add the attributes kept as DICOM JSON text to ``ds`` (they win)."""
    if not text:
        return
    for elem in Dataset.from_json(text):
        ds.add(elem)


def _values(value: object) -> tuple[str, ...]:
    """A DICOM value as a tuple of strings (empty, single or multi-valued)."""
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple, MultiValue)):
        return tuple(str(v) for v in value)
    return (str(value),)


def _text(ds: Dataset, keyword: str) -> str:
    return "\\".join(_values(ds.get(keyword)))


class ItemError(ValueError):
    """A dataset cannot become a worklist item; ``keyword`` names the attribute."""

    def __init__(self, keyword: str, reason: str) -> None:
        super().__init__(f"{keyword}: {reason}")
        self.keyword = keyword
        self.reason = reason


def item_from_dataset(ds: Dataset, *, source: str = "api") -> WorklistItem:
    """Read an MWL-shaped dataset (as the REST API takes it) into an item."""
    if not _text(ds, "PatientID"):
        raise ItemError("PatientID", "required")
    seq = ds.get("ScheduledProcedureStepSequence")
    sps = seq[0] if seq else Dataset()
    code_seq = ds.get("RequestedProcedureCodeSequence")
    code = None
    if code_seq:
        c = code_seq[0]
        code = Code(_text(c, "CodeValue"), _text(c, "CodingSchemeDesignator"), _text(c, "CodeMeaning"))
    status = _text(sps, "ScheduledProcedureStepStatus") or SCHEDULED
    if status not in STATUSES:
        raise ItemError("ScheduledProcedureStepStatus", f"unknown status {status!r}")
    priority = _text(ds, "RequestedProcedurePriority").strip()
    if priority and priority not in PRIORITIES:
        raise ItemError("RequestedProcedurePriority", f"not one of {', '.join(PRIORITIES)} (PS3.3 C.4.11)")
    pregnancy = ds.get("PregnancyStatus")
    if pregnancy is not None and pregnancy != "" and pregnancy not in (1, 2, 3, 4):
        raise ItemError("PregnancyStatus", "not 1, 2, 3 or 4 (PS3.3 C.2.4)")
    return WorklistItem(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        ethnic_group=_text(ds, "EthnicGroup"),
        other_patient_ids=_values(ds.get("OtherPatientIDs")),
        accession_number=_text(ds, "AccessionNumber"),
        requested_procedure_id=_text(ds, "RequestedProcedureID"),
        requested_procedure_description=_text(ds, "RequestedProcedureDescription"),
        requested_procedure_code=code,
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        requesting_physician=_text(ds, "RequestingPhysician"),
        placer_order_number=_text(ds, "PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=_text(ds, "FillerOrderNumberImagingServiceRequest"),
        admission_id=_text(ds, "AdmissionID"),
        requested_procedure_priority=priority,
        medical_alerts=_values(ds.get("MedicalAlerts")),
        allergies=_values(ds.get("Allergies")),
        pregnancy_status=int(pregnancy) if pregnancy not in (None, "") else None,
        patient_size=_decimal(ds, "PatientSize"),
        patient_weight=_decimal(ds, "PatientWeight"),
        special_needs=_text(ds, "SpecialNeeds"),
        patient_state=_text(ds, "PatientState"),
        confidentiality_constraint=_text(ds, "ConfidentialityConstraintOnPatientDataDescription"),
        sps_id=_text(sps, "ScheduledProcedureStepID"),
        station_ae=_text(sps, "ScheduledStationAETitle"),
        station_name=_text(sps, "ScheduledStationName"),
        modality=_text(sps, "Modality") or DEFAULT_MODALITY,
        start_date=_text(sps, "ScheduledProcedureStepStartDate"),
        start_time=_text(sps, "ScheduledProcedureStepStartTime"),
        performing_physician=_text(sps, "ScheduledPerformingPhysicianName"),
        sps_description=_text(sps, "ScheduledProcedureStepDescription"),
        sps_location=_text(sps, "ScheduledProcedureStepLocation"),
        status=status,
        requested_contrast_agent=_text(sps, "RequestedContrastAgent"),
        other_attributes=_others(ds, MWL_ATTRIBUTES - MODELLED_ATTRIBUTES, keep_code_sequence=True),
        other_sps_attributes=_others(sps, SPS_ATTRIBUTES - MODELLED_SPS_ATTRIBUTES),
        character_set=_text(ds, "SpecificCharacterSet"),
        source=source,
    )


#: Attributes the item holds in its own fields; the rest go to other_attributes.
MODELLED_ATTRIBUTES = frozenset(
    {
        "SpecificCharacterSet",
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "EthnicGroup",
        "OtherPatientIDs",
        "AdmissionID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "RequestingPhysician",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "RequestedProcedureCodeSequence",
        "StudyInstanceUID",
        "RequestedProcedurePriority",
        "ScheduledProcedureStepSequence",
        "MedicalAlerts",
        "Allergies",
        "PregnancyStatus",
        "PatientSize",
        "PatientWeight",
        "SpecialNeeds",
        "PatientState",
        "ConfidentialityConstraintOnPatientDataDescription",
    }
)
MODELLED_SPS_ATTRIBUTES = frozenset(
    {
        "ScheduledStationAETitle",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "Modality",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepStatus",
        "RequestedContrastAgent",
    }
)
_CODE_KEYS = {"CodeValue", "CodingSchemeDesignator", "CodeMeaning"}


def _decimal(ds: Dataset, keyword: str) -> str:
    """A DS value as written ("" when absent); refuses what is not a number."""
    text = _text(ds, keyword).strip()
    if not text:
        return ""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ItemError(keyword, "not a decimal number") from None
    if not value.is_finite() or value < 0 or len(text) > 16:
        raise ItemError(keyword, "not a decimal string of up to 16 characters (PS3.5 6.2)")
    whole, dot, fraction = text.partition(".")
    if dot and fraction and set(fraction) == {"0"} and "e" not in text.lower():
        return whole  # a DICOM JSON number 72 reads back as "72.0"
    return text


def _others(ds: Dataset, keywords: frozenset, *, keep_code_sequence: bool = False) -> str:
    """The attributes of ``keywords`` present in ``ds`` with a value, as DICOM JSON text.

    A Requested Procedure Code Sequence that says more than the one code
    the item models (more items, other attributes) is kept whole as well.
    """
    kept = Dataset()
    for elem in ds:
        if elem.keyword not in keywords or elem.value is None or elem.value == "":
            continue
        if elem.VR == "SQ" and not elem.value:
            continue
        kept.add(elem)
    code_seq = ds.get("RequestedProcedureCodeSequence") if keep_code_sequence else None
    if code_seq and (len(code_seq) > 1 or any(e.keyword not in _CODE_KEYS for e in code_seq[0])):
        kept.add(ds["RequestedProcedureCodeSequence"])
    return kept.to_json() if len(kept) else ""
