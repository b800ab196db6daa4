"""gateway.audit_atna: the forwarder's tail waits for a gap in the audit ids to fill."""

from __future__ import annotations

from pathlib import Path

import gateway.audit_atna as atna


def test_a_gap_in_the_audit_ids_is_waited_for_then_passed(tmp_path: Path, monkeypatch):
    """PostgreSQL assigns an id when a row is inserted, not when it commits: the row of a
    transaction still committing appears later with a lower id, so the tail (every audit
    row forwarded, IHE ATNA) stops at a gap until it fills or AUDIT_GAP_WAIT has passed."""
    clock = [100.0]
    monkeypatch.setattr(atna.time, "monotonic", lambda: clock[0])
    fwd = atna.AuditForwarder(None, tmp_path, None, source_id="DXAGW")
    rows = [{"id": i} for i in (6, 8, 9)]
    assert [r["id"] for r in fwd._contiguous(5, rows)] == [6]  # 7 may still commit
    clock[0] += atna.AUDIT_GAP_WAIT / 2
    assert fwd._contiguous(6, rows[1:]) == []
    assert [r["id"] for r in fwd._contiguous(6, [{"id": 7}, *rows[1:]])] == [7, 8, 9]  # it came
    assert [r["id"] for r in fwd._contiguous(9, [{"id": 11}])] == []
    clock[0] += atna.AUDIT_GAP_WAIT
    assert [r["id"] for r in fwd._contiguous(9, [{"id": 11}])] == [11]  # rolled back: passed
