"""HL7 v2 orders and patient updates -> worklist actions.

Reads ORM^O01 (v2.3 to v2.5.1), OMI^O23 (v2.5+), ADT^A08/A31 and ADT^A40
into a :class:`ParsedMessage`: the header plus a list of actions the store
applies in one transaction.  Field mapping follows IHE RAD TF-2 (Table
4.4-6, HL7 order to DICOM MWL) with the gateway's conventions:

* ORM: OBR-18 accession, OBR-19 requested procedure ID, OBR-20 SPS ID,
  OBR-21 scheduled station AE (configurable), OBR-24 modality, OBR-27.4 or
  ORC-7.4 start, ZDS-1 Study Instance UID.
* OMI: one item per IPC (IPC-1 accession, IPC-2 requested procedure ID,
  IPC-3 Study Instance UID, IPC-4 SPS ID, IPC-5 modality, IPC-7 station
  name, IPC-8 location, IPC-9 station AE), TQ1-7 start.
* Both: AL1-3 allergies; OBX body height / weight / pregnancy status to
  Patient's Size, Weight and Pregnancy Status; TQ1-9, OBR-27.6 or ORC-7.6
  priority to Requested Procedure Priority (docs/hl7-interface.md).

Pure: the caller passes the options; nothing here reads a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mappings.hl7_bounds import Location, bound_item, bound_value
from hl7v2.charsets import CHARSETS, decode_message
from hl7v2.er7 import Header, Message, Segment, read_header, split_message
from hl7v2.errors import Hl7Error
from mappings.patient_medical import (
    HEIGHT_CODES,
    HL7_PRIORITY,
    PREGNANCY_CODES,
    WEIGHT_CODES,
    MeasureError,
    height_m,
    pregnancy_status,
    weight_kg,
)
from mappings.worklist import (
    CANCELLED,
    COMPLETED,
    DEFAULT_MODALITY,
    DISCONTINUED,
    IN_PROGRESS,
    SCHEDULED,
    Code,
    PatientDemographics,
    WorklistItem,
    derived_uid,
)

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
SUPPORTED_TYPES = {
    ("ORM", "O01"),
    ("OMI", "O23"),
    ("ADT", "A08"),
    ("ADT", "A31"),
    ("ADT", "A40"),
}
# ORC-5 order status (HL7 Table 0038) -> step status, for ORC-1 SC.
ORDER_STATUS = {
    "SC": SCHEDULED,
    "HD": SCHEDULED,
    "IP": IN_PROGRESS,
    "A": IN_PROGRESS,
    "CM": COMPLETED,
    "CA": CANCELLED,
    "DC": DISCONTINUED,
}
# PID-8 (HL7 Table 0001) -> Patient's Sex (0010,0040): M, F or O.
SEX = {"M": "M", "F": "F", "O": "O", "U": "", "A": "O", "N": "O", "": ""}
DICOM_MODALITIES = {"BMD", "DX", "CR", "OT", "SR", "PR", "DOC", "KO", "MR", "CT", "US", "NM", "XA", "RF", "MG", "OP"}

# HL7 v2.7 2.14.9.10: MSH-10 is ST of at most 199 characters.
MAX_CONTROL_ID = 199

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?$")


@dataclass(frozen=True, slots=True)
class OrderOptions:
    """Site choices for order mapping (from config ``hl7:`` and ``worklist:``)."""

    default_charset: str = "UNICODE UTF-8"
    station_ae_field: str = "OBR-21"  # where an ORM carries the station AE
    default_station_ae: str = ""
    default_modality: str = DEFAULT_MODALITY


@dataclass(frozen=True, slots=True)
class OrderKey:
    """How an existing order is found: placer, filler or accession number."""

    placer: str = ""
    filler: str = ""
    accession: str = ""

    def __bool__(self) -> bool:
        return bool(self.placer or self.filler or self.accession)


@dataclass(frozen=True, slots=True)
class UpsertOrder:
    """ORC-1 NW (new) or XO (change): create or update these steps."""

    items: tuple[WorklistItem, ...]
    key: OrderKey
    is_change: bool = False


@dataclass(frozen=True, slots=True)
class SetOrderStatus:
    """ORC-1 CA, DC or SC: the steps of an order change status."""

    key: OrderKey
    status: str
    control: str  # the ORC-1 that asked for it


@dataclass(frozen=True, slots=True)
class UpdatePatient:
    """ADT^A08/A31: new demographics for the open steps of a patient."""

    demographics: PatientDemographics


@dataclass(frozen=True, slots=True)
class MergePatient:
    """ADT^A40: the prior patient ID's open steps move to the surviving ID."""

    patient_id: str
    issuer: str
    prior_patient_id: str
    prior_issuer: str
    demographics: PatientDemographics


