"""Issue 11 (HL7, MLLP, metrics, event loop): probes against the real daemon."""

from __future__ import annotations

import sqlite3

import pydicom

from tests.hl7_messages import orm
from tests.support import MllpClient, ack_fields, findscu


def worklist_rows(daemon) -> int:
    db = sqlite3.connect(daemon.dir / "data" / "gateway.sqlite3")
    try:
        return db.execute("SELECT COUNT(*) FROM worklist_items").fetchone()[0]
    finally:
        db.close()


def served(daemon, tmp_path, patient_id: str) -> list:
    """The MWL responses for one patient ID, read back by dcmtk findscu."""
    keys = ["PatientName", f"PatientID={patient_id}", "ReferringPhysicianName", "RequestedProcedureDescription",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription"]
    rc, out, files = findscu(daemon.dicom_port, keys, out_dir=tmp_path / f"q-{patient_id}")
    assert rc == 0, out
    return [pydicom.dcmread(f) for f in files]


# -- 1. fields bounded to their VR -------------------------------------------------


def test_megabyte_patient_name_is_refused_and_never_served(daemon, tmp_path):
    """PS3.5 Table 6.2-1: PN is 64 characters per component group.

    README "Orders in": an identifying field over its VR is refused (AE,
    ERR-2 PID-5, ERR-3 102 data type error), nothing is stored.
    """
    before = worklist_rows(daemon)
    mllp = MllpClient(daemon.hl7_port, timeout=60)
    ack = ack_fields(mllp.send(orm("HB-1", patient_id="HB1", placer="HB1", filler="HB1", accession="HB1", name="A" * 1_000_000)))
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][2].startswith("PID^1^5")
    assert ack["ERR"][3].startswith("102^")
    assert worklist_rows(daemon) == before
    assert all(len(str(ds.PatientName)) <= 64 for ds in served(daemon, tmp_path, "HB1"))
    assert ack_fields(mllp.send(orm("HB-2", patient_id="HB1", placer="HB2", filler="HB2", accession="HB2")))["MSA"][1] == "AA"
    (ds,) = served(daemon, tmp_path, "HB1")
    assert str(ds.PatientName) == "Smith^Jane"
    mllp.close()
    assert "A" * 100 not in daemon.log_text()


def test_long_free_text_is_cut_to_its_vr(daemon, tmp_path):
    """README "Orders in": descriptions (LO 64) and physicians (PN 64) are cut."""
    msg = orm("HB-3", patient_id="HB3", placer="HB3", filler="HB3", accession="HB3")
    msg = msg.replace("DXAHS^DXA hip and spine^L", "DXAHS^" + "d" * 5000 + "^L").replace("D123^Referrer^Rita", "D123^" + "R" * 5000)
    mllp = MllpClient(daemon.hl7_port)
    assert ack_fields(mllp.send(msg))["MSA"][1] == "AA"
    mllp.close()
    (ds,) = served(daemon, tmp_path, "HB3")
    assert str(ds.RequestedProcedureDescription) == "d" * 64
    assert str(ds.ReferringPhysicianName) == "R" * 64
    assert str(ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription) == "d" * 64
