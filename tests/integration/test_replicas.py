"""Two gateway replicas on one PostgreSQL database and one spool folder.

Issue 17 ("Scale out on PostgreSQL"): an order in through one replica is in
the other's worklist; objects stored into both reach the PACS (Orthanc) once
each; a replica killed -9 mid-delivery leaves nothing stuck: its leases run
out (``storage.lease_seconds``) and the other replica delivers those rows.

Orthanc counts every object it receives, a duplicate too, with a Lua
``ReceivedInstanceFilter`` that logs each SOP Instance UID (Orthanc Book,
"Server-side scripting with Lua": it is called for every received instance,
before the "already stored" check); each receipt also takes 0.15 s there,
so a replica holds its lease long enough to be killed while holding it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.dicom_data import secondary_capture
from tests.hl7_messages import orm
from tests.orthanc import start_orthanc, wait_for
from tests.postgres import fresh_database
from tests.support import MllpClient, ack_fields, dcmtk, findscu, start_daemon, store_connection

ENV = dict(os.environ, TCP_NODELAY="1")
LEASE_SECONDS = 3.0  # short here; a replica's lease in production lasts minutes
RECEIPT_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  print("received " .. dicom.SOPInstanceUID)
  os.execute("sleep 0.15")
  return true
end
"""


class Pacs:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "receipts.lua").write_text(RECEIPT_LUA)
        self.orthanc = start_orthanc(folder / "orthanc", {"LuaScripts": [str(folder / "receipts.lua")]})

    def receipts(self) -> Counter[str]:
        """How many times each SOP Instance UID reached Orthanc (duplicates included)."""
        text = (self.orthanc.dir / "orthanc.log").read_text(errors="replace")
        return Counter(re.findall(r"Lua says: received (\S+)", text))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    p = Pacs(tmp_path_factory.mktemp("pacs"))
    yield p
    p.orthanc.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres_server, pacs):
    """Replicas A and B: the same database, spool folder, routes; their own ports and logs."""
    tmp = tmp_path_factory.mktemp("replicas")
    database = fresh_database(postgres_server)
    config = {
        "storage": {"path": str(tmp / "spool"), "database": database, "lease_seconds": LEASE_SECONDS, "min_free_bytes": 0},
        "destinations": {"pacs": {"type": "dicom", "host": "127.0.0.1", "port": pacs.orthanc.dicom_port, "ae_title": "ORTHANC", "concurrency": 1, "retry_base": 0.5, "retry_cap": 2}},
        "routes": [{"match": {"kind": ["image", "sr"]}, "to": ["pacs"]}],
    }
    a = start_daemon(tmp / "a", {**config, "storage": {**config["storage"], "replica_id": "replica-a"}})  # first: it runs the migrations
    b = start_daemon(tmp / "b", {**config, "storage": {**config["storage"], "replica_id": "replica-b"}})
    yield a, b
    for d in (a, b):
        d.stop()