Action = UpsertOrder | SetOrderStatus | UpdatePatient | MergePatient


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    header: Header
    actions: tuple[Action, ...] = field(default_factory=tuple)


def check_header(msg: Message, header: Header) -> None:
    """Refuse what the gateway does not take (HL7 v2.5 2.9.2.1 step 1)."""
    msh = msg.segments[0]
    msg_type, trigger, version = header.message_type, header.trigger, header.version
    if not header.control_id:
        raise msh.error(10, "MSH-10 message control ID is required", code=101)
    if len(header.control_id) > MAX_CONTROL_ID:
        raise msh.error(10, f"MSH-10 message control ID is longer than {MAX_CONTROL_ID} characters")
    if not msg_type:
        raise msh.error(9, "MSH-9 message type is required", code=101)
    if version not in SUPPORTED_VERSIONS:
        raise Hl7Error(f"unsupported version {version[:8]!r}", code=203, segment="MSH", field=12, ack_code="AR")
    if (msg_type, trigger) not in SUPPORTED_TYPES:
        known_type = any(t == msg_type for t, _ in SUPPORTED_TYPES)
        raise Hl7Error(
            f"unsupported message {msg_type[:3]}^{trigger[:3]}",
            code=201 if known_type else 200,
            segment="MSH",
            field=9,
            component=2 if known_type else 1,
            ack_code="AR",
        )


def parse_message(raw: bytes, options: OrderOptions = OrderOptions()) -> ParsedMessage:
    """Parse one HL7 message (bytes, without MLLP framing) into actions.

    Raises :class:`Hl7Error` naming the segment and field for anything the
    gateway cannot accept; nothing is changed for such a message.
    """
    text, charset = decode_message(raw, options.default_charset)
    codec = CHARSETS[charset][0]
    msg = split_message(text, codec)
    header = read_header(msg, charset)
    try:
        check_header(msg, header)
        if header.message_type == "ADT":
            actions = _adt_actions(msg, header)
        else:
            actions = _order_actions(msg, header, options)
    except Hl7Error as exc:
        exc.header = header  # so the ACK can answer the sender properly
        raise
    return ParsedMessage(header=header, actions=tuple(actions))


# -- field types -------------------------------------------------------------


def _ts(seg: Segment, n: int, comp: int = 1, *, value: str | None = None) -> tuple[str, str]:
    """An HL7 TS/DTM as (DICOM DA, DICOM TM); raises a data type error."""
    raw = seg.get(n, comp) if value is None else value
    if not raw:
        return "", ""
    m = _TS.match(raw)
    if not m:
        raise seg.error(n, f"{seg.id}-{n} is not a valid date/time", comp=comp if comp > 1 else 0)
    year, month, day, hour, minute, second, _tz = m.groups()
    month, day = month or "01", day or "01"
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        raise seg.error(n, f"{seg.id}-{n} is not a valid date", comp=comp if comp > 1 else 0)
    if hour and (int(hour) > 23 or int(minute or 0) > 59):
        raise seg.error(n, f"{seg.id}-{n} is not a valid time", comp=comp if comp > 1 else 0)
    time = (hour or "") + (minute or "") + (second or "")
    return f"{year}{month}{day}", time


