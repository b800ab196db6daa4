"""Group commit: concurrent writers share commits, and one failure stays its own."""

from __future__ import annotations

import threading

import pytest

from gateway.store import InstanceRecord
from gateway.store.sqlite import SqliteStore


def record(i: int) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=f"1.2.3.{i}", sop_class_uid="1.2.840.10008.5.1.4.1.1.7", study_uid="1.2.3", series_uid="1.2.3.0",
        patient_id="P1", accession="A1", modality="OT", manufacturer="", kind="image",
        transfer_syntax="1.2.840.10008.1.2.1", size=10, sha256="0" * 64, path=f"x/{i}.dcm", calling_ae="SCANNER",
    )


def test_concurrent_instances_all_committed_and_durable(tmp_path) -> None:
    store = SqliteStore(tmp_path / "g.sqlite3")
    ids: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def add(i: int) -> None:
        start.wait()
        try:
            ids.append(store.add_instance(record(i), supersede=False, destinations=("pacs",)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(set(ids)) == 16
    store.close()
    again = SqliteStore(tmp_path / "g.sqlite3")  # what a restart sees
    assert again.instance_totals() == (16, 160)
    assert len(again._query("SELECT id FROM outbox WHERE ref_table = 'instances'")) == 16
    again.close()


def test_a_failing_work_rolls_back_alone(tmp_path) -> None:
    store = SqliteStore(tmp_path / "g.sqlite3")
    results: dict[str, object] = {}
    start = threading.Barrier(3)

    def good(name: str, i: int) -> None:
        start.wait()
        results[name] = store.add_instance(record(i), supersede=False, destinations=())

    def bad() -> None:
        def work(conn):
            conn.execute("UPDATE instances SET size = 999")
            raise ValueError("refused on purpose")

        start.wait()
        try:
            store._grouped(work)
        except ValueError as exc:
            results["bad"] = exc

    threads = [threading.Thread(target=good, args=("a", 1)), threading.Thread(target=bad), threading.Thread(target=good, args=("b", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(results["bad"], ValueError)
    assert isinstance(results["a"], int) and isinstance(results["b"], int)
    assert store.instance_totals() == (2, 20)  # the failed work's change is not there
    with pytest.raises(ValueError):
        store._grouped(lambda conn: (_ for _ in ()).throw(ValueError("alone")))
    store.close()
