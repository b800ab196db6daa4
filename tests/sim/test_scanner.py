"""The scanner simulator against dcmtk wlmscpfs (worklist) and the PACS
simulator (MPPS, storage, commitment)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from pydicom import dcmread

from simulators import datasets
from simulators.pacs import PacsSimulator
from simulators.scanner import Endpoint, Exam, ScannerOptions, ScannerSimulator
from tests.sim.conftest import free_port


def _scanner(wlm, pacs, **kw) -> ScannerSimulator:
    ep = Endpoint("127.0.0.1", pacs.port, "PACS")
    opts = dict(gateway_port=wlm.port, called_ae=wlm.ae_title, ae_title="DXA1", mpps=ep, store=ep, seed=11, commit_timeout=10, timeout=10)
    opts.update(kw)
    return ScannerSimulator(ScannerOptions(**opts))


def test_scheduled_exams_end_to_end(wlmscpfs, pacs):
    sim = _scanner(wlmscpfs, pacs, vendor="hologic")
    rep = sim.run()
    assert rep.ok, rep.to_text()
    # only today's items for DXA1: not DXA2's, not yesterday's
    assert sorted(i.AccessionNumber for i in sim.worklist) == ["ACC001", "ACC002"]
    assert {str(i.PatientName) for i in sim.worklist} == {"Müller^Anna", "Ærø^Søs"}
    for step in ("MPPS N-CREATE IN PROGRESS", "StgCmt N-ACTION", "StgCmt N-EVENT-REPORT", "MPPS N-SET COMPLETED"):
        assert len([c for c in rep.checks if c.name.endswith(step)]) == 2, step
    assert len([c for c in rep.checks if " C-STORE " in c.name]) == 8
    assert pacs.wait_for(instances=8, commitments=2, mpps_completed=2, timeout=10)
    prep = pacs.report()
    assert prep.ok, prep.to_text()
    # MPPS links the scheduled step
    by_acc = {d.ScheduledStepAttributesSequence[0].AccessionNumber: d for d in pacs.mpps.values()}
    assert set(by_acc) == {"ACC001", "ACC002"}
    wl = {i.AccessionNumber: i for i in wlmscpfs.items}
    for acc, mpps in by_acc.items():
        ssa = mpps.ScheduledStepAttributesSequence[0]
        assert ssa.StudyInstanceUID == wl[acc].StudyInstanceUID
        assert ssa.RequestedProcedureID == "RP" + acc and ssa.ScheduledProcedureStepID == "SPS" + acc
        assert mpps.PerformedProcedureStepStatus == "COMPLETED"
        refs = [r.ReferencedSOPInstanceUID for s in mpps.PerformedSeriesSequence for r in list(s.ReferencedImageSequence) + list(s.ReferencedNonImageCompositeSOPInstanceSequence)]
        assert len(refs) == 4 and all(r in pacs.instances for r in refs)
    # stored objects: 2 RGB report images of realistic size, a BMD SR, a dose SR
    classes = sorted(i["sop_class"] for i in pacs.instances.values())
    assert classes.count(datasets.SECONDARY_CAPTURE) == 4
    assert classes.count(datasets.XRAY_DOSE_SR) == 2
    for info in pacs.instances.values():
        ds = dcmread(info["path"])
        assert ds.StudyInstanceUID in {i.StudyInstanceUID for i in wlmscpfs.items}
        if info["sop_class"] == datasets.SECONDARY_CAPTURE:
            assert ds.PhotometricInterpretation == "RGB" and ds.BitsAllocated == 8
            assert 200_000 <= len(ds.PixelData) <= 2_000_000
            assert ds.pixel_array.std() > 10  # real content, not a flat page


def test_commitment_on_a_new_association_with_concurrency(wlmscpfs, tmp_path):
    commit_port = free_port()
    pacs = PacsSimulator(port=0, folder=str(tmp_path / "p"), commit_mode="new", commit_peers={"DXA1": ("127.0.0.1", commit_port)}).start()
    try:
        sim = _scanner(wlmscpfs, pacs, vendor="ge", commit_port=commit_port, patients=5, unscheduled=True, concurrency=3, rate=50, images=1)
        rep = sim.run()
        assert rep.ok, rep.to_text()
        reports = [c for c in rep.checks if c.name.endswith("StgCmt N-EVENT-REPORT")]
        assert len(reports) == 5 and all("new association" in c.detail for c in reports)
        assert rep.stats["exams"] == 5 and rep.stats["worklist_items"] == 2
        # 2 scheduled + 3 made-up: the made-up ones have no accession
        accs = sorted(d.ScheduledStepAttributesSequence[0].AccessionNumber for d in pacs.mpps.values())
        assert accs == ["", "", "", "ACC001", "ACC002"]
    finally:
        pacs.stop()


def test_store_failure_is_reported(wlmscpfs, tmp_path):
    pacs = PacsSimulator(port=0, folder=str(tmp_path / "p"), store_status=0xA700).start()
    try:
        rep = _scanner(wlmscpfs, pacs, patients=1).run()
    finally:
        pacs.stop()
    assert not rep.ok
    failed = [c.name for c in rep.failed]
    assert any("C-STORE image 1" in n for n in failed)
    assert any("0xA700" in c.detail for c in rep.failed)
    assert not any("N-EVENT-REPORT" in c.name for c in rep.checks)  # no commitment after a failed store


def test_no_worklist_hits(wlmscpfs, pacs):
    rep = _scanner(wlmscpfs, pacs, ae_title="NOSUCH").run()
    assert not rep.ok and rep.failed[0].name == "exams to perform"
    rep = _scanner(wlmscpfs, pacs, ae_title="NOSUCH", unscheduled=True, no_mpps=True, images=1).run()
    assert rep.ok, rep.to_text()
    assert rep.stats["exams"] == 1 and not pacs.mpps


def test_objects_are_deterministic_with_the_seed():
    def build(seed):
        sim = ScannerSimulator(ScannerOptions(seed=seed, unscheduled=True))
        exam = sim.plan_exams([])[0]
        return sim.build_objects(exam)

    a, b, c = build(5), build(5), build(6)
    assert [o.SOPInstanceUID for o in a] == [o.SOPInstanceUID for o in b]
    assert a[0].PixelData == b[0].PixelData and a[0].PixelData != c[0].PixelData
    img = datasets.build_report_image("ge", a[0], random.Random(1))
    assert img.Rows * img.Columns * 3 == len(img.PixelData)


def test_mpps_datasets_follow_ps3_4_f7():
    sim = ScannerSimulator(ScannerOptions(seed=1, unscheduled=True, images=1))
    exam: Exam = sim.plan_exams([])[0]
    exam.mpps_uid = "1.2.3"
    create = sim.mpps_create_dataset(exam, "20261124", "100000")
    assert create.PerformedProcedureStepStatus == "IN PROGRESS" and create.Modality == "BMD"
    assert create.ScheduledStepAttributesSequence[0].StudyInstanceUID == exam.header.StudyInstanceUID
    exam.objects = sim.build_objects(exam)
    done = sim.mpps_set_dataset(exam)
    assert done.PerformedProcedureStepStatus == "COMPLETED"
    n_refs = sum(len(s.ReferencedImageSequence) + len(s.ReferencedNonImageCompositeSOPInstanceSequence) for s in done.PerformedSeriesSequence)
    assert n_refs == len(exam.objects) == 3


def test_cli(wlmscpfs, pacs, tmp_path):
    out = tmp_path / "scanner.json"
    cmd = [
        sys.executable, "-m", "simulators", "scanner", "--vendor", "ge",
        "--gateway-port", str(wlmscpfs.port), "--called-ae", "DXAGW", "--ae-title", "DXA1",
        "--mpps", f"PACS@127.0.0.1:{pacs.port}", "--store", f"PACS@127.0.0.1:{pacs.port}",
        "--seed", "3", "--images", "1", "--commit-timeout", "10", "--report", str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(out.read_text())
    assert data["ok"] and data["stats"]["exams"] == 2 and data["stats"]["seed"] == 3
    # a gateway that is not there: exit 1 with a failed association check
    run = subprocess.run(cmd[:7] + [str(free_port())] + cmd[8:-2], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "MWL association" in run.stdout


def test_undeclared_character_set_is_flagged(wlmscpfs_no_charset, pacs):
    # dcmtk wlmscpfs -cs0 (its default) sends UTF-8 names without (0008,0005)
    rep = _scanner(wlmscpfs_no_charset, pacs, no_mpps=True, no_commit=True, images=1).run()
    items = [c for c in rep.checks if c.name.startswith("MWL item")]
    assert len(items) == 2 and not any(c.passed for c in items)
    assert all("Specific Character Set" in c.detail for c in items)


def test_results_in_report_images_only():
    """--results images: no BMD SR, one report image per scan carrying the results
    (Hologic: (0019,1000) under HOLOGIC; GE: Image Comments XML), as a Hologic
    without the licensed SR option sends them (issue 12 item 3)."""
    from mappings.bmd.extract import extract_bmd_exam

    for vendor, modality in (("hologic", "BD"), ("ge", "OT")):
        sim = ScannerSimulator(ScannerOptions(vendor=vendor, seed=3, unscheduled=True, results="images", modality=modality))
        exam = sim.plan_exams([])[0]
        objs = sim.build_objects(exam)
        images = [o for o in objs if o.SOPClassUID == datasets.SECONDARY_CAPTURE]
        assert len(images) >= 2 and not [o for o in objs if o.SOPClassUID == datasets.ENHANCED_SR]
        assert {o.StudyInstanceUID for o in objs} == {exam.header.StudyInstanceUID}
        assert all(o.Rows * o.Columns * 3 == len(o.PixelData) for o in images)
        if vendor == "hologic":
            assert {o.Modality for o in images} == {"BD"}
        assert all(extract_bmd_exam(o).regions for o in images)
    both = ScannerSimulator(ScannerOptions(seed=3, unscheduled=True, results="both"))
    objs = both.build_objects(both.plan_exams([])[0])
    assert [o for o in objs if o.SOPClassUID == datasets.ENHANCED_SR]