def _xpn(seg: Segment, n: int, rep: int = 1) -> str:
    """XPN (family^given^middle^suffix^prefix) -> DICOM PN (PS3.5 6.2)."""
    c = seg.components(n, rep) + [""] * 6
    family = c[0]
    given, middle, suffix, prefix = c[1], c[2], c[3], c[4]
    return "^".join([family, given, middle, prefix, suffix]).rstrip("^")


def _xcn(seg: Segment, n: int) -> str:
    """XCN (id^family^given^middle^suffix^prefix) -> DICOM PN."""
    c = seg.components(n) + [""] * 7
    return "^".join([c[1], c[2], c[3], c[5], c[4]]).rstrip("^")


def _referrer_id(orc: Segment, obr: Segment, pv1: Segment | None) -> tuple[str, str]:
    """The referrer's XCN-1 identifier and its field: ORC-12, else OBR-16, else PV1-8."""
    for seg, n in ((orc, 12), (obr, 16), (pv1, 8)):
        if seg is not None and (seg.get(n, 1) or _xcn(seg, n)):
            return seg.get(n, 1), f"{seg.id}-{n}"
    return "", ""


def _referred_at(orc: Segment, obr: Segment) -> str:
    """ORC-9 date/time of transaction, else OBR-6 requested date/time (for the
    service KPIs); optional, so a bad value is dropped rather than refused."""
    for seg, n in ((orc, 9), (obr, 6)):
        try:
            day, tm = _ts(seg, n)
        except Hl7Error:
            continue
        if day:
            return day + tm
    return ""


def _patient(msg: Message) -> tuple[Segment, dict]:
    pid = msg.first("PID")
    if pid is None:
        raise Hl7Error("PID segment is required", code=100, segment="PID")
    patient_id = pid.get(3, 1)
    if not patient_id:
        patient_id = pid.get(2, 1)  # v2.3 external ID
    if not patient_id:
        raise pid.error(3, "PID-3 patient identifier is required", code=101)
    birth_date, _ = _ts(pid, 7)
    sex_raw = pid.get(8).upper()
    if sex_raw not in SEX:
        raise pid.error(8, f"PID-8 sex {sex_raw[:8]!r} is not in HL7 Table 0001", code=103)
    ethnic = pid.get(22, 2) or pid.get(22, 1) or pid.get(10, 2) or pid.get(10, 1)
    others = tuple(v for v in (pid.get(3, 1, rep=r) for r in range(2, len(pid.reps(3)) + 1)) if v)
    return pid, {
        "patient_id": patient_id,
        "issuer_of_patient_id": pid.get(3, 4),
        "patient_name": _xpn(pid, 5),
        "birth_date": birth_date,
        "sex": SEX[sex_raw],
        "ethnic_group": ethnic[:16],
        "other_patient_ids": others,
    }


def _study_uid(header: Header, key: OrderKey, proc_id: str) -> str:
    """The Study Instance UID of an order that sent none: derived from it."""
    return derived_uid(header.sender, key.placer, key.filler, key.accession, proc_id)


def _field_ref(spec: str) -> tuple[str, int, int]:
    """``OBR-21`` or ``OBR-21.1`` -> (segment, field, component)."""
    m = re.fullmatch(r"([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?", spec)
    if not m:
        raise ValueError(f"bad field reference {spec!r}")
    return m.group(1), int(m.group(2)), int(m.group(3) or 1)


