"""Order messages a RIS sends: HL7 v2 ORM^O01, OMI^O23, ADT^A08, cancels, and
FHIR ServiceRequest; plus the ACK check.  Pure functions: the caller passes
every timestamp and control ID, so tests and benchmarks reuse them.

Field conventions (the gateway's, IHE RAD TF-2 Table 4.4-6 style):

* ORM^O01: PID-3 patient ID, PID-5 name, PID-7 birth date, PID-8 sex,
  PID-22 ethnic group, ORC-2/ORC-3 placer/filler, OBR-4 procedure
  code^text, OBR-18 accession, OBR-19 requested procedure ID, OBR-20 SPS
  ID, OBR-21 station AE, OBR-24 modality, OBR-27.4 start, ZDS-1 Study
  Instance UID.  One ORC/OBR/ZDS group per scheduled step.
* OMI^O23: one IPC per step (IPC-1 accession, IPC-2 requested procedure ID,
  IPC-3 Study Instance UID, IPC-4 SPS ID, IPC-5 modality, IPC-9 station
  AE), TQ1-7 start.
* FHIR: ServiceRequest with a contained Patient, identifier type ACSN for
  the accession, the station AE in an extension.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from pydicom.uid import generate_uid

from hl7v2.ack import Ack, check_ack, parse_ack  # noqa: F401  (the RIS side's ACK check)
from hl7v2.charsets import encode_message
from hl7v2.er7 import components, message, msh_field, segment
from hl7v2.escaping import escape  # noqa: F401  (om.escape)

STATION_AE_EXTENSION = "http://dxa-gateway.org/fhir/StructureDefinition/scheduled-station-ae"
MODALITY_EXTENSION = "http://dxa-gateway.org/fhir/StructureDefinition/modality"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

FHIR_GENDER = {"F": "female", "M": "male", "O": "other", "": "unknown", "U": "unknown"}


@dataclass(frozen=True, slots=True)
class Patient:
    patient_id: str
    family: str
    given: str = ""
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""  # F, M, O, U
    ethnic_group: str = ""  # code^text, e.g. W^White
    issuer: str = "HOSP"

    @property
    def dicom_name(self) -> str:
        return f"{self.family}^{self.given}".rstrip("^")


@dataclass(frozen=True, slots=True)
class Step:
    """One scheduled procedure step (one worklist item)."""

    accession: str
    requested_procedure_id: str
    sps_id: str
    study_uid: str = ""
    station_ae: str = "DXA1"
    modality: str = "BMD"


@dataclass(frozen=True, slots=True)
class Order:
    patient: Patient
    placer: str
    filler: str
    start: str  # YYYYMMDDHHMMSS
    steps: tuple[Step, ...]
    code: str = "DXAHS"
    text: str = "DXA hip & spine"
    coding_system: str = "L"
    referrer: str = "D123^Referrer^Rita"  # XCN id^family^given
    status: str = "active"  # FHIR request-status
    referred_at: str = ""  # YYYYMMDDHHMMSS: ORC-9 / FHIR authoredOn, when the referral was made

    @property
    def accession(self) -> str:
        return self.steps[0].accession


# -- HL7 text ----------------------------------------------------------------


def encode(message: str, charset: str = "UNICODE UTF-8") -> bytes:
    """The bytes of ``message`` in the MSH-18 character set; ValueError
    naming the character when the charset cannot hold it."""
    return encode_message(message, charset)


def msh(
    control_id: str,
    message_type: str,
    *,
    timestamp: str,
    version: str = "2.5.1",
    charset: str = "UNICODE UTF-8",
    sending: tuple[str, str] = ("RIS", "HOSP"),
    receiving: tuple[str, str] = ("DXAGW", "DXA"),
) -> str:
    return segment(
        "MSH",
        {
            3: escape(sending[0]),
            4: escape(sending[1]),
            5: escape(receiving[0]),
            6: escape(receiving[1]),
            7: timestamp,
            9: message_type,
            10: escape(control_id),
            11: "P",
            12: version,
            18: charset,
        },
    )


def pid(p: Patient) -> str:
    return segment(
        "PID",
        {
            1: "1",
            3: f"{escape(p.patient_id)}^^^{escape(p.issuer)}^MR",
            5: components(p.family, p.given),
            7: p.birth_date,
            8: p.sex,
            22: components(*p.ethnic_group.split("^"), trim=False) if p.ethnic_group else "",
        },
        trim=True,
    )


def build_orm(
    order: Order,
    control_id: str,
    *,
    timestamp: str,
    version: str = "2.3.1",
    charset: str = "UNICODE UTF-8",
    control: str = "NW",
    include_study_uid: bool = True,
) -> str:
    """ORM^O01: one ORC/OBR(/ZDS) group per step."""
    segs = [
        msh(control_id, "ORM^O01", timestamp=timestamp, version=version, charset=charset),
        pid(order.patient),
        segment("PV1", {1: "1", 2: "O", 8: order.referrer}, trim=True),
    ]
    code = f"{escape(order.code)}^{escape(order.text)}^{escape(order.coding_system)}"
    for i, step in enumerate(order.steps, 1):
        placer = order.placer if len(order.steps) == 1 else f"{order.placer}-{i}"
        filler = order.filler if len(order.steps) == 1 else f"{order.filler}-{i}"
        orc = {1: control, 2: escape(placer), 3: escape(filler), 7: f"^^^{order.start}", 12: order.referrer}
        if order.referred_at:
            orc[9] = order.referred_at
        if control == "CA":
            orc[5] = "CA"
        segs.append(segment("ORC", orc, trim=True))
        segs.append(
            segment(
                "OBR",
                {
                    1: str(i),
                    2: escape(placer),
                    3: escape(filler),
                    4: code,
                    16: order.referrer,
                    18: escape(step.accession),
                    19: escape(step.requested_procedure_id),
                    20: escape(step.sps_id),
                    21: escape(step.station_ae),
                    24: step.modality,
                    27: f"^^^{order.start}",
                },
                trim=True,
            )
        )
        if include_study_uid and step.study_uid and control != "CA":
            segs.append(segment("ZDS", {1: f"{step.study_uid}^DXAGW^Application^DICOM"}, trim=True))
    return message(segs)


def build_omi(
    order: Order,
    control_id: str,
    *,
    timestamp: str,
    version: str = "2.5.1",
    charset: str = "UNICODE UTF-8",
    control: str = "NW",
) -> str:
    """OMI^O23: one ORC/TQ1/OBR with one IPC per scheduled step."""
    code = f"{escape(order.code)}^{escape(order.text)}^{escape(order.coding_system)}"
    orc = {1: control, 2: escape(order.placer), 3: escape(order.filler), 12: order.referrer}
    if order.referred_at:
        orc[9] = order.referred_at
    if control == "CA":
        orc[5] = "CA"
    segs = [
        msh(control_id, "OMI^O23^OMI_O23", timestamp=timestamp, version=version, charset=charset),
        pid(order.patient),
        segment("PV1", {1: "1", 2: "O", 8: order.referrer}, trim=True),
        segment("ORC", orc, trim=True),
        segment("TQ1", {1: "1", 7: order.start}, trim=True),
        segment("OBR", {1: "1", 2: escape(order.placer), 3: escape(order.filler), 4: code, 16: order.referrer}, trim=True),
    ]
    for step in order.steps:
        segs.append(
            segment(
                "IPC",
                {
                    1: escape(step.accession),
                    2: escape(step.requested_procedure_id),
                    3: step.study_uid,
                    4: escape(step.sps_id),
                    5: step.modality,
                    9: escape(step.station_ae),
                },
                trim=True,
            )
        )
    return message(segs)


def build_cancel(order: Order, control_id: str, *, timestamp: str, fmt: str = "orm", **kw) -> str:
    """ORC-1 CA for ``order`` (as ORM^O01 or OMI^O23)."""
    if fmt == "omi":
        return build_omi(order, control_id, timestamp=timestamp, control="CA", **kw)
    return build_orm(order, control_id, timestamp=timestamp, control="CA", **kw)


def build_adt_a08(
    patient: Patient, control_id: str, *, timestamp: str, version: str = "2.5.1", charset: str = "UNICODE UTF-8"
) -> str:
    """ADT^A08: update patient information."""
    segs = [
        msh(control_id, "ADT^A08^ADT_A01", timestamp=timestamp, version=version, charset=charset),
        segment("EVN", {1: "A08", 2: timestamp}, trim=True),
        pid(patient),
        segment("PV1", {1: "1", 2: "O"}, trim=True),
    ]
    return message(segs)


# -- FHIR --------------------------------------------------------------------


def _fhir_datetime(ts: str, tz: str = "Z") -> str:
    """DTM -> FHIR dateTime (a time needs a zone there: ``Z`` or ``+01:00``)."""
    ts = (ts + "000000")[:14]
    return f"{ts[0:4]}-{ts[4:6]}-{ts[6:8]}T{ts[8:10]}:{ts[10:12]}:{ts[12:14]}{tz}"


def _fhir_date(da: str) -> str:
    return f"{da[0:4]}-{da[4:6]}-{da[6:8]}"


def _display_name(xcn: str) -> str:
    """XCN id^family^given -> "given family"."""
    parts = xcn.split("^") + ["", ""]
    return " ".join(x for x in (parts[2], parts[1]) if x) or parts[0]


def build_service_request(order: Order, *, status: str | None = None, step: int = 0, tz: str = "Z") -> dict:
    """FHIR R4 ServiceRequest for one step, with its Patient contained."""
    s = order.steps[step]
    p = order.patient
    patient = {
        "resourceType": "Patient",
        "id": "pat",
        "identifier": [
            {"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "system": p.issuer, "value": p.patient_id}
        ],
        "name": [{"family": p.family, **({"given": p.given.split()} if p.given else {})}],
        "gender": FHIR_GENDER.get(p.sex, "unknown"),
    }
    if p.birth_date:
        patient["birthDate"] = _fhir_date(p.birth_date)
    identifiers = [
        {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}, "value": order.placer},
        {"type": {"coding": [{"system": V2_0203, "code": "FILL"}]}, "value": order.filler},
        {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": s.accession},
    ]
    if s.study_uid:
        identifiers.append({"system": "urn:dicom:uid", "value": f"urn:oid:{s.study_uid}"})
    return {
        "resourceType": "ServiceRequest",
        "id": f"sr-{s.accession}".replace("_", "-")[:64],
        "contained": [patient],
        "extension": [
            {"url": STATION_AE_EXTENSION, "valueString": s.station_ae},
            {"url": MODALITY_EXTENSION, "valueString": s.modality},
        ],
        "identifier": identifiers,
        "status": status or order.status,
        "intent": "order",
        "code": {
            "coding": [{"system": "http://dxa-gateway.org/fhir/CodeSystem/procedure", "code": order.code, "display": order.text}],
            "text": order.text,
        },
        "subject": {"reference": "#pat"},
        "occurrenceDateTime": _fhir_datetime(order.start, tz),
        "requester": {"display": _display_name(order.referrer), **({"identifier": {"value": order.referrer.split("^")[0]}} if order.referrer.split("^")[0] else {})},
        **({"authoredOn": _fhir_datetime(order.referred_at, tz)} if order.referred_at else {}),
    }


# -- ACKs --------------------------------------------------------------------

# Ack, parse_ack and check_ack are hl7v2.ack's, imported above for the RIS side.


def control_id_of(message: bytes | str) -> str:
    """MSH-10 of an ER7 message."""
    return msh_field(message, 10)


def charset_of(message: bytes | str) -> str:
    return msh_field(message, 18).split("^")[0]


# -- sample orders -----------------------------------------------------------

FAMILIES = [
    "Smith", "Jones", "Müller", "Ærø", "Østergaard", "Núñez", "O'Brien", "Björk", "García", "Dubois",
    "Patel", "Nowak", "Schäfer", "Lefèvre", "Svensson", "Brown", "Taylor", "Kowalski", "Håkansson", "Wilson",
]
GIVEN_F = ["Jane", "Ann", "Zoë", "Ingrid", "Marie-Hélène", "Søs", "Maria", "Agnès", "Grete", "Priya"]
GIVEN_M = ["John", "Søren", "José", "Jürgen", "Olaf", "Ravi", "Pierre", "Tomás", "Ian", "Björn"]
ETHNIC = ["W^White", "W^White", "W^White", "A^Asian", "B^Black", ""]
PROCEDURES = [
    ("DXAHS", "DXA hip & spine", 2),
    ("DXAH", "DXA hip", 1),
    ("DXAS", "DXA lumbar spine", 1),
    ("DXAFA", "DXA forearm", 1),
    ("DXATB", "DXA total body", 1),
]


def random_order(
    rng: random.Random,
    index: int,
    *,
    day: str,
    station_ae: str = "DXA1",
    prefix: str = "SIM",
    study_uid: bool = True,
) -> Order:
    """A plausible DXA order for ``day`` (YYYYMMDD), reproducible from ``rng``."""
    sex = "F" if rng.random() < 0.75 else "M"
    year = rng.randint(1935, 1975)
    patient = Patient(
        patient_id=f"{prefix}{rng.randint(100000, 999999)}",
        family=rng.choice(FAMILIES),
        given=rng.choice(GIVEN_F if sex == "F" else GIVEN_M),
        birth_date=f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
        sex=sex,
        ethnic_group=rng.choice(ETHNIC),
    )
    code, text, nsteps = rng.choice(PROCEDURES)
    acc = f"A{prefix}{index:05d}{rng.randint(100, 999)}"
    steps = []
    for n in range(1, nsteps + 1):
        uid = generate_uid(entropy_srcs=[prefix, acc, str(n)]) if study_uid else ""
        steps.append(Step(accession=acc if nsteps == 1 else f"{acc}{n}", requested_procedure_id=f"RP{acc[-8:]}{n}", sps_id=f"SPS{acc[-8:]}{n}", study_uid=uid, station_ae=station_ae))
    minute = 8 * 60 + (index * 15) % (10 * 60)
    return Order(
        patient=patient,
        placer=f"PO{acc}",
        filler=f"FO{acc}",
        start=f"{day}{minute // 60:02d}{minute % 60:02d}00",
        steps=tuple(steps),
        code=code,
        text=text,
    )


def random_orders(seed: int, count: int, *, day: str, station_ae: str = "DXA1", prefix: str = "SIM") -> list[Order]:
    rng = random.Random(seed)
    return [random_order(rng, i, day=day, station_ae=station_ae, prefix=prefix) for i in range(count)]


def renamed(patient: Patient, family: str | None = None, given: str | None = None) -> Patient:
    """The same patient with a corrected name (for ADT^A08)."""
    return replace(patient, family=family or patient.family, given=given if given is not None else patient.given)
