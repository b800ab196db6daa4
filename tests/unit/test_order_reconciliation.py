"""mappings.order_reconciliation: which stored steps a message changes, and what they keep."""

from __future__ import annotations

from mappings.hl7_orders import MergePatient, OrderKey, UpdatePatient
from mappings.order_reconciliation import kept_status, lookup_keys, patient_changes, patient_selection, reconcile_order
from mappings.worklist import COMPLETED, HELD, IN_PROGRESS, SCHEDULED, PatientDemographics, WorklistItem


def step(rp: str, sps: str, **kw) -> WorklistItem:
    return WorklistItem(patient_id="P1", accession_number="A1", requested_procedure_id=rp, sps_id=sps, **kw)


def test_a_change_finds_its_order_by_placer_then_filler_then_accession():
    """docs/hl7-interface.md 2 (ORM^O01 XO, CA, DC, SC name an existing order):
    the placer order number (ORC-2) is tried first, then the filler (ORC-3), then the accession."""
    assert lookup_keys(OrderKey(placer="PL1", filler="FI1", accession="A1")) == (("placer", "PL1"), ("filler", "FI1"), ("accession", "A1"))
    assert lookup_keys(OrderKey(accession="A1")) == (("accession", "A1"),)
    assert lookup_keys(OrderKey()) == ()


def test_xo_updates_the_same_step_and_keeps_its_study_uid_and_progress():
    """docs/hl7-interface.md 2: ORC-1 XO changes the steps of an order (one per OBR).
    A step is the same step by Requested Procedure ID and SPS ID; it keeps the Study
    Instance UID the scanner may have used and its progress (IN PROGRESS stays)."""
    stored = [(7, step("RP1", "S1", study_instance_uid="1.2.3", status=IN_PROGRESS))]
    change = [step("RP1", "S1", study_instance_uid="9.9.9", status=SCHEDULED, patient_name="NEW^NAME"), step("RP2", "S2")]
    writes = reconcile_order(stored, change)
    assert [w.row_id for w in writes] == [7, None]  # the second OBR is a new step
    assert writes[0].item.study_instance_uid == "1.2.3"
    assert writes[0].item.status == IN_PROGRESS
    assert writes[0].item.patient_name == "NEW^NAME"
    assert writes[1].item == change[1]


def test_a_scheduled_step_takes_the_change_status_and_a_released_hold_loses_its_reason():
    """README "Running a DXA service" (IR(ME)R): a HELD step takes the change's status
    (SCHEDULED once the referrer is entitled), and a step no longer HELD has no hold reason."""
    stored = [(3, step("RP1", "S1", status=HELD, hold_reason="referrer-unknown: R9"))]
    (write,) = reconcile_order(stored, [step("RP1", "S1", status=SCHEDULED, hold_reason="stale")])
    assert (write.row_id, write.item.status, write.item.hold_reason) == (3, SCHEDULED, "")


def test_kept_status_holds_again_only_for_another_unentitled_referrer():
    """README "Running a DXA service": a justified (released) step is not held again by a
    change from the same referrer; a change naming another referrer who is not entitled
    holds it again; a step under way keeps its progress."""
    released = step("RP1", "S1", status=SCHEDULED, referrer_id="R1")
    assert kept_status(released, step("RP1", "S1", status=HELD, referrer_id="R1")) == SCHEDULED
    assert kept_status(released, step("RP1", "S1", status=HELD, referrer_id="R2")) == HELD
    assert kept_status(step("RP1", "S1", status=COMPLETED), step("RP1", "S1", status=HELD, referrer_id="R2")) == COMPLETED
    assert kept_status(step("RP1", "S1", status=IN_PROGRESS), step("RP1", "S1", status=SCHEDULED)) == IN_PROGRESS


def test_adt_update_and_merge_select_the_patient_and_say_what_changes():
    """docs/hl7-interface.md 2: ADT^A08/A31 update the demographics (PID-5, -7, -8, -22)
    of the patient's open steps; ADT^A40 moves the prior patient's (MRG-1) open steps to
    PID-3, keeping the prior issuer when PID-3 names none."""
    demo = PatientDemographics(patient_id="P1", issuer_of_patient_id="HOSP", patient_name="DOE^JANE", sex=None)
    update = UpdatePatient(demo)
    assert patient_selection(update) == ("P1", "HOSP")
    assert patient_changes(update) == {"patient_name": "DOE^JANE"}  # a field not sent is not changed
    merge = MergePatient(patient_id="P2", issuer="", prior_patient_id="P1", prior_issuer="HOSP", demographics=PatientDemographics(patient_id="P2"))
    assert patient_selection(merge) == ("P1", "HOSP")
    assert patient_changes(merge) == {"patient_id": "P2", "issuer_of_patient_id": "HOSP"}
