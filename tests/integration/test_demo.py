"""``dxa-sim demo`` runs a DXA day end to end and says so."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_a_dxa_day(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "simulators", "demo", "--patients", "3", "--data", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = {line.split("  ")[0].strip(): line for line in out.stdout.splitlines() if "  " in line}
    assert lines["orders sent / acknowledged"].split()[-3:] == ["3", "/", "3"]
    forwarded = lines["objects forwarded to the PACS"].split()
    stored = int(lines["objects stored by the gateway"].split()[-1])
    assert stored > 0 and int(forwarded[-4]) == stored
    reports = lines["reports delivered to the EMR"].split()
    assert int(reports[-4]) >= 3
    assert "result: ok" in out.stdout
    assert (tmp_path / "demo" / "data" / "gateway.sqlite3").exists()
