"""The store contract on both databases (README "Several replicas on PostgreSQL"): the same calls give the same answers
on SQLite and on PostgreSQL; on PostgreSQL several replicas share the outbox."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest

from gateway.store import DuplicateInstance, InboundMessage, InstanceRecord, UnknownOrder
from gateway.store.migrations import MIGRATIONS
from mappings.hl7_orders import OrderKey, SetOrderStatus, UpsertOrder
from mappings.mpps import StepKeys
from mappings.worklist import IN_PROGRESS, SCHEDULED, WorklistItem


def _record(uid: str, study: str = "1.2.3", kind: str = "image") -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.7", study_uid=study, series_uid=study + ".1",
        patient_id="P1", accession="A1", modality="OT", manufacturer="HOLOGIC", kind=kind, transfer_syntax="1.2.840.10008.1.2.1",
        size=10, sha256="0" * 64, path=f"x/{uid}.dcm", calling_ae="SCANNER",
    )  # fmt: skip


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def _now(seconds: float = 0) -> str:
    return _iso(datetime.now(timezone.utc) + timedelta(seconds=seconds))


def _order(control: str, status: str = SCHEDULED, **kw) -> UpsertOrder:
    item = WorklistItem(patient_id="P1", accession_number="A1", placer_order_number="PL1", requested_procedure_id="RP1", sps_id="S1", status=status, **kw)
    return UpsertOrder(items=(item,), key=OrderKey(placer="PL1"), is_change=control == "XO")


def _message(message_id: str) -> InboundMessage:
    return InboundMessage(source="hl7", sender="RIS|HOSP", message_id=message_id, message_type="ORM^O01", raw=b"MSH|...")


def test_the_schema_has_every_migration(store):
    """gateway/store/migrations.py: both databases reach the same schema version."""
    assert store.schema_version == len(MIGRATIONS)


def test_the_postgresql_schema_has_the_sqlite_tables_and_columns(open_pg_store):
    """gateway/store/pg_migrations.py translates every SQLite migration: the same
    tables with the same columns."""
    pg = open_pg_store()
    lite = sqlite3.connect(":memory:")
    for script in MIGRATIONS:
        lite.executescript(script)
    tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    want = {t: [r[1] for r in lite.execute(f"PRAGMA table_info({t})")] for t in tables}
    got: dict[str, list[str]] = {}
    for table, column in pg._query(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name != 'schema_version'"
        " ORDER BY table_name, ordinal_position"
    ):
        got.setdefault(table, []).append(column)
    assert got == want


def test_an_order_is_created_changed_and_a_duplicate_changes_nothing(store):
    """docs/hl7-interface.md 2 and 3: ORC-1 NW creates, XO changes the step (which keeps
    its progress), a message seen before (MSH-10) is answered as before and changes
    nothing, and a change to an unknown order is refused with nothing written."""
    first = store.apply_inbound(_message("M1"), (_order("NW"),))
    assert not first.duplicate and len(first.item_ids) == 1
    (item_id,) = first.item_ids
    assert store.apply_inbound(_message("M1"), (_order("NW"),)).duplicate
    assert store.set_worklist_status(item_id, IN_PROGRESS, actor="test")
    changed = store.apply_inbound(_message("M2"), (_order("XO", patient_name="DOE^JANE"),))
    assert changed.item_ids == (item_id,)
    row = store.get_worklist_item(item_id)
    assert (row.item.status, row.item.patient_name) == (IN_PROGRESS, "DOE^JANE")
    with pytest.raises(UnknownOrder):
        store.apply_inbound(_message("M3"), (SetOrderStatus(OrderKey(placer="NOPE"), "CANCELLED", "CA"),))
    assert store.count_inbound() == 2 and store.raw_message("hl7", "RIS|HOSP", "M3") is None
    assert store.count_worklist_by_status()[IN_PROGRESS] == 1
    assert [a["event"] for a in store.list_audit(event="hl7.")] == ["hl7.ORM^O01", "hl7.ORM^O01"]


def test_mpps_moves_its_scheduled_step_and_queues_the_status(store):
    """PS3.4 F.7.2.1: N-CREATE (IN PROGRESS) of a step linked to its worklist item moves
    the item; a second N-CREATE of the same SOP Instance UID is refused (0x0111)."""
    (item_id,) = store.add_worklist_items([WorklistItem(patient_id="P1", accession_number="A9", requested_procedure_id="RP9", sps_id="S9", study_instance_uid="1.9")])
    keys = [StepKeys(study_uid="1.9", accession="A9", requested_procedure_id="RP9", sps_id="S9")]
    row = store.mpps_create("1.9.1", calling_ae="DXA1", status=IN_PROGRESS, attributes=b"{}", keys=keys, destinations={"order-status": ("ris",)})
    assert row.worklist_item_id == item_id and store.get_worklist_item(item_id).item.status == IN_PROGRESS
    with pytest.raises(DuplicateInstance):
        store.mpps_create("1.9.1", calling_ae="DXA1", status=IN_PROGRESS, attributes=b"{}", keys=keys, destinations={})
    store.mpps_update("1.9.1", lambda attrs: (attrs, "COMPLETED"), calling_ae="DXA1", destinations={})
    assert store.get_worklist_item(item_id).item.status == "COMPLETED"
    assert store.count_mpps_by_status() == {"COMPLETED": 1}
    assert [r.kind for r in store.list_outbox(destination="ris")] == ["order-status"]


def test_the_outbox_keeps_study_order_and_a_dead_letter_holds_nothing_back(store):
    """docs/architecture.md rule 2: per destination, a study's rows go in order (the next waits
    while an earlier one is pending or in flight); a dead letter does not block."""
    a1 = store.add_instance(_record("1.1", "S.A"), supersede=False, destinations=("pacs",))
    a2 = store.add_instance(_record("1.2", "S.A"), supersede=False, destinations=("pacs",))
    b1 = store.add_instance(_record("2.1", "S.B"), supersede=False, destinations=("pacs",))
    claimed = store.claim_outbox("pacs", _now(), limit=10)
    assert [r.ref_id for r in claimed] == [a1, b1]  # a2 waits for a1
    assert store.claim_outbox("pacs", _now(), limit=10) == []
    first = {r.ref_id: r.id for r in claimed}
    assert store.finish_outbox(first[a1], state="dead", error="refused")
    assert store.finish_outbox(first[b1], state="done")
    [next_row] = store.claim_outbox("pacs", _now(), limit=10)
    assert next_row.ref_id == a2
    assert store.finish_outbox(next_row.id, state="pending", error="busy", next_attempt_at=_now(60))
    assert store.claim_outbox("pacs", _now(), limit=10) == []  # not due yet
    assert store.delivered_to("instances", b1, ["pacs"]) and not store.delivered_to("instances", a1, ["pacs"])
    assert store.retry_outbox(row_id=first[a1]) == 1
    events = [a["event"] for a in store.list_audit()]
    assert "outbox.delivered" in events and "outbox.retry" in events


def test_resume_in_flight_after_a_restart(open_test_store):
    """docs/architecture.md rule 1: a row in flight when the process died is sent again.  One
    process (SQLite): every row in flight; a replica (PostgreSQL): the rows leased to
    its own replica id, at once, and no other replica's."""
    kw = {"replica_id": "gw-a"} if open_test_store.backend == "postgresql" else {}
    store = open_test_store(**kw)
    store.add_instance(_record("3.1", "S.C"), supersede=False, destinations=("pacs",))
    assert len(store.claim_outbox("pacs", _now())) == 1
    store.close()
    again = open_test_store(**kw)
    if open_test_store.backend == "postgresql":
        other = open_test_store(replica_id="gw-b")
        assert other.resume_in_flight() == 0  # not gw-b's lease
    assert again.resume_in_flight() == 1
    assert len(again.claim_outbox("pacs", _now())) == 1