def _order_actions(msg: Message, header: Header, options: OrderOptions) -> list[Action]:
    """ORM^O01 and OMI^O23: one action per ORC group."""
    _, patient = _patient(msg)
    pv1 = msg.first("PV1")
    referring = _xcn(pv1, 8) if pv1 else ""
    admission = pv1.get(19) if pv1 else ""
    station_seg, station_field, station_comp = _field_ref(options.station_ae_field)
    medical = _patient_medical(msg)

    groups: list[list[Segment]] = []
    for seg in msg.segments:
        if seg.id == "ORC":
            groups.append([seg])
        elif seg.id in ("OBR", "TQ1", "IPC", "ZDS", "NTE") and groups:
            groups[-1].append(seg)
        elif seg.id in ("OBR", "IPC"):
            raise Hl7Error(f"{seg.id} before any ORC", code=100, segment=seg.id, sequence=seg.seq)
    if not groups:
        raise Hl7Error("ORC segment is required", code=100, segment="ORC")

    actions: list[Action] = []
    for group in groups:
        orc = group[0]
        control = orc.require(1, what="order control")
        obr = next((s for s in group if s.id == "OBR"), None)
        accession_hint = obr.get(18) if obr else ""
        ipcs = [s for s in group if s.id == "IPC"]
        if not accession_hint and ipcs:
            accession_hint = ipcs[0].get(1)
        key = OrderKey(
            placer=orc.get(2) or (obr.get(2) if obr else ""),
            filler=orc.get(3) or (obr.get(3) if obr else ""),
            accession=accession_hint,
        )
        if control in ("CA", "DC", "OC", "OD"):
            if not key:
                raise orc.error(2, "ORC-2 placer order number is required to cancel", code=101)
            status = CANCELLED if control in ("CA", "OC") else DISCONTINUED
            actions.append(SetOrderStatus(key=key, status=status, control=control))
            continue
        if control == "SC":
            order_status = orc.get(5)
            if order_status not in ORDER_STATUS:
                raise orc.error(5, f"ORC-5 order status {order_status[:4]!r} is not supported", code=103)
            if not key:
                raise orc.error(2, "ORC-2 placer order number is required", code=101)
            actions.append(SetOrderStatus(key=key, status=ORDER_STATUS[order_status], control=control))
            continue
        if control not in ("NW", "XO"):
            raise orc.error(1, f"ORC-1 order control {control[:4]!r} is not supported", code=103)
        if obr is None:
            raise Hl7Error("OBR segment is required for a new or changed order", code=100, segment="OBR")

        code = None
        if obr.get(4, 1):
            code = Code(obr.get(4, 1), obr.get(4, 3) or "L", obr.get(4, 2))
        description = obr.get(4, 2) or obr.get(4, 1)
        tq1 = next((s for s in group if s.id == "TQ1"), None)
        start = ("", "")
        for seg, n, comp in ((tq1, 7, 1), (obr, 27, 4), (orc, 7, 4), (obr, 36, 1)):
            if seg is not None and seg.get(n, comp):
                start = _ts(seg, n, comp)
                break
        if not start[0]:
            start = _ts(msg.segments[0], 7)
        requesting = _xcn(orc, 12) or _xcn(obr, 16)
        referrer_id, referrer_field = _referrer_id(orc, obr, pv1)
        referred_at = _referred_at(orc, obr)
        priority = _priority(tq1, obr, orc)
        zds = next((s for s in group if s.id == "ZDS"), None)
        base = dict(
            patient,
            **medical,
            requested_procedure_priority=priority,
            referring_physician=referring,
            requesting_physician=requesting,
            referrer_id=referrer_id,
            referrer_field=referrer_field,
            referred_at=referred_at,
            admission_id=admission,
            placer_order_number=key.placer,
            filler_order_number=key.filler,
            requested_procedure_description=description,
            requested_procedure_code=code,
            start_date=start[0],
            start_time=start[1],
            character_set=header.dicom_charset,
            source="hl7",
            source_ref=header.control_id,
        )
        items: list[WorklistItem] = []
        if ipcs:  # OMI^O23: one step per IPC (HL7 v2.5 4.5.6)
            for ipc in ipcs:
                accession = ipc.require(1, what="accession number")
                proc_id = ipc.require(2, what="requested procedure ID")
                modality = ipc.get(5) or options.default_modality
                ipc_key = OrderKey(key.placer, key.filler, accession)
                items.append(
                    WorklistItem(
                        **base,
                        accession_number=accession,
                        requested_procedure_id=proc_id,
                        study_instance_uid=ipc.get(3) or _study_uid(header, ipc_key, proc_id),
                        sps_id=ipc.get(4) or proc_id,
                        modality=modality,
                        station_name=ipc.get(7),
                        sps_location=ipc.get(8),
                        station_ae=ipc.get(9) or options.default_station_ae,
                        sps_description=ipc.get(6, 2) or description,
                        performing_physician=_xcn(obr, 34) if obr.get(34) else "",
                    )
                )
        else:  # ORM^O01: one step per OBR
            for seg in (s for s in group if s.id == "OBR"):
                accession = seg.get(18) or key.filler or key.placer
                proc_id = seg.get(19) or accession
                modality = seg.get(24)
                if modality and modality not in DICOM_MODALITIES:
                    modality = ""
                station = ""
                station_src = next((s for s in group if s.id == station_seg), None)
                if station_src is not None:
                    station = station_src.get(station_field, station_comp)
                uid = zds.get(1) if zds else ""
                items.append(
                    WorklistItem(
                        **base,
                        accession_number=accession,
                        requested_procedure_id=proc_id,
                        study_instance_uid=uid or _study_uid(header, key, proc_id),
                        sps_id=seg.get(20) or proc_id,
                        modality=modality or options.default_modality,
                        station_ae=station or options.default_station_ae,
                        sps_description=description,
                        performing_physician=_xcn(seg, 34) if seg.get(34) else "",
                    )
                )
        station_src = next((s for s in group if s.id == station_seg), None)
        station_loc = (station_seg, station_src.seq if station_src else 1, station_field, station_comp)
        sources = ipcs or [s for s in group if s.id == "OBR"]  # one step per IPC, else per OBR
        items = [bound_item(item, _locations(msg, orc, src, zds, station_loc)) for item, src in zip(items, sources)]
        actions.append(UpsertOrder(items=tuple(items), key=key, is_change=control == "XO"))
    return actions


