"""IHE Scheduled Workflow queries against the real daemon with dcmtk findscu.

A scanner configured for IHE asks for the nested code sequences with empty
(universal) keys (PS3.4 C.2.2.2.6, K.6.1.2); it must see the steps, with
every Patient Medical attribute the order carried.
"""

from __future__ import annotations

import datetime as dt

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.hl7_messages import orm, segment
from tests.integration.test_orders_worklist import api
from tests.support import MllpClient, ack_fields, findscu, have_dcmtk

pytestmark = pytest.mark.skipif(not have_dcmtk(), reason="dcmtk findscu is not installed")

TODAY = dt.date.today().strftime("%Y%m%d")
SPS = "ScheduledProcedureStepSequence[0]."


def _find(daemon, tmp_path, keys: list[str]) -> list[Dataset]:
    out = tmp_path / f"q{len(list(tmp_path.glob('q*')))}"
    rc, text, files = findscu(daemon.dicom_port, keys, out_dir=out)
    assert rc == 0, text
    return [pydicom.dcmread(f) for f in files]


def _posted_item() -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "IHE1", "Nakamura^Yuki", "19551010", "F"
    ds.AccessionNumber, ds.RequestedProcedureID = "IHEACC1", "IHERP1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1201"
    ds.MedicalAlerts = ["Pacemaker", "Hip prosthesis left"]
    ds.Allergies = ["Iodine"]
    ds.PregnancyStatus = 4
    ds.PatientSize, ds.PatientWeight = "1.58", "49.5"
    ds.SpecialNeeds, ds.PatientState = "Wheelchair", "Fasting"
    ds.ConfidentialityConstraintOnPatientDataDescription = "Staff member"
    ds.RequestedProcedurePriority = "HIGH"
    ds.ReasonForTheRequestedProcedure = "Osteoporosis follow-up"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "77080", "C4", "DXA axial"
    ds.RequestedProcedureCodeSequence = [code]
    sps = Dataset()
    sps.ScheduledStationAETitle, sps.Modality = "IHEDXA", "BMD"
    sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime = TODAY, "101500"
    sps.ScheduledProcedureStepID, sps.ScheduledProcedureStepDescription = "IHESPS1", "Spine and both hips"
    sps.RequestedContrastAgent = "None"
    protocol = Dataset()
    protocol.CodeValue, protocol.CodingSchemeDesignator, protocol.CodeMeaning = "DXA-SH", "99DXAGW", "Spine and hip"
    sps.ScheduledProtocolCodeSequence = [protocol]
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


IHE_KEYS = [
    "AccessionNumber",
    "PatientID",
    SPS + "ScheduledProtocolCodeSequence[0].CodeValue",
    SPS + "ScheduledProtocolCodeSequence[0].CodingSchemeDesignator",
    SPS + "ScheduledProtocolCodeSequence[0].CodeMeaning",
    "RequestedProcedureCodeSequence[0].CodeValue",
    "RequestedProcedureCodeSequence[0].CodingSchemeDesignator",
    "RequestedProcedureCodeSequence[0].CodeMeaning",
    "ReferencedStudySequence[0].ReferencedSOPClassUID",
    "ReferencedPatientSequence[0].ReferencedSOPInstanceUID",
]


def test_an_hl7_order_is_found_by_a_query_with_empty_nested_sequence_keys(daemon, tmp_path):
    """The first-day failure of issue 12: the order matched AccessionNumber alone but not with the empty protocol code key."""
    mllp = MllpClient(daemon.hl7_port)
    ack = mllp.send(orm("IHE-1", placer="IHEP1", accession="IHEACC2", station="IHEDXA", start=TODAY + "090000"))
    mllp.close()
    assert ack_fields(ack)["MSA"][1] == "AA", ack
    (alone,) = _find(daemon, tmp_path, ["AccessionNumber=IHEACC2"])
    found = _find(daemon, tmp_path, ["AccessionNumber=IHEACC2"] + IHE_KEYS[1:])
    assert len(found) == 1
    rsp = found[0]
    assert rsp.AccessionNumber == alone.AccessionNumber == "IHEACC2"
    assert len(rsp.ScheduledProcedureStepSequence) == 1
    assert len(rsp.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence) == 0  # the order sent none
    assert rsp.RequestedProcedureCodeSequence[0].CodeValue == "DXAHS"
    assert len(rsp.ReferencedStudySequence) == 0


