"""The spool's incoming file: the sha256 it computes while writing is the
one a read-back gives, however pynetdicom splits the writes."""

from __future__ import annotations

import random
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from gateway.spool import IncomingFile, Spool, meta_length, sha256_of


def encoded_file(pixels: bytes) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = "SPOOL1"
    ds.PixelData = pixels
    ds["PixelData"].VR = "OB"
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 5000))
def test_digest_while_writing_equals_read_back(tmp_path_factory, seed: int, size: int) -> None:
    rng = random.Random(seed)
    data = encoded_file(rng.randbytes(size + size % 2))
    f = IncomingFile(tmp_path_factory.mktemp("incoming"))
    at = 0
    while at < len(data):  # splits anywhere, including inside the file meta
        n = rng.randint(1, 300)
        f.write(data[at : at + n])
        at += n
    assert f.digest_ready()
    assert f.size == len(data)
    assert f.sha256() == sha256_of(Path(f.name))
    f.close()
    assert Path(f.name).read_bytes() == data
    assert meta_length(data[:144]) < len(data)


def test_not_dicom_is_not_ready(tmp_path: Path) -> None:
    f = IncomingFile(tmp_path)
    f.write(b"\x00" * 128 + b"NOPE" + b"\x00" * 100)
    assert not f.digest_ready()  # keep() then reads the file back and refuses it
    f.close()
    with pytest.raises(ValueError):
        sha256_of(Path(f.name))


def test_cleaning_incoming_leaves_a_live_reception(tmp_path: Path) -> None:
    """README "Several replicas on PostgreSQL": replicas share the spool folder, so a
    replica starting removes the partial files of a crash but not a reception another
    replica is writing (it holds the file's lock until closed)."""
    spool = Spool(tmp_path, 0)
    live = spool.incoming_file()
    live.write(b"\0" * 200)
    left = spool.incoming_file()
    left.write(b"\0" * 10)
    left.close()  # as a crashed writer: no lock held any more
    assert spool.clean_incoming() == 1
    assert [p.name for p in spool.incoming.iterdir()] == [Path(live.name).name]
    live.close()
    assert spool.clean_incoming() == 1 and list(spool.incoming.iterdir()) == []
