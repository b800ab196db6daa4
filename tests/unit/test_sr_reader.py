"""The SR reader process: a worker that dies or hangs costs one SR, not the daemon."""

from __future__ import annotations

import os
import time

import pytest

from gateway.sr_reader import ReaderFailed, SrReader, read_bmd_sr


def _die(path: str) -> None:
    os._exit(3)


def _hang(path: str) -> None:
    time.sleep(60)


def _pid(path: str) -> int:
    return os.getpid()


@pytest.fixture
def reader():
    r = SrReader(timeout=2.0)
    yield r
    r.close()


def test_a_dead_worker_is_replaced(reader: SrReader) -> None:
    first = reader.call(_pid, "")
    assert first != os.getpid()  # it is another process
    with pytest.raises(ReaderFailed, match="died"):
        reader.call(_die, "")
    second = reader.call(_pid, "")
    assert second not in (first, os.getpid())


def test_a_hung_worker_is_killed_and_replaced(reader: SrReader) -> None:
    first = reader.call(_pid, "")
    started = time.monotonic()
    with pytest.raises(ReaderFailed, match="longer than 2 s"):
        reader.call(_hang, "")
    assert time.monotonic() - started < 30
    assert reader.call(_pid, "") != first


def test_a_file_that_is_not_dicom_is_unparsed(reader: SrReader, tmp_path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    reading = reader.call(read_bmd_sr, str(bad))
    assert reading.exam is None
    assert reading.unparsed.startswith("cannot read the SR")


def test_an_object_over_the_memory_limit_is_unparsed_and_the_worker_replaced(tmp_path) -> None:
    """Issue 11 items 2 and 7: the reader's address space is capped (RLIMIT_AS); an
    object that needs more is kept unparsed with the reason, and a fresh worker reads
    the next one."""
    from mappings.bmd import samples
    from tests.unit.bmd.helpers import HOLOGIC, known_exam

    known = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC)
    big = samples.hologic_sr(known, text="<HologicHeader1>" + "x" * (200 * 1024 * 1024))
    path = tmp_path / "big.dcm"
    big.save_as(path, enforce_file_format=True)
    del big
    small = tmp_path / "small.dcm"
    samples.hologic_sr(known).save_as(small, enforce_file_format=True)
    reader = SrReader(timeout=60.0, memory_limit_mb=384)
    try:
        first = reader.call(_pid, "")
        reading = reader.call(read_bmd_sr, str(path))
        assert reading.exam is None and "memory limit (384 MB)" in reading.unparsed
        ok = reader.call(read_bmd_sr, str(small))
        assert ok.exam is not None and ok.exam["regions"]
        assert reader.call(_pid, "") != first  # replaced after running out of memory
    finally:
        reader.close()
