"""``dxa-sim scanner --ihe-keys``: the IHE RAD-5 return-key set against the real gateway (issue 12)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from simulators.scanner import ScannerOptions, ScannerSimulator
from tests.hl7_messages import orm
from tests.support import MllpClient, ack_fields, start_daemon


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    d = start_daemon(tmp_path_factory.mktemp("gw-ihe"), {"dicom": {"ae_title": "DXAGW"}})
    today = time.strftime("%Y%m%d")
    mllp = MllpClient(d.hl7_port)
    for n, (acc, station) in enumerate((("IHE-A1", "IHEDXA"), ("IHE-A2", "IHEDXA"), ("IHE-A3", "OTHER"))):
        ack = mllp.send(orm(f"IHE-S{n}", placer=f"IHEP{n}", filler=f"IHEF{n}", accession=acc, patient_id=f"IHEP{n}", station=station, start=today + "0930%02d" % n))
        assert ack_fields(ack)["MSA"][1] == "AA", ack
    mllp.close()
    yield d
    d.stop()


def test_ihe_key_query_finds_the_stations_steps_with_every_key(gateway):
    """IHE RAD TF-2 4.5 (RAD-5): nested code sequences asked with empty items still match (PS3.4 C.2.2.2.6)."""
    sim = ScannerSimulator(ScannerOptions(gateway_port=gateway.dicom_port, ae_title="IHEDXA", ihe_keys=True, no_mpps=True, timeout=10))
    items = sim.query_worklist()
    report = sim.report()
    assert report.ok, report.to_text()
    assert sorted(i.AccessionNumber for i in items) == ["IHE-A1", "IHE-A2"]
    query = sim.ihe_worklist_query()
    assert "ScheduledProtocolCodeSequence" in query.ScheduledProcedureStepSequence[0]
    for item in items:
        sps = item.ScheduledProcedureStepSequence[0]
        assert "ScheduledProtocolCodeSequence" in sps and "RequestedContrastAgent" in sps
        assert "Allergies" in item and "PregnancyStatus" in item and "ReferencedStudySequence" in item
    # without the option the plain query sees the same steps
    plain = ScannerSimulator(ScannerOptions(gateway_port=gateway.dicom_port, ae_title="IHEDXA", no_mpps=True, timeout=10)).query_worklist()
    assert sorted(i.AccessionNumber for i in plain) == ["IHE-A1", "IHE-A2"]


def test_cli_ihe_keys_runs_the_whole_workflow(gateway, tmp_path):
    out = tmp_path / "scanner.json"
    cmd = [
        sys.executable, "-m", "simulators", "scanner", "--ihe-keys", "--gateway-port", str(gateway.dicom_port),
        "--called-ae", "DXAGW", "--ae-title", "IHEDXA", "--images", "1", "--seed", "5", "--no-commit", "--report", str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(out.read_text())
    assert data["ok"] and data["stats"]["worklist_items"] == 2 and data["stats"]["exams"] == 2