def _locations(
    msg: Message, orc: Segment, source: Segment, zds: Segment | None, station: Location
) -> dict[str, Location]:
    """Where each worklist field of one step (from an OBR or IPC) came from, for ERR-2."""
    obr = source if source.id == "OBR" else next((s for s in msg.segments if s.id == "OBR"), None)
    ipc = source if source.id == "IPC" else None
    pid, pv1 = msg.first("PID"), msg.first("PV1")
    p, v = (pid.seq if pid else 1), (pv1.seq if pv1 else 1)
    where: dict[str, Location] = {
        "patient_id": ("PID", p, 3, 1),
        "issuer_of_patient_id": ("PID", p, 3, 4),
        "patient_name": ("PID", p, 5, 0),
        "ethnic_group": ("PID", p, 22, 0),
        "other_patient_ids": ("PID", p, 3, 1),
        "referring_physician": ("PV1", v, 8, 0),
        "admission_id": ("PV1", v, 19, 0),
        "placer_order_number": ("ORC", orc.seq, 2, 0),
        "filler_order_number": ("ORC", orc.seq, 3, 0),
        "requesting_physician": ("ORC", orc.seq, 12, 0),
        "station_ae": station,
    }
    if obr is not None:
        o = obr.seq
        where |= {
            "requested_procedure_code": ("OBR", o, 4, 1),
            "requested_procedure_description": ("OBR", o, 4, 2),
            "sps_description": ("OBR", o, 4, 2),
            "accession_number": ("OBR", o, 18, 0),
            "requested_procedure_id": ("OBR", o, 19, 0),
            "sps_id": ("OBR", o, 20, 0),
            "modality": ("OBR", o, 24, 0),
            "performing_physician": ("OBR", o, 34, 0),
        }
    if zds is not None:
        where["study_instance_uid"] = ("ZDS", zds.seq, 1, 1)
    if ipc is not None:
        i = ipc.seq
        where |= {
            "accession_number": ("IPC", i, 1, 0),
            "requested_procedure_id": ("IPC", i, 2, 0),
            "study_instance_uid": ("IPC", i, 3, 0),
            "sps_id": ("IPC", i, 4, 0),
            "modality": ("IPC", i, 5, 0),
            "station_name": ("IPC", i, 7, 0),
            "sps_location": ("IPC", i, 8, 0),
            "station_ae": ("IPC", i, 9, 0),
            "sps_description": ("IPC", i, 6, 2),
        }
    return where


