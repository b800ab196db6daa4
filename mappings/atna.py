"""DICOM audit messages (PS3.15 A.5) from the gateway's audit rows: pure.

``events_for`` turns one row of the store's ``audit`` table into the IHE
ATNA events it stands for (PS3.15 A.5.3; codes from PS3.16 CID 400-403,
object ID types from RFC 3881 / PS3.15 A.5.2.5); ``to_xml`` writes one as
the AuditMessage XML of A.5.1.  gateway/audit_atna.py sends them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1: csd-code, codeSystemName, originalText)."""

    code: str
    system: str
    meaning: str

    def xml(self, tag: str) -> str:
        return f"<{tag} csd-code={quoteattr(self.code)} codeSystemName={quoteattr(self.system)} originalText={quoteattr(self.meaning)}/>"


# PS3.16 CID 400 Audit Event ID
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
PATIENT_RECORD = Code("110110", "DCM", "Patient Record")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
QUERY = Code("110112", "DCM", "Query")
EXPORT = Code("110106", "DCM", "Export")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
# CID 401 Audit Event Type Code
LOGIN = Code("110122", "DCM", "Login")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")
# CID 402 Audit Active Participant Role ID
SOURCE = Code("110153", "DCM", "Source Role ID")
DESTINATION = Code("110152", "DCM", "Destination Role ID")
APPLICATION = Code("110150", "DCM", "Application")
# PS3.15 A.5.2 / RFC 3881 Participant Object ID Type Codes
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
STUDY_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
NODE_ID = Code("110182", "DCM", "Node ID")
REPORT_NUMBER = Code("9", "RFC-3881", "Report Number")

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"


@dataclass(frozen=True)
class Participant:
    """PS3.15 A.5.2.2 ActiveParticipant."""

    user_id: str
    requestor: bool
    role: Code | None = None
    address: str = ""  # NetworkAccessPointID (IP address, type 2)

    def xml(self) -> str:
        attrs = f"UserID={quoteattr(self.user_id or '-')} UserIsRequestor={quoteattr('true' if self.requestor else 'false')}"
        if self.address:
            attrs += f" NetworkAccessPointID={quoteattr(self.address)} NetworkAccessPointTypeCode=\"2\""
        inner = self.role.xml("RoleIDCode") if self.role else ""
        return f"<ActiveParticipant {attrs}>{inner}</ActiveParticipant>"


@dataclass(frozen=True)
class ParticipantObject:
    """PS3.15 A.5.2.5 ParticipantObjectIdentification."""

    object_id: str
    type_code: str  # 1 person, 2 system object, 3 organization, 4 other
    role: str  # e.g. 1 patient, 3 report, 4 domain resource, 13 security resource, 24 query
    id_type: Code
    name: str = ""
    query: bytes = b""
    details: tuple[tuple[str, str], ...] = ()
    descriptions: tuple[str, ...] = ()

    def xml(self) -> str:
        attrs = f"ParticipantObjectID={quoteattr(self.object_id or '-')} ParticipantObjectTypeCode={quoteattr(self.type_code)} ParticipantObjectTypeCodeRole={quoteattr(self.role)}"
        inner = self.id_type.xml("ParticipantObjectIDTypeCode")
        if self.name:
            inner += f"<ParticipantObjectName>{_text(self.name)}</ParticipantObjectName>"
        if self.query:
            inner += f"<ParticipantObjectQuery>{base64.b64encode(self.query).decode()}</ParticipantObjectQuery>"
        for key, value in self.details:
            inner += f"<ParticipantObjectDetail type={quoteattr(key)} value={quoteattr(base64.b64encode(value.encode()).decode())}/>"
        for text in self.descriptions:
            inner += f"<ParticipantObjectDescription>{_text(text)}</ParticipantObjectDescription>"
        return f"<ParticipantObjectIdentification {attrs}>{inner}</ParticipantObjectIdentification>"


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class AuditEvent:
    event_id: Code
    action: str  # C R U D E
    at: str
    outcome: str
    participants: tuple[Participant, ...]
    objects: tuple[ParticipantObject, ...] = ()
    type_code: Code | None = None
    outcome_description: str = ""


