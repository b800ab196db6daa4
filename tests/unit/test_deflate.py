"""Bounded streaming inflation of Deflated Explicit VR LE datasets (gateway/dicom/deflate.py)."""

from __future__ import annotations

import zlib

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from gateway.dicom.deflate import InflateLimit, inflated_copy
from tests.dicom_data import secondary_capture


def deflated(tmp_path, pixels: int):
    path = tmp_path / "in.dcm"
    ds = secondary_capture(path, pixels=pixels)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = tmp_path / "deflated.dcm"
    ds.save_as(out, enforce_file_format=True)
    return ds, out


def test_inflated_copy_reads_like_the_original(tmp_path):
    """PS3.5 A.5: the dataset after the file meta is one raw deflate stream."""
    ds, path = deflated(tmp_path, 256 * 256)
    copy = inflated_copy(path, tmp_path, 10 * 1024 * 1024)
    back = dcmread(copy)
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PixelData == ds.PixelData


def test_past_the_limit_it_stops_and_leaves_nothing(tmp_path):
    _, path = deflated(tmp_path, 512 * 512)
    before = set(tmp_path.iterdir())
    with pytest.raises(InflateLimit) as exc:
        inflated_copy(path, tmp_path, 100 * 1024)
    assert exc.value.limit == 100 * 1024
    assert set(tmp_path.iterdir()) == before


def test_not_deflate_data_is_a_zlib_error(tmp_path):
    _, path = deflated(tmp_path, 64 * 64)
    data = bytearray(path.read_bytes())
    head = 144 + int.from_bytes(data[140:144], "little")
    data[head:] = b"\xff" * (len(data) - head)
    path.write_bytes(bytes(data))
    with pytest.raises(zlib.error):
        inflated_copy(path, tmp_path, 10 * 1024 * 1024)
