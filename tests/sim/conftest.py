"""Fixtures for the simulator tests: free ports, dcmtk wlmscpfs with
worklist files, the PACS and EMR simulators, a tiny MLLP ACK server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hl7v2 import ack
from hl7v2.er7 import msh_field
from hl7v2.mllp import MllpReceiver
from simulators.pacs import PacsSimulator
from tests.support import dcmtk, free_port, wait_port  # noqa: F401 (fixtures' helpers)

def dcmtk_env() -> dict:
    return dict(os.environ, TCP_NODELAY="1")


def today() -> str:
    return time.strftime("%Y%m%d")


def write_worklist_file(path: Path, *, patient_id: str, name: str, accession: str, station_ae: str = "DXA1", date: str | None = None, modality: str = "BMD") -> Dataset:
    """A .wl file wlmscpfs accepts as complete (its DatasetIsComplete)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19500312"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.RequestedProcedureID = "RP" + accession
    ds.RequestedProcedureDescription = "DXA hip and spine"
    ds.StudyInstanceUID = generate_uid()
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.ReferencedStudySequence = Sequence()
    ds.ReferencedPatientSequence = Sequence()
    sps = Dataset()
    sps.ScheduledStationAETitle = station_ae
    sps.ScheduledProcedureStepStartDate = date or today()
    sps.ScheduledProcedureStepStartTime = "093000"
    sps.Modality = modality
    sps.ScheduledProcedureStepID = "SPS" + accession
    sps.ScheduledProcedureStepDescription = "DXA hip and spine"
    sps.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return ds


class Wlm:
    def __init__(self, port: int, ae_title: str, folder: Path, items: list[Dataset]) -> None:
        self.port = port
        self.ae_title = ae_title
        self.folder = folder
        self.items = items


@pytest.fixture
def wlmscpfs(tmp_path):
    """dcmtk wlmscpfs on a free port serving four items (two for DXA1 today),
    returning the files' character set (-csk)."""
    yield from _wlmscpfs(tmp_path, ["-csk"])


@pytest.fixture
def wlmscpfs_no_charset(tmp_path):
    """wlmscpfs with its default -cs0: UTF-8 names, no Specific Character Set."""
    yield from _wlmscpfs(tmp_path, [])


def _wlmscpfs(tmp_path, extra):
    exe = dcmtk("wlmscpfs")
    ae_dir = tmp_path / "wl" / "DXAGW"
    ae_dir.mkdir(parents=True)
    (ae_dir / "lockfile").touch()
    items = [
        write_worklist_file(ae_dir / "a.wl", patient_id="P001", name="Müller^Anna", accession="ACC001"),
        write_worklist_file(ae_dir / "b.wl", patient_id="P002", name="Ærø^Søs", accession="ACC002"),
        write_worklist_file(ae_dir / "c.wl", patient_id="P003", name="Other^Station", accession="ACC003", station_ae="DXA2"),
        write_worklist_file(ae_dir / "d.wl", patient_id="P004", name="Yesterday^Yan", accession="ACC004", date="20000101"),
    ]
    port = free_port()
    log = open(tmp_path / "wlmscpfs.log", "wb")
    proc = subprocess.Popen([exe, *extra, "-dfp", str(tmp_path / "wl"), str(port)], stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env())
    try:
        wait_port(port)
        yield Wlm(port, "DXAGW", ae_dir, items)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def pacs(tmp_path):
    sim = PacsSimulator(port=0, folder=str(tmp_path / "pacs")).start()
    yield sim
    sim.stop()


class AckServer:
    """A tiny MLLP server: one thread per connection, many messages each.

    ``answer(message_text, msh_10) -> (code, msa2)`` decides each ACK; the
    default echoes MSH-10 with AA.
    """

    def __init__(self, answer=None) -> None:
        self.answer = answer or (lambda text, cid: ("AA", cid))
        self.messages: list[str] = []
        self._receiver = MllpReceiver(self._ack, backlog=8, timeout=10)
        self.port = self._receiver.port

    @property
    def connections(self) -> int:
        return self._receiver.connections

    def _ack(self, raw: bytes) -> bytes:
        text = raw.decode("latin-1" if msh_field(raw, 18) == "8859/1" else "utf-8")
        self.messages.append(text)
        code, msa2 = self.answer(text, msh_field(raw, 10))
        return ack.answer(raw, code, control_id=f"ACK{len(self.messages)}", timestamp="20260101000000", acked_id=msa2)

    def close(self) -> None:
        self._receiver.close()


@pytest.fixture
def ack_server():
    servers = []

    def make(answer=None) -> AckServer:
        s = AckServer(answer)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def have(tool: str) -> bool:
    return shutil.which(str(DCMTK / tool)) is not None