def to_xml(e: AuditEvent, source_id: str, site_id: str = "") -> str:
    """The AuditMessage of PS3.15 A.5.1 (one line, UTF-8)."""
    ev = f"<EventIdentification EventActionCode={quoteattr(e.action)} EventDateTime={quoteattr(e.at)} EventOutcomeIndicator={quoteattr(e.outcome)}>"
    ev += e.event_id.xml("EventID")
    if e.type_code is not None:
        ev += e.type_code.xml("EventTypeCode")
    if e.outcome_description:
        ev += f"<EventOutcomeDescription>{_text(e.outcome_description)}</EventOutcomeDescription>"
    ev += "</EventIdentification>"
    site = f" AuditEnterpriseSiteID={quoteattr(site_id)}" if site_id else ""
    # A.5.2.3 AuditSourceTypeCode 4: application server process tier
    src = f"<AuditSourceIdentification AuditSourceID={quoteattr(source_id)}{site}><AuditSourceTypeCode csd-code=\"4\" codeSystemName=\"DCM\" originalText=\"Application Server\"/></AuditSourceIdentification>"
    body = ev + "".join(p.xml() for p in e.participants) + src + "".join(o.xml() for o in e.objects)
    return f'<?xml version="1.0" encoding="UTF-8"?><AuditMessage>{body}</AuditMessage>'


# -- from audit rows to audit events ------------------------------------------


def _split_actor(actor: str) -> tuple[str, str]:
    """("name", "address") of "name@address" (the address without a port)."""
    name, _, where = actor.rpartition("@") if "@" in actor else (actor, "", "")
    host = where.rsplit(":", 1)[0] if where.count(":") == 1 else where
    return name, host


def _iso(at: str) -> str:
    return at if ("+" in at[10:] or at.endswith("Z")) else at + "Z"


def events_for(row: dict, us: str, our_address: str = "") -> list[AuditEvent]:
    """The ATNA events of one audit row: a bad credential is a failed user
    authentication and a security alert; most rows are one event; rows ATNA
    does not ask for, none."""
    if row["event"] == "auth.failure":
        alert = event_for({**row, "event": "auth.bad_credential"}, us, our_address)
        return [e for e in (event_for(row, us, our_address), alert) if e is not None]
    one = event_for(row, us, our_address)
    return [one] if one is not None else []