def test_replicas_never_claim_the_same_row(open_pg_store):
    """README "Several replicas on PostgreSQL": N replicas on one database deliver the outbox with no double delivery:
    claims are FOR UPDATE SKIP LOCKED, and per-study order holds across replicas."""
    replicas = [open_pg_store(replica_id=f"gw-{n}") for n in range(3)]
    studies = 12
    for s in range(studies):
        for i in range(3):
            replicas[0].add_instance(_record(f"4.{s}.{i}", f"S.{s}"), supersede=False, destinations=("pacs",))
    taken: list[tuple[str, int, str]] = []  # (replica, ref id, study)
    lock = threading.Lock()

    def work(store) -> None:
        idle = 0
        while idle < 20:
            rows = store.claim_outbox("pacs", _now())
            if not rows:
                idle += 1
                continue
            idle = 0
            for row in rows:
                with lock:
                    taken.append((store.replica_id, row.ref_id, row.order_key))
                assert store.finish_outbox(row.id, state="done")

    threads = [threading.Thread(target=work, args=(r,)) for r in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    refs = [ref for _, ref, _ in taken]
    assert len(refs) == studies * 3 and len(set(refs)) == len(refs)  # each row once
    for s in range(studies):  # each study's rows in the order they were queued
        mine = [ref for _, ref, study in taken if study == f"S.{s}"]
        assert mine == sorted(mine)
    assert len({who for who, _, _ in taken}) > 1


def test_a_dead_replicas_lease_runs_out_and_another_replica_resumes(open_pg_store):
    """README "Several replicas on PostgreSQL": a replica killed mid-delivery leaves nothing stuck: its lease runs out
    and another replica claims the row; a live lease is never taken, and the first
    replica can no longer record the row (its lease is lost)."""
    a = open_pg_store(replica_id="gw-a", lease_seconds=30)
    b = open_pg_store(replica_id="gw-b", lease_seconds=30)
    a.add_instance(_record("5.1", "S.D"), supersede=False, destinations=("pacs",))
    a.add_instance(_record("5.2", "S.D"), supersede=False, destinations=("pacs",))
    start = datetime.now(timezone.utc)
    [row] = a.claim_outbox("pacs", _iso(start))
    assert b.claim_outbox("pacs", _iso(start + timedelta(seconds=29))) == []  # A's lease is live; 5.2 waits behind it
    assert b.resume_in_flight() == 0
    [again] = b.claim_outbox("pacs", _iso(start + timedelta(seconds=31)))  # as if A died: its lease ran out
    assert again.id == row.id
    assert not a.finish_outbox(row.id, state="done")  # A lost it
    assert not a.renew_outbox_lease(row.id)
    assert b.renew_outbox_lease(row.id)
    assert b.finish_outbox(row.id, state="done")
    [last] = b.claim_outbox("pacs", _now())
    assert last.ref_id != row.ref_id and b.finish_outbox(last.id, state="done")


def test_service_episodes_and_audit_read_the_same(store):
    """mappings.kpis episodes (README "Service KPIs") and the audit tail read alike on both."""
    store.add_worklist_items([WorklistItem(patient_id="P1", accession_number="A1", study_instance_uid="1.7", station_ae="DXA1\\DXA2", start_date="20261124",
                                           referred_at="2026-11-20T10:00:00+00:00")])  # fmt: skip
    store.add_instance(_record("7.1", "1.7"), supersede=False, destinations=())
    [episode] = store.service_episodes()
    assert episode.scanner == "SCANNER" and episode.scanned_at is not None and episode.station == "DXA1\\DXA2"
    assert episode.referred_at == datetime(2026, 11, 20, 10, tzinfo=timezone.utc)  # read out of the stored item's JSON
    tail = store.audit_since(0)
    assert [r["event"] for r in tail] == ["worklist.create", "instance.received"] and store.max_audit_id() == tail[-1]["id"]
    assert store.ping()


def test_work_under_a_name_is_one_replica_at_a_time(open_test_store):
    """gateway/exams.py reads a study's objects under ``exclusive("study:<uid>")``: while
    one replica (or thread) holds the name another waits; another name is free."""
    a = open_test_store()
    b = open_test_store() if open_test_store.backend == "postgresql" else a  # a second replica
    held, other = "study:1.2.3", "study:9.8.7"
    entered = threading.Event()

    def second() -> None:
        with b.exclusive(held):
            entered.set()

    with a.exclusive(held):
        t = threading.Thread(target=second)
        t.start()
        with b.exclusive(other):
            pass
        assert not entered.wait(0.3)
    assert entered.wait(10)
    t.join(10)
    if open_test_store.backend == "sqlite":
        assert a._named == {}  # no lock left behind per name
