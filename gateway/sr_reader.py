"""Reading stored result objects (SRs, report images) in a worker process.

Parsing an SR's content tree is pure CPU in pydicom (10-15 ms for a GE
Lunar layout) and holds the GIL all that time; in the daemon's own process
it is taken from the threads that receive C-STOREs (bench/ingest, four
associations: 52 objects/s with the parse in-process, 83 without).  So one
worker process reads the SRs (the translation itself stays in mappings/),
and the exam thread waits for its answer.

A worker that dies, or takes longer than ``timeout``, is replaced; the SR is
then reported unparsed with that reason, so a hostile SR costs one exam, not
the daemon.  The worker's address space is capped (``RLIMIT_AS``,
``reports.reader_memory_limit_mb``): an object that needs more is kept
unparsed with that reason and the worker is replaced.  The worker exits when
the daemon is gone, even after kill -9: a thread in it watches the parent
pid (``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that
spawned the worker exits, and a replacement worker is spawned from whichever
thread found the old one broken).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from gateway.logs import fields

log = logging.getLogger("gateway.sr_reader")


@dataclass(frozen=True)
class SrReading:
    """What a BMD SR gave: the exam (``BmdExam.to_dict()``) or why not."""

    exam: dict | None
    unparsed: str | None
    study_date: str = ""
    no_results: bool = False  # the object carries no results (most images)
    replace_worker: bool = False  # the worker ran out of memory: start a fresh one


class ReaderFailed(Exception):
    """The worker died or ran out of time on this SR."""


# -- run in the worker process -----------------------------------------------------


def read_results(path: str) -> SrReading:
    """The results in one stored object (an SR or an image), read without its pixel data."""
    from pydicom import dcmread

    from mappings.bmd.collect import NoResults, UnparseableSr
    from mappings.bmd.extract import extract_bmd_exam

    try:
        ds = dcmread(path, stop_before_pixels=True)
    except MemoryError:
        return _out_of_memory()
    except Exception as exc:  # pydicom may raise anything on a broken file
        return SrReading(None, f"cannot read the SR: {type(exc).__name__}")
    study_date = str(ds.get("StudyDate", "") or "")
    try:
        exam = extract_bmd_exam(ds)
    except MemoryError:
        del ds
        return _out_of_memory()
    except NoResults as exc:
        return SrReading(None, str(exc.reason), study_date, no_results=True)
    except UnparseableSr as exc:
        return SrReading(None, str(exc.reason), study_date)
    except Exception as exc:
        return SrReading(None, f"cannot read the SR: {type(exc).__name__}", study_date)
    return SrReading(exam.to_dict(), None, study_date)


read_bmd_sr = read_results  # the name before report images were read too


def _out_of_memory() -> SrReading:
    limit = _MEMORY_LIMIT_MB
    return SrReading(None, f"the result reader ran over its memory limit ({limit} MB)", replace_worker=True)


_MEMORY_LIMIT_MB = 0


def _watch_parent(parent: int) -> None:
    """Exit as soon as the daemon that started this worker is gone (kill -9 included)."""
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.2)


def _init_worker(parent: int, memory_limit_mb: int) -> None:
    """Run first in each worker: the parent watch, then the memory limit."""
    global _MEMORY_LIMIT_MB
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if memory_limit_mb > 0:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _MEMORY_LIMIT_MB = memory_limit_mb


def read_dose_sr(path: str) -> dict | None:
    """The dose of an X-Ray Radiation Dose SR as ``BmdExam.to_dict()["dose"]``, or None."""
    from pydicom import dcmread

    from mappings.bmd.dose import dose_from_rdsr
    from mappings.bmd.models import BmdExam

    dose = dose_from_rdsr(dcmread(path))
    return None if dose is None else BmdExam("", dose=dose).to_dict()["dose"]


def _ready() -> int:
    import mappings.bmd.extract  # noqa: F401  (import the parsers before the first SR)

    return os.getpid()


# -- the daemon's side -------------------------------------------------------------


class SrReader:
    """One worker process, started on :meth:`start`, replaced when it fails."""

    def __init__(self, timeout: float = 60.0, memory_limit_mb: int = 0) -> None:
        self.timeout = timeout
        self.memory_limit_mb = memory_limit_mb
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the daemon has threads (and SQLite handles)
                # that a forked child must not inherit.
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=(os.getpid(), self.memory_limit_mb),
                )
            return self._pool

    def start(self) -> Future:
        """Start the worker now, so the first SR does not wait for it."""
        return self._executor().submit(_ready)

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        # ProcessPoolExecutor cannot stop a busy worker; kill it (3.11 has no API).
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def call(self, fn, path: str):
        pool = self._executor()
        try:
            result = pool.submit(fn, path).result(timeout=self.timeout)
        except FutureTimeout:
            log.error("sr_reader.timeout", extra=fields(seconds=self.timeout))
            self._replace(pool)
            raise ReaderFailed(f"reading the SR took longer than {self.timeout:g} s") from None
        except BrokenProcessPool:
            log.error("sr_reader.died")
            self._replace(pool)
            limit = f" (memory limit {self.memory_limit_mb} MB)" if self.memory_limit_mb else ""
            raise ReaderFailed(f"the SR reader process died{limit}") from None
        if getattr(result, "replace_worker", False):
            log.error("sr_reader.memory_limit", extra=fields(limit_mb=self.memory_limit_mb))
            self._replace(pool)
        return result

    def worker_pids(self) -> list[int]:
        """The worker's process id (for tests and health checks)."""
        pool = self._pool
        return [p.pid for p in getattr(pool, "_processes", {}).values()] if pool is not None else []

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