def test_a_posted_item_keeps_and_returns_its_patient_medical_attributes(daemon, tmp_path):
    """PS3.4 Table K.6-1: every attribute of the MWL IOD that arrives comes back when asked (issue 12 item 2)."""
    status, body, _ = api(daemon, "/api/worklist", "POST", _posted_item().to_json_dict(), {"Content-Type": "application/dicom+json"})
    assert status == 201, body
    status, row, _ = api(daemon, f"/api/worklist/{body['id']}")
    stored = Dataset.from_json(row["dataset"])
    assert stored.Allergies == "Iodine" and stored.RequestedProcedurePriority == "HIGH"
    assert list(stored.MedicalAlerts) == ["Pacemaker", "Hip prosthesis left"]
    assert stored.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue == "DXA-SH"
    asked = [
        "MedicalAlerts", "Allergies", "PregnancyStatus", "PatientSize", "PatientWeight", "SpecialNeeds", "PatientState",
        "ConfidentialityConstraintOnPatientDataDescription", "RequestedProcedurePriority", "ReasonForTheRequestedProcedure",
        SPS + "RequestedContrastAgent", SPS + "ScheduledStationAETitle=IHEDXA", SPS + f"ScheduledProcedureStepStartDate={TODAY}",
    ]
    (rsp,) = _find(daemon, tmp_path, ["PatientID=IHE1"] + [k for k in IHE_KEYS if k != "PatientID"] + asked)
    assert list(rsp.MedicalAlerts) == ["Pacemaker", "Hip prosthesis left"]
    assert rsp.Allergies == "Iodine" and rsp.PregnancyStatus == 4
    assert float(rsp.PatientSize) == 1.58 and float(rsp.PatientWeight) == 49.5
    assert (rsp.SpecialNeeds, rsp.PatientState) == ("Wheelchair", "Fasting")
    assert rsp.ConfidentialityConstraintOnPatientDataDescription == "Staff member"
    assert rsp.RequestedProcedurePriority == "HIGH"
    assert rsp.ReasonForTheRequestedProcedure == "Osteoporosis follow-up"
    sps = rsp.ScheduledProcedureStepSequence[0]
    assert sps.RequestedContrastAgent == "None"
    assert [(c.CodeValue, c.CodeMeaning) for c in sps.ScheduledProtocolCodeSequence] == [("DXA-SH", "Spine and hip")]
    assert rsp.RequestedProcedureCodeSequence[0].CodeValue == "77080"
    # a protocol key with a value matches on it (C.2.2.2.6)
    assert len(_find(daemon, tmp_path, ["PatientID=IHE1", SPS + "ScheduledProtocolCodeSequence[0].CodeValue=DXA-SH"])) == 1
    assert _find(daemon, tmp_path, ["PatientID=IHE1", SPS + "ScheduledProtocolCodeSequence[0].CodeValue=OTHER"]) == []


def test_a_priority_outside_its_enumerated_values_is_refused_naming_it(daemon):
    """PS3.3 C.4.11: Requested Procedure Priority is STAT, HIGH, ROUTINE, MEDIUM or LOW; nothing is stored otherwise."""
    ds = _posted_item()
    ds.PatientID, ds.RequestedProcedurePriority = "IHE9", "URGENT"
    status, body, _ = api(daemon, "/api/worklist", "POST", ds.to_json_dict(), {"Content-Type": "application/dicom+json"})
    assert status == 422 and body["attribute"] == "RequestedProcedurePriority", body
    assert api(daemon, "/api/worklist?patient=IHE9")[1] == []


def test_an_hl7_order_brings_allergies_measures_and_priority(daemon, tmp_path):
    """IHE RAD TF-2 (RAD-4): AL1-3, OBX height/weight, ORC-7.6 priority -> Allergies, Patient's Size/Weight, Requested Procedure Priority."""
    text = orm("IHE-2", placer="IHEP3", accession="IHEACC3", patient_id="IHE3", station="IHEDXA", start=TODAY + "110000")
    text = text.replace(f"|^^^{TODAY}110000|", f"|^^^{TODAY}110000^^S|", 1)
    segs = text.rstrip("\r").split("\r")
    segs.insert(3, segment("AL1", {1: "1", 2: "DA", 3: "^Bisphosphonate"}))
    segs += [
        segment("OBX", {1: "1", 2: "NM", 3: "^BODY HEIGHT", 5: "171", 6: "cm", 11: "F"}),
        segment("OBX", {1: "2", 2: "NM", 3: "^BODY WEIGHT", 5: "80", 6: "kg", 11: "F"}),
    ]
    mllp = MllpClient(daemon.hl7_port)
    ack = mllp.send("\r".join(segs) + "\r")
    mllp.close()
    assert ack_fields(ack)["MSA"][1] == "AA", ack
    (rsp,) = _find(daemon, tmp_path, ["PatientID=IHE3", "Allergies", "PatientSize", "PatientWeight", "RequestedProcedurePriority", "PregnancyStatus"])
    assert rsp.Allergies == "Bisphosphonate"
    assert (float(rsp.PatientSize), float(rsp.PatientWeight)) == (1.71, 80.0)
    assert rsp.RequestedProcedurePriority == "STAT"
    assert rsp.PregnancyStatus is None  # asked, not known: returned empty