def _priority(tq1: Segment | None, obr: Segment, orc: Segment) -> str:
    """TQ1-9, else OBR-27.6 / ORC-7.6 (TQ priority), as Requested Procedure Priority.

    HL7 Table 0027 codes without a DICOM equivalent (PRN) give no priority.
    """
    for seg, n, comp in ((tq1, 9, 1), (obr, 27, 6), (orc, 7, 6)):
        if seg is not None and seg.get(n, comp):
            return HL7_PRIORITY.get(seg.get(n, comp).strip().upper(), "")
    return ""


def _patient_medical(msg: Message) -> dict:
    """AL1 allergies and OBX height, weight and pregnancy, wherever they are in the message.

    IHE RAD TF-2 4.4 (RAD-4): OBX-3 ``^BODY HEIGHT`` / ``^BODY WEIGHT`` (or
    their LOINC codes), OBX-5 value, OBX-6 unit (UCUM; m and kg when empty).
    """
    out: dict = {}
    allergies = []
    for seg in msg.segments:
        if seg.id == "AL1":
            allergen = seg.get(3, 2) or seg.get(3, 1)
            if allergen and allergen not in allergies:
                allergies.append(allergen[:64])
        elif seg.id == "OBX":
            if seg.get(11).upper() in ("D", "X", "W"):  # deleted, cannot be obtained, wrong (HL7 Table 0085)
                continue
            code, text = seg.get(3, 1).strip().upper(), seg.get(3, 2).strip().upper()
            value = seg.get(5, 1)
            if not value:
                continue
            try:
                if code in HEIGHT_CODES or (not code and text in HEIGHT_CODES):
                    out.setdefault("patient_size", height_m(value, seg.get(6, 1)))
                elif code in WEIGHT_CODES or (not code and text in WEIGHT_CODES):
                    out.setdefault("patient_weight", weight_kg(value, seg.get(6, 1)))
                elif code in PREGNANCY_CODES or (not code and text in PREGNANCY_CODES):
                    status = pregnancy_status(value)
                    if status is None:
                        raise seg.error(5, f"OBX-5 pregnancy answer {value[:16]!r} is not a known code", code=103)
                    out.setdefault("pregnancy_status", status)
            except MeasureError as exc:
                n = 5 if exc.part == "value" else 6
                raise seg.error(n, f"OBX-{n}: {exc}", code=102 if n == 5 else 103) from None
    if allergies:
        out["allergies"] = tuple(allergies)
    return out


def _adt_actions(msg: Message, header: Header) -> list[Action]:
    pid, patient = _patient(msg)
    demographics = PatientDemographics(
        patient_id=bound_value("patient_id", patient["patient_id"], ("PID", pid.seq, 3, 1)),
        issuer_of_patient_id=bound_value("issuer_of_patient_id", patient["issuer_of_patient_id"], ("PID", pid.seq, 3, 4)),
        patient_name=bound_value("patient_name", patient["patient_name"], ("PID", pid.seq, 5, 0)) or None,
        birth_date=patient["birth_date"] or None,
        sex=patient["sex"] or None,
        ethnic_group=patient["ethnic_group"] or None,
    )
    if header.trigger in ("A08", "A31"):
        return [UpdatePatient(demographics)]
    mrg = msg.first("MRG")
    if mrg is None:
        raise Hl7Error("MRG segment is required for A40", code=100, segment="MRG")
    prior = mrg.get(1, 1)
    if not prior:
        raise mrg.error(1, "MRG-1 prior patient identifier is required", code=101)
    bound_value("patient_id", prior, ("MRG", mrg.seq, 1, 1))
    return [
        MergePatient(
            patient_id=patient["patient_id"],
            issuer=patient["issuer_of_patient_id"],
            prior_patient_id=prior,
            prior_issuer=mrg.get(1, 4),
            demographics=demographics,
        )
    ]
