"""A structural check of DICOM audit messages against PS3.15 A.5.1.

The official schema (RELAX NG, with an XSD rendering) is not shipped
offline, so this checks what A.5.1 makes mandatory, element by element:
the order of AuditMessage's children, the required attributes and their
value sets, and the coded-value attributes (csd-code, codeSystemName,
originalText).  ``problems`` returns a list of what is wrong (empty: valid).
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from datetime import datetime

ACTIONS = {"C", "R", "U", "D", "E"}
OUTCOMES = {"0", "4", "8", "12"}
AP_TYPES = {"1", "2", "3", "4", "5"}
PO_TYPES = {"1", "2", "3", "4"}
PO_ROLES = {str(n) for n in range(1, 25)}
PO_LIFECYCLE = {str(n) for n in range(1, 16)}
SENSITIVITY_FREE = True


def _coded(el: ET.Element, where: str, out: list[str]) -> None:
    for attr in ("csd-code", "codeSystemName", "originalText"):
        if not el.get(attr):
            out.append(f"{where}: coded value without {attr}")
    unknown = set(el.attrib) - {"csd-code", "codeSystemName", "displayName", "originalText"}
    if unknown:
        out.append(f"{where}: unknown attributes {sorted(unknown)}")
    if len(el):
        out.append(f"{where}: a coded value has no children")


def _datetime(value: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?", value or ""):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def problems(xml: str) -> list[str]:
    out: list[str] = []
    try:
        root = ET.fromstring(xml.encode("utf-8"))
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
    if root.tag != "AuditMessage":
        return [f"root is {root.tag}, not AuditMessage"]
    tags = [child.tag for child in root]
    # A.5.1: EventIdentification, ActiveParticipant+, AuditSourceIdentification, ParticipantObjectIdentification*
    if not re.fullmatch(r"E(A)+S(P)*", "".join({"EventIdentification": "E", "ActiveParticipant": "A", "AuditSourceIdentification": "S", "ParticipantObjectIdentification": "P"}.get(t, "?") for t in tags)):
        out.append(f"AuditMessage children out of order or unknown: {tags}")
    for ev in root.findall("EventIdentification"):
        if ev.get("EventActionCode") not in ACTIONS:
            out.append(f"EventActionCode {ev.get('EventActionCode')!r}")
        if not _datetime(ev.get("EventDateTime", "")):
            out.append(f"EventDateTime {ev.get('EventDateTime')!r} is not an xs:dateTime")
        if ev.get("EventOutcomeIndicator") not in OUTCOMES:
            out.append(f"EventOutcomeIndicator {ev.get('EventOutcomeIndicator')!r}")
        kids = [c.tag for c in ev]
        if not kids or kids[0] != "EventID" or kids.count("EventID") != 1:
            out.append(f"EventIdentification must start with one EventID: {kids}")
        for c in ev:
            if c.tag in ("EventID", "EventTypeCode", "PurposeOfUse"):
                _coded(c, f"EventIdentification/{c.tag}", out)
            elif c.tag != "EventOutcomeDescription":
                out.append(f"EventIdentification: unknown child {c.tag}")
    requestors = 0
    for ap in root.findall("ActiveParticipant"):
        if not ap.get("UserID"):
            out.append("ActiveParticipant without UserID")
        if ap.get("UserIsRequestor") not in ("true", "false"):
            out.append(f"UserIsRequestor {ap.get('UserIsRequestor')!r}")
        requestors += ap.get("UserIsRequestor") == "true"
        if ap.get("NetworkAccessPointID") and ap.get("NetworkAccessPointTypeCode") not in AP_TYPES:
            out.append("NetworkAccessPointID without a NetworkAccessPointTypeCode of 1-5")
        for c in ap:
            if c.tag in ("RoleIDCode", "MediaType"):
                _coded(c, f"ActiveParticipant/{c.tag}", out)
            else:
                out.append(f"ActiveParticipant: unknown child {c.tag}")
    if requestors < 1:
        out.append("no ActiveParticipant is the requestor")
    for src in root.findall("AuditSourceIdentification"):
        if not src.get("AuditSourceID"):
            out.append("AuditSourceIdentification without AuditSourceID")
        for c in src:
            if c.tag == "AuditSourceTypeCode":
                _coded(c, "AuditSourceTypeCode", out)
            else:
                out.append(f"AuditSourceIdentification: unknown child {c.tag}")
    for po in root.findall("ParticipantObjectIdentification"):
        if not po.get("ParticipantObjectID"):
            out.append("ParticipantObjectIdentification without ParticipantObjectID")
        if po.get("ParticipantObjectTypeCode") not in PO_TYPES:
            out.append(f"ParticipantObjectTypeCode {po.get('ParticipantObjectTypeCode')!r}")
        if po.get("ParticipantObjectTypeCodeRole") not in PO_ROLES:
            out.append(f"ParticipantObjectTypeCodeRole {po.get('ParticipantObjectTypeCodeRole')!r}")
        if po.get("ParticipantObjectDataLifeCycle") and po.get("ParticipantObjectDataLifeCycle") not in PO_LIFECYCLE:
            out.append("ParticipantObjectDataLifeCycle out of range")
        kids = [c.tag for c in po]
        if not kids or kids[0] != "ParticipantObjectIDTypeCode":
            out.append(f"ParticipantObjectIdentification must start with ParticipantObjectIDTypeCode: {kids}")
        if "ParticipantObjectName" in kids and "ParticipantObjectQuery" in kids:
            out.append("ParticipantObjectName and ParticipantObjectQuery are a choice")
        for c in po:
            if c.tag in ("ParticipantObjectIDTypeCode", "ParticipantObjectSensitivity"):
                _coded(c, f"ParticipantObjectIdentification/{c.tag}", out)
            elif c.tag == "ParticipantObjectQuery":
                if not _base64(c.text or ""):
                    out.append("ParticipantObjectQuery is not base64")
            elif c.tag == "ParticipantObjectDetail":
                if not c.get("type") or c.get("value") is None or not _base64(c.get("value")):
                    out.append("ParticipantObjectDetail needs type and a base64 value")
            elif c.tag not in ("ParticipantObjectName", "ParticipantObjectDescription", "SOPClass", "ParticipantObjectContainsStudy", "Encrypted", "Anonymized"):
                out.append(f"ParticipantObjectIdentification: unknown child {c.tag}")
    return out


def event_id(xml: str) -> tuple[str, str]:
    """(EventID csd-code, EventOutcomeIndicator) of a message."""
    ev = ET.fromstring(xml.encode("utf-8")).find("EventIdentification")
    return ev.find("EventID").get("csd-code"), ev.get("EventOutcomeIndicator")
