"""The PACS simulator receiving from dcmtk storescu, and its commitment."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

from simulators import datasets
from simulators.dicom_common import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
from simulators.uids import is_valid_uid, safe_name, uid_problem
from tests.sim.conftest import dcmtk, dcmtk_env, free_port, wait_port


def _header(pid="P9") -> Dataset:
    h = Dataset()
    h.PatientID = pid
    h.PatientName = "Müller^Anna"
    h.PatientBirthDate = "19500101"
    h.PatientSex = "F"
    h.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    h.AccessionNumber = "A9"
    h.StudyDate = "20261124"
    h.StudyTime = "101010"
    return h


def _files(tmp_path, n=2):
    rng = random.Random(1)
    objs = [datasets.build_report_image("hologic", _header(), rng, index=i) for i in range(n)]
    objs.append(datasets.build_bmd_sr("hologic", _header(), rng))
    paths = []
    for i, ds in enumerate(objs):
        p = tmp_path / f"o{i}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return objs, paths


def storescu(port, *paths, aec="PACS"):
    return subprocess.run(
        [dcmtk("storescu"), "-aec", aec, "-to", "10", "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True, text=True, timeout=60, env=dcmtk_env(),
    )


def test_uid_rules():
    assert is_valid_uid("1.2.840.10008.1.2")
    assert uid_problem("1.2.03") and uid_problem("1..2") and uid_problem("1.2.") and uid_problem("a.b")
    assert uid_problem("1." + "2" * 70)
    assert safe_name("1.2.3") == "1.2.3"
    assert "/" not in safe_name("../../etc/passwd") and safe_name("../x").startswith("x")


def test_receives_from_storescu(pacs, tmp_path):
    objs, paths = _files(tmp_path)
    run = storescu(pacs.port, *paths)
    assert run.returncode == 0, run.stderr
    assert pacs.wait_for(instances=3, timeout=10)
    rep = pacs.report()
    assert rep.ok, rep.to_text()
    assert len(rep.by_name("C-STORE")) == 3
    for ds in objs:
        stored = pacs.folder / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        back = dcmread(stored)
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        if "PixelData" in ds:
            assert back.PixelData == ds.PixelData
            assert back.PhotometricInterpretation == "RGB" and back.SamplesPerPixel == 3
    assert rep.stats["instances"] == 3 and rep.stats["bytes"] > 300_000


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(
    "breakage, expect",
    [
        (lambda ds: delattr(ds, "PatientID"), "PatientID missing"),
        (lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.03.4"), "SeriesInstanceUID"),
        (lambda ds: delattr(ds, "StudyInstanceUID"), "StudyInstanceUID missing"),
    ],
)
def test_bad_object_fails_its_check_and_is_not_kept(pacs, tmp_path, breakage, expect):
    objs, paths = _files(tmp_path, n=1)
    ds = dcmread(paths[0])
    breakage(ds)
    ds.save_as(paths[0], enforce_file_format=True)
    storescu(pacs.port, paths[0])
    deadline = time.monotonic() + 10
    while not pacs.report().checks and time.monotonic() < deadline:
        time.sleep(0.05)
    rep = pacs.report()
    assert not rep.ok
    assert expect in rep.failed[0].detail
    assert rep.stats["instances"] == 0
    assert not list(pacs.folder.rglob("*.dcm"))


def _commit(port, refs, handler_results, wait=10.0):
    got = threading.Event()

    def on_report(event):
        handler_results.append((event.request.EventTypeID, event.event_information))
        got.set()
        return 0x0000, None

    ae = AE(ae_title="SCU1")
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    req = Dataset()
    req.TransactionUID = "1.2.3.4.5.6"
    req.ReferencedSOPSequence = Sequence(refs)
    status, _ = assoc.send_n_action(req, 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
    arrived = got.wait(wait)
    assoc.release()
    return status.Status, arrived


def _ref(cls, uid):
    r = Dataset()
    r.ReferencedSOPClassUID = cls
    r.ReferencedSOPInstanceUID = uid
    return r


def test_storage_commitment_reports_stored_and_missing(pacs, tmp_path):
    objs, paths = _files(tmp_path, n=1)
    storescu(pacs.port, *paths)
    assert pacs.wait_for(instances=2, timeout=10)
    refs = [_ref(o.SOPClassUID, o.SOPInstanceUID) for o in objs]
    refs.append(_ref(objs[0].SOPClassUID, "1.2.3.999"))  # never sent
    refs.append(_ref(datasets.ENHANCED_SR, objs[0].SOPInstanceUID))  # wrong class
    results = []
    status, arrived = _commit(pacs.port, refs, results)
    assert status == 0x0000 and arrived
    event_type, info = results[0]
    assert event_type == 2  # some failed
    assert info.TransactionUID == "1.2.3.4.5.6"
    assert {r.ReferencedSOPInstanceUID for r in info.ReferencedSOPSequence} == {o.SOPInstanceUID for o in objs}
    reasons = {(r.ReferencedSOPInstanceUID, r.FailureReason) for r in info.FailedSOPSequence}
    assert reasons == {("1.2.3.999", 0x0112), (objs[0].SOPInstanceUID, 0x0119)}
    assert pacs.report().by_name("N-EVENT-REPORT")[0].passed


def test_cli_serves_until_sigterm_then_reports(tmp_path):
    port = free_port()
    out = tmp_path / "pacs.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "pacs", "--port", str(port), "--folder", str(tmp_path / "recv"), "--report", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_port(port)
        objs, paths = _files(tmp_path, n=1)
        ds = dcmread(paths[0])
        del ds.PatientID
        ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
        assert storescu(port, *paths).returncode == 0
        storescu(port, tmp_path / "bad.dcm")
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1, stdout + stderr
    data = json.loads(out.read_text())
    assert data["passed"] == 2 and data["failed"] == 1
    assert "PatientID missing" in stdout