def event_for(row: dict, us: str, our_address: str = "") -> AuditEvent | None:
    """The ATNA event of one audit row, or None for rows ATNA does not ask for."""
    event, actor, d, at = row["event"], row["actor"], row["detail"], _iso(row["at"])
    gateway = Participant(us, False, APPLICATION, our_address)
    name, address = _split_actor(actor)

    if event in ("auth.success", "auth.failure"):
        ok = event == "auth.success"
        who = Participant(name if ok else f"unknown ({d.get('reason', '')})", True, None, d.get("remote", address))
        return AuditEvent(USER_AUTHENTICATION, "E", at, SUCCESS if ok else MINOR_FAILURE, (who, gateway), type_code=LOGIN, outcome_description="" if ok else str(d.get("reason", ""))[:200])
    if event in ("auth.bad_credential", "http.refused", "http.forbidden", "dicom.association_refused", "dicom.tls_refused", "hl7.sender_refused"):
        kind = RESTRICTED_FUNCTION if event.startswith("http.") else NODE_AUTHENTICATION
        who = Participant(name, True, None, d.get("remote", address))
        what = ParticipantObject(str(d.get("path") or d.get("called_ae") or d.get("type") or event), "2", "13", NODE_ID, descriptions=(str(d.get("reason", "")) or event,))
        return AuditEvent(SECURITY_ALERT, "E", at, MINOR_FAILURE, (who, gateway), (what,), type_code=kind, outcome_description=str(d.get("reason", event))[:200])
    if event in ("workbench.exam", "workbench.queue", "workbench.today"):
        # PS3.15 A.5.3 Patient Record (DCM 110110), action R: a page showed these patients' data
        who = Participant(name, True, None, address)
        shown = [d["patient_id"]] if d.get("patient_id") else [str(p) for p in d.get("patient_ids") or ()]
        what = f"exam {d['exam']} viewed" if "exam" in d else f"{event.split('.', 1)[1]} list viewed"
        objs = tuple(ParticipantObject(p, "1", "1", PATIENT_NUMBER, descriptions=(what, "workbench")) for p in shown[:100])
        return AuditEvent(PATIENT_RECORD, "R", at, SUCCESS, (who, gateway), objs) if objs else None
    patient = d.get("patient_id", "")
    if event.startswith(("hl7.", "fhir.")) or event in ("worklist.create", "worklist.bulk_create", "worklist.status", "worklist.justify"):
        msg_type = event.split(".", 1)[1]
        if event == "worklist.status":
            action, what = "U", f"status {d.get('status', '')}"
        elif event == "worklist.justify":  # a HELD order released by a practitioner (IR(ME)R)
            action, what = "U", f"exposure justified by {d.get('practitioner', '')}"
        elif "A40" in msg_type or "A34" in msg_type or "A39" in msg_type:
            action, what = "U", "patients merged"
        elif msg_type.startswith("ADT"):
            action, what = "U", "patient updated"
        else:
            action, what = "C", "order created or changed"
        who = Participant(name, True, SOURCE, address)
        items = d.get("items") if isinstance(d.get("items"), list) else [d.get("id")]
        obj = ParticipantObject(patient or ",".join(str(i) for i in items if i is not None) or "-", "1", "1", PATIENT_NUMBER, details=(("worklist_items", ",".join(str(i) for i in items if i is not None)), ("message_id", str(d.get("message_id", "")))), descriptions=(what, msg_type))
        return AuditEvent(PATIENT_RECORD, action, at, SUCCESS, (who, Participant(us, False, DESTINATION, our_address)), (obj,))
    if event == "instance.received":
        who = Participant(name, True, SOURCE, address)
        study = ParticipantObject(d.get("study_uid", ""), "2", "3", STUDY_UID, descriptions=(f"{d.get('count', 1)} instance(s) of {d.get('sop_class', '')}",))
        pat = ParticipantObject(patient or "-", "1", "1", PATIENT_NUMBER)
        return AuditEvent(INSTANCES_TRANSFERRED, "C", at, SUCCESS, (who, Participant(us, False, DESTINATION, our_address)), (study, pat))
    if event == "outbox.delivered":
        dest = Participant(d.get("destination", name), False, DESTINATION, d.get("host", ""))
        src = Participant(us, True, SOURCE, our_address)
        if d.get("kind") in ("report", "report-pdf"):  # the ORU / Bundle, or the Encapsulated PDF
            what = "report PDF sent" if d.get("kind") == "report-pdf" else "report sent"
            report = ParticipantObject(str(d.get("ref_id", "")), "2", "3", REPORT_NUMBER, descriptions=(what,))
            pat = ParticipantObject(patient or "-", "1", "1", PATIENT_NUMBER)
            return AuditEvent(EXPORT, "R", at, SUCCESS, (src, dest), (report, pat))
        if d.get("ref_table") == "instances":
            study = ParticipantObject(d.get("study_uid", "") or "-", "2", "3", STUDY_UID, descriptions=(f"{d.get('kind', '')} sent",))
            pat = ParticipantObject(patient or "-", "1", "1", PATIENT_NUMBER)
            return AuditEvent(INSTANCES_TRANSFERRED, "R", at, SUCCESS, (src, dest), (study, pat))
        return None
    if event == "exam.read":  # the workbench showed an exam's images, trend or report PDF
        who = Participant(name, True, None, address)
        obj = ParticipantObject(patient or "-", "1", "1", PATIENT_NUMBER, details=(("exam", str(d.get("exam", ""))),), descriptions=(str(d.get("what", "exam")),))
        return AuditEvent(PATIENT_RECORD, "R", at, SUCCESS, (who, gateway), (obj,))
    if event == "dicom.query":
        who = Participant(name, True, SOURCE, address)
        q = ParticipantObject(d.get("sop_class", ""), "2", "24", SOP_CLASS_UID, query=base64.b64decode(d.get("query", "") or b""), details=(("TransferSyntax", d.get("transfer_syntax", "")),))
        return AuditEvent(QUERY, "E", at, SUCCESS, (who, Participant(us, False, DESTINATION, our_address)), (q,))
    return None
