"""gateway.store: the study exam of the result hand-off (schema 6) keeps the clinical
context and the release-time payloads of schema 5 (the h12-results / h14 seam)."""

from __future__ import annotations

from gateway.store import InstanceRecord
from gateway.store.exams import RenderedPayload
from gateway.store.migrations import MIGRATIONS


def _record(uid: str, kind: str = "sr") -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33", study_uid="1.2.3", series_uid="1.2.3.1",
        patient_id="P1", accession="A1", modality="SR", manufacturer="HOLOGIC", kind=kind, transfer_syntax="1.2.840.10008.1.2.1",
        size=10, sha256="0" * 64, path=f"x/{uid}.dcm", calling_ae="SCANNER",
    )  # fmt: skip


def test_settling_exam_keeps_the_radiographer_context_and_its_release_stores_the_payload(store):
    """docs/architecture.md rule 9 (what was signed is what is sent) with the settle window
    (reports.settle_seconds): a context given while the exam is settling is read
    back with it, and a release at the end of the window stores its rendered
    payload with its sha256 in the same commit as the version."""
    try:
        assert store.schema_version == len(MIGRATIONS)
        iid = store.add_instance(_record("1.2.3.9"), supersede=False, destinations=())
        assert store.pending_results() == [(iid, "sr")] and store.results_state(iid) == "pending"
        ident = dict(instance_id=iid, sop_instance_uid="1.2.3.9", study_uid="1.2.3", patient_id="P1", accession="A1")
        exam_id = store.save_study_exam(
            reading=(iid, "read", "", {"regions": []}), exam_id=None,
            values={**ident, "exam_date": "20261203", "state": "settling", "exam": {"regions": []}, "analysis": {}, "settle_until": "2026-01-01T00:00:00.000+00:00"},
        )  # fmt: skip
        assert store.results_state(iid) == "read" and store.pending_results() == []
        store.set_exam_context(exam_id, {"fragility_fracture": True}, actor="radiographer")
        [row] = store.settling_exams()
        assert row.id == exam_id and row.context == {"fragility_fracture": True} and row.settle_until
        assert store.study_exam("1.2.3").context == {"fragility_fracture": True}

        def render(report_id: int, released_at: str):
            yield RenderedPayload("emr", "hl7-oru", f"R{report_id}", b"MSH|^~\\&|DXAGW")

        values = {"state": "parsed", "exam": {"regions": []}, "analysis": {}, "report_status": "F", "report_text": "final", "settle_until": None}
        store.draft_exam(exam_id, values=values, release=("auto-release", ("emr",)), render=render)
        row = store.get_exam(exam_id)
        assert row.state == "parsed" and row.report_status == "F" and row.settle_until is None and row.context == {"fragility_fracture": True}
        [version] = store.list_reports(exam_id)
        payload = store.report_payload(version.id, "emr")
        assert payload is not None and payload.body == b"MSH|^~\\&|DXAGW" and len(payload.sha256) == 64
        assert store.settling_exams() == []
    finally:
        store.close()
