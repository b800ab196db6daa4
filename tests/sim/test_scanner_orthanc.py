"""The scanner simulator against Orthanc: its worklist plugin, storage and
Storage Commitment (Orthanc has no MPPS SCP, so MPPS is left out)."""

from __future__ import annotations

import json
import os
import subprocess

from simulators.scanner import ScannerOptions, ScannerSimulator
from tests.orthanc import ORTHANC, Orthanc, wait_for
from tests.sim.conftest import today, write_worklist_file
from tests.support import free_port, wait_port

WORKLIST_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"


def test_scanner_against_orthanc(tmp_path):
    wl = tmp_path / "worklists"
    wl.mkdir()
    write_worklist_file(wl / "a.wl", patient_id="OP1", name="Orthanc^Olga", accession="OACC1")
    write_worklist_file(wl / "b.wl", patient_id="OP2", name="Other^Station", accession="OACC2", station_ae="DXA9")
    o = Orthanc(None, tmp_path / "orthanc", free_port(), free_port())
    o.dir.mkdir()
    config = {
        "Name": "sim-test",
        "StorageDirectory": str(o.dir / "storage"),
        "IndexDirectory": str(o.dir / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": o.dicom_port,
        "HttpPort": o.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [WORKLIST_PLUGIN],
        "Worklists": {"Enable": True, "Database": str(wl)},
        # Orthanc sends the N-EVENT-REPORT on a new association to the modality
        "DicomModalities": {"dxa1": ["DXA1", "127.0.0.1", 0]},
    }
    commit_port = free_port()
    config["DicomModalities"]["dxa1"][2] = commit_port
    (o.dir / "orthanc.json").write_text(json.dumps(config))
    o.proc = subprocess.Popen([ORTHANC, str(o.dir / "orthanc.json")], stdout=open(o.dir / "log", "ab"), stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
    try:
        wait_port(o.dicom_port, 30)
        wait_port(o.http_port, 30)
        sim = ScannerSimulator(
            ScannerOptions(
                vendor="ge", gateway_port=o.dicom_port, called_ae="ORTHANC", ae_title="DXA1", no_mpps=True,
                commit_port=commit_port, seed=5, timeout=15, commit_timeout=15, date=today(), images=2,
            )
        )
        report = sim.run()
        assert [str(i.AccessionNumber) for i in sim.worklist] == ["OACC1"]  # only DXA1's step
        assert report.ok, report.to_text()
        stored = report.stats["objects"]
        assert stored == 4  # two images, a BMD SR, a dose SR
        assert wait_for(lambda: len(o.get("/instances")) == stored, 15)
        patient = o.get("/patients")
        assert len(patient) == 1 and o.get(f"/patients/{patient[0]}")["MainDicomTags"]["PatientID"] == "OP1"
        assert any(c.name.endswith("StgCmt N-EVENT-REPORT") and c.passed for c in report.checks)
    finally:
        o.stop()