def storescu(port: int, files: list[Path]) -> None:
    result = subprocess.run([dcmtk("storescu"), "-aet", "DXA1", "-aec", "DXAGW", "127.0.0.1", str(port), *map(str, files)], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr


def studies(tmp: Path, prefix: str, count: int, per_study: int) -> list[Path]:
    files = []
    for s in range(count):
        study = generate_uid()
        for i in range(per_study):
            f = tmp / f"{prefix}{s}-{i}.dcm"
            secondary_capture(f, study_uid=study, seed=s * 100 + i, pixels=64 * 64)
            files.append(f)
    return files


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def outbox_rows(daemon) -> list[tuple]:
    """(id, state, claimed_by, lease_until, delivered_at, SOP Instance UID) of every PACS row."""
    conn = store_connection(daemon)
    try:
        return conn.execute(
            "SELECT o.id, o.state, o.claimed_by, o.lease_until, o.delivered_at, i.sop_instance_uid FROM outbox o"
            " JOIN instances i ON o.ref_table = 'instances' AND i.id = o.ref_id WHERE o.destination = 'pacs' ORDER BY o.id"
        ).fetchall()
    finally:
        conn.close()


def delivered(daemon) -> set[int]:
    """Outbox row ids this replica logged as delivered (``outbox.delivered``)."""
    return {int(m) for m in re.findall(r'"event":"outbox.delivered".*?"outbox":(\d+)', daemon.log_text())}


def test_order_in_through_one_replica_is_in_the_other_ones_worklist(replicas, tmp_path):
    a, b = replicas
    mllp = MllpClient(a.hl7_port)
    try:
        assert ack_fields(mllp.send(orm("REP-1", placer="REPP", filler="REPF", accession="REPA", patient_id="REP-P1")))["MSA"][1] == "AA"
    finally:
        mllp.close()
    rc, out, files = findscu(b.dicom_port, ["AccessionNumber=REPA", "PatientID", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle"], out_dir=tmp_path / "q")
    assert rc == 0, out
    found = [pydicom.dcmread(f) for f in files]
    assert [(ds.AccessionNumber, ds.PatientID) for ds in found] == [("REPA", "REP-P1")]


def test_objects_stored_into_both_replicas_reach_the_pacs_once_each(replicas, pacs, tmp_path):
    a, b = replicas
    into_a, into_b = studies(tmp_path, "a", 2, 4), studies(tmp_path, "b", 2, 4)
    senders = [threading.Thread(target=storescu, args=(d.dicom_port, files)) for d, files in ((a, into_a), (b, into_b))]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    uids = {sop_uid(f) for f in into_a + into_b}
    assert wait_for(lambda: uids <= set(pacs.receipts()), 60), outbox_rows(a)
    assert wait_for(lambda: all(r[1] == "done" for r in outbox_rows(a) if r[5] in uids), 30), outbox_rows(a)
    received = pacs.receipts()
    assert {uid: received[uid] for uid in uids} == {uid: 1 for uid in uids}, "an object reached the PACS twice"
    ids = {r[0] for r in outbox_rows(a) if r[5] in uids}
    by_a, by_b = delivered(a) & ids, delivered(b) & ids
    assert not by_a & by_b, "both replicas delivered the same row"
    assert by_a | by_b == ids
    assert by_a and by_b, "one replica delivered everything: the outbox is not shared"


def test_replica_killed_mid_delivery_leaves_its_rows_to_the_other(replicas, pacs, tmp_path):
    """A's leased rows stay leased to A until the lease runs out, then B delivers them."""
    a, b = replicas
    files = studies(tmp_path, "k", 4, 5)
    storescu(a.dicom_port, files[:10])
    storescu(b.dicom_port, files[10:])
    uids = {sop_uid(f) for f in files}

    def a_holds_a_lease() -> bool:
        return any(r[1] == "in_flight" and r[2] == "replica-a" and r[5] in uids for r in outbox_rows(b))

    assert wait_for(a_holds_a_lease, 30, interval=0.01), outbox_rows(b)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(5)
    held = {r[0]: r for r in outbox_rows(b) if r[1] == "in_flight" and r[2] == "replica-a"}
    assert held, "the kill fell between two deliveries"

    assert wait_for(lambda: all(r[1] == "done" for r in outbox_rows(b) if r[5] in uids), LEASE_SECONDS + 60), outbox_rows(b)
    after = {r[0]: r for r in outbox_rows(b)}
    for row_id, (_, _, _, lease_until, _, _) in held.items():
        assert str(after[row_id][4]) >= str(lease_until), f"row {row_id} was taken over before A's lease ran out"
    assert set(held) <= delivered(b), "B did not deliver the rows A held"
    received = pacs.receipts()
    assert uids <= set(received), "an acknowledged object never reached the PACS"
    held_uids = {r[5] for r in held.values()}
    # Once each; only an object A was sending when it died may come twice (at least once: DICOM C-STORE is idempotent by SOP Instance UID).
    assert {uid: n for uid, n in received.items() if uid in uids and n > 1 and uid not in held_uids} == {}
    assert all(received[uid] <= 2 for uid in held_uids)
    assert len(pacs.orthanc.get("/instances")) == len(set(received))
