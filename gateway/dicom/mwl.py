"""Modality Worklist C-FIND SCP (PS3.4 Annex K).

The identifier is compiled once (mappings.mwl.MwlQuery): the store narrows
the candidates by its index filter; each is matched with the full PS3.4
C.2.2.2 rules and answered with the requested keys only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Iterator, TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from dicomext import association
from dicomext.identifiers import EncodedIdentifier
from dicomext.identifiers import encode as encode_identifier

from gateway.config import WorklistSettings
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.store import Store, WorklistRow
from mappings.mwl import MatchOptions, MwlQuery, QueryError
from mappings.worklist import item_to_dataset

log = logging.getLogger("gateway.mwl")

MWL_UID = str(ModalityWorklistInformationFind)
# PS3.4 Table K.4-1 / C.4.1.1.4 statuses
PENDING = 0xFF00
SUCCESS = 0x0000
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


def _failure(status: int, comment: str, tag: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    if tag is not None:
        ds.OffendingElement = [tag]
    return ds


V = TypeVar("V")


class _Lru(Generic[V]):
    """A bounded, thread-safe least-recently-used map (one per handler, shared by its threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> V:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


class WorklistFindHandler:
    #: station AE titles whose scanner failed QA (gateway/qa.py, qa.block_worklist_on_fail)
    blocked_stations: Callable[[], frozenset[str]] | None = None

    def __init__(self, store: Store, settings: WorklistSettings, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._datasets: _Lru[Dataset] = _Lru(DATASET_CACHE_SIZE)
        self._encoded: _Lru[bytes] = _Lru(ENCODED_CACHE_SIZE)

    def _dataset(self, row: WorklistRow) -> Dataset:
        """The item's MWL dataset, built once per content of the row.

        Scanners ask for the same day's steps again and again; building a
        pydicom dataset is most of a candidate's cost.  Candidates are only
        read (responses are new datasets), so sharing them is safe.  The key
        is the item itself (frozen, hashable), so an update in the same
        millisecond as a query cannot leave a stale entry.
        """
        key = (row.id, row.item)
        ds = self._datasets.get(key)
        if ds is None:
            ds = self._datasets.put(key, item_to_dataset(row.item))
        return ds

    def _response(self, row: WorklistRow, candidate: Dataset, query: MwlQuery, ts: UID) -> Dataset | EncodedIdentifier:
        """The response identifier for a match, encoded once per item content and query shape.

        A scanner asks the same question every few minutes; building and
        encoding the identifier with pydicom (~1 ms each on a small VM) was
        most of a station query.  The bytes are what pynetdicom's encode()
        would give (it made them), in the association's transfer syntax.
        """
        if ts.is_deflated:
            return query.response(candidate)
        key = (row.id, row.item, query.shape, str(ts))
        data = self._encoded.get(key)
        if data is None:
            response = query.response(candidate)
            data = encode_identifier(response, ts.is_implicit_VR, ts.is_little_endian, False)
            if data is None:  # pynetdicom logs it and answers 0xC312 for the Dataset
                return response
            self._encoded.put(key, data)
        return EncodedIdentifier(data)

    def _options(self, event: evt.Event) -> MatchOptions:
        info = event.assoc.requestor.sop_class_extended.get(MWL_UID) or b""
        return MatchOptions(
            case_insensitive_names=self.settings.case_insensitive_names or info[2:3] == b"\x01",
            combined_datetime=info[1:2] == b"\x01",
        )

    def handle(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        started = time.perf_counter()
        calling = event.assoc.requestor.ae_title.strip()
        result = "success"
        try:
            yield from self._find(event, calling)
        except _Refused as exc:
            result = exc.result
            yield exc.status, None
        finally:
            self.metrics.cfind.labels(result).inc()
            self.metrics.cfind_latency.observe(time.perf_counter() - started)

    def _find(self, event: evt.Event, calling: str):
        if str(event.request.AffectedSOPClassUID) != MWL_UID:
            raise _Refused("unsupported", _failure(IDENTIFIER_MISMATCH, "only Modality Worklist queries are served"))
        try:
            identifier = event.identifier
        except Exception:
            log.warning("mwl.undecodable_query", extra=fields(calling_ae=calling))
            raise _Refused("refused", _failure(UNABLE_TO_PROCESS, "the query identifier cannot be decoded"))
        try:
            query = MwlQuery.compile(
                identifier,
                self._options(event),
                fallback_charset=self.settings.fallback_character_set,
                allow_unknown=self.settings.unsupported_keys == "ignore",
            )
        except QueryError as exc:
            log.warning("mwl.query_refused", extra=fields(calling_ae=calling, tag=str(exc.tag), reason=exc.reason))
            raise _Refused("refused", _failure(IDENTIFIER_MISMATCH, exc.reason, exc.tag))
        limit = self.settings.max_results
        ts = UID(event.context.transfer_syntax)
        found: list[Dataset | EncodedIdentifier] = []
        blocked = self.blocked_stations() if self.blocked_stations is not None else frozenset()
        if calling in blocked:  # its scanner failed QA: no patients until a passing phantom scan
            log.warning("mwl.blocked_by_qa", extra=fields(calling_ae=calling))
            yield SUCCESS, None
            return
        for row in self.store.find_worklist(query.index_filter):
            if blocked and row.item.station_ae in blocked:
                continue
            candidate = self._dataset(row)
            if query.matches(candidate):
                found.append(self._response(row, candidate, query, ts))
                if len(found) > limit:
                    log.warning("mwl.too_many_matches", extra=fields(calling_ae=calling, limit=limit))
                    raise _Refused("too_many", _failure(OUT_OF_RESOURCES, f"more than {limit} matches: narrow the query"))
        self.metrics.cfind_matches.inc(len(found))
        log.info("mwl.query", extra=fields(calling_ae=calling, matches=len(found)))
        for n, identifier in enumerate(found):
            if n and n % CANCEL_CHECK_EVERY == 0:
                association.let_dul_read(event.assoc)  # so a C-CANCEL is read promptly
            if event.is_cancelled:
                # PS3.4 C.4.1.2.3: C-CANCEL ends the query with status Cancel.
                log.info("mwl.cancelled", extra=fields(calling_ae=calling))
                raise _Refused("cancelled", CANCEL)
            yield PENDING, identifier
        yield SUCCESS, None


CANCEL_CHECK_EVERY = 8
DATASET_CACHE_SIZE = 20000  # candidate datasets kept (a few days of a busy service)
ENCODED_CACHE_SIZE = 50000  # encoded responses kept (~0.5 KB each)


class _Refused(Exception):
    def __init__(self, result: str, status: int | Dataset) -> None:
        super().__init__(result)
        self.result = result
        self.status = status
