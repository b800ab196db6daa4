"""C-STORE SCP into the durable spool (PS3.4 Annex B; docs/architecture.md rules 1, 5).

pynetdicom streams the dataset to a file under the spool's ``incoming/``
(``STORE_RECV_CHUNKED_DATASET``), so memory stays bounded whatever the size.
The handler reads the header only (no pixel data), makes the file durable,
commits the index row with its outbox rows, and only then answers success.
"""

from __future__ import annotations

import errno
import logging
import time
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom import evt

from dicomext import incoming

from gateway.config import DicomSettings
from gateway.logs import fields
from gateway.metrics import Metrics
from gateway.dicom.deflate import DEFLATED, InflateLimit, inflated_copy
from gateway.dicom.tolerance import note_defects
from gateway.spool import IncomingFile, Spool, meta_length
from gateway.store import InstanceRecord, Store
from mappings.instances import HEADER_KEYWORDS, HeaderError, read_header, refuse_file_meta_in_dataset, text_value
from routes.rules import Rule, RoutedObject, destinations_for

log = logging.getLogger("gateway.store_scp")

# PS3.4 Table B.2-1 C-STORE statuses
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"  # PS3.5 A.3 (retired)


def read_received_header(fp: BinaryIO, tags, *, big_endian: bool = False) -> Dataset:
    """The header tags of a received file (open, seekable); its dataset must not hold group 0002."""
    head = fp.read(144)
    fp.seek(meta_length(head))
    refuse_file_meta_in_dataset(fp.read(2), big_endian=big_endian)
    fp.seek(0)
    return dcmread(fp, stop_before_pixels=True, specific_tags=tags)


class StorageScp:
    #: Patient ID -> a QA phantom (gateway/qa.py): never routed
    is_phantom: Callable[[str], bool] = staticmethod(lambda patient_id: False)

    def __init__(
        self,
        settings: DicomSettings,
        spool: Spool,
        store: Store,
        rules: tuple[Rule, ...],
        metrics: Metrics,
        notify: Callable[[str, int], None],
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.store = store
        self.rules = rules
        self.metrics = metrics
        self.notify = notify
        self.policy = settings.storage.duplicate_policy
        # DICOM keywords that routes match on, read from each header.
        self.route_keywords = {kw for rule in rules for kw, _ in rule.keywords}
        self.header_tags = sorted(set(HEADER_KEYWORDS) | self.route_keywords)

    def _refuse(self, status: int, reason: str, calling: str, comment: str = "", **extra: object) -> int | Dataset:
        self.metrics.store_refusals.labels(f"0x{status:04X}").inc()
        log.warning("store.refused", extra=fields(status=f"0x{status:04X}", reason=reason, calling_ae=calling, **extra))
        if not comment:
            return status
        rsp = Dataset()
        rsp.Status = status
        rsp.ErrorComment = comment[:64]  # PS3.7 C.4.2: LO
        return rsp

    def _read(self, temp: Path, transfer_syntax: str) -> Dataset:
        """The header of the received dataset; a deflated one is inflated, bounded, first."""
        if transfer_syntax != DEFLATED:
            with open(temp, "rb") as fp:
                return read_received_header(fp, self.header_tags, big_endian=transfer_syntax == EXPLICIT_BIG_ENDIAN)
        # the deflated stream is checked once inflated (its first bytes are compressed)
        inflated = inflated_copy(temp, self.spool.incoming, self.settings.storage.max_inflated_bytes)
        try:
            with open(inflated, "rb") as fp:
                return read_received_header(fp, self.header_tags)
        finally:
            inflated.unlink(missing_ok=True)

    def _is_prior(self, study_uid: str, req) -> bool:
        """A study we asked a PACS for (recorded before the C-MOVE), or a
        sub-operation of a C-MOVE we sent (PS3.7 9.3.1.1 Move Originator AE)."""
        originator = str(getattr(req, "MoveOriginatorApplicationEntityTitle", "") or "").strip()
        if originator and originator == self.settings.ae_title:
            return True
        row = self.store.prior_study(study_uid)
        return row is not None and row.state != "mismatch"

    def handle(self, event: evt.Event) -> int:
        started = time.perf_counter()
        calling = event.assoc.requestor.ae_title.strip()
        req = event.request
        sop_class = str(req.AffectedSOPClassUID)
        sop_instance = str(req.AffectedSOPInstanceUID)
        if not self.spool.has_room():
            return self._refuse(OUT_OF_RESOURCES, "free space under storage.min_free_bytes", calling)
        temp = Path(event.dataset_path)
        try:
            ds = self._read(temp, str(event.context.transfer_syntax))
            header = read_header(ds, sop_class=sop_class, sop_instance=sop_instance)
        except InflateLimit as exc:
            # PS3.4 B.2.3: Refused, Out of Resources; the comment names the limit.
            return self._refuse(
                OUT_OF_RESOURCES, f"deflated dataset inflates past {exc.limit} bytes", calling,
                comment="inflates past dicom.storage.max_inflated_bytes", limit=exc.limit,
            )
        except zlib.error:
            return self._refuse(CANNOT_UNDERSTAND, "not a valid deflate stream", calling)
        except HeaderError as exc:
            status = DATASET_MISMATCH if exc.keyword in ("SOPClassUID", "SOPInstanceUID") else CANNOT_UNDERSTAND
            return self._refuse(status, exc.reason, calling, attribute=exc.keyword, sop_instance_uid=sop_instance)
        except (InvalidDicomError, RecursionError, ValueError, KeyError, EOFError, OSError) as exc:
            return self._refuse(CANNOT_UNDERSTAND, f"cannot read the dataset: {type(exc).__name__}", calling)
        except Exception as exc:  # pydicom may raise anything on broken data
            return self._refuse(CANNOT_UNDERSTAND, f"cannot read the dataset: {type(exc).__name__}", calling)

        note_defects(self.metrics, header.uid_defects, service="storage", calling_ae=calling)
        existing = self.store.current_instances(header.sop_instance_uid)
        if existing and self.policy == "keep_first":
            log.info("store.duplicate_kept_first", extra=fields(sop_instance_uid=sop_instance, calling_ae=calling, first=existing[0].id))
            return SUCCESS
        try:
            received = incoming.received_file(req)
            path, size, sha256 = self.spool.keep(temp, header, received if isinstance(received, IncomingFile) else None)
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else f"cannot write the spool: {exc.strerror}"
            return self._refuse(OUT_OF_RESOURCES, reason, calling)
        except ValueError as exc:
            return self._refuse(CANNOT_UNDERSTAND, str(exc), calling)
        record = InstanceRecord(
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=header.sop_class_uid,
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            patient_id=header.patient_id,
            accession=header.accession,
            modality=header.modality,
            manufacturer=header.manufacturer,
            kind=header.kind,
            transfer_syntax=str(event.context.transfer_syntax),
            size=size,
            sha256=sha256,
            path=str(path.relative_to(self.spool.root)),
            calling_ae=calling,
        )
        routed = RoutedObject(
            kind=header.kind,
            sop_class=header.sop_class_uid,
            modality=header.modality,
            calling_ae=calling,
            manufacturer=header.manufacturer,
            attributes={kw: text_value(ds, kw) for kw in self.route_keywords},
        )
        destinations = destinations_for(self.rules, routed)
        if destinations and self._is_prior(header.study_uid, req):
            destinations = ()  # a prior fetched from the PACS goes nowhere (README "Priors from the PACS")
        if destinations and self.is_phantom(header.patient_id):
            destinations = ()  # a QA phantom scan is no patient's (README "Running a DXA service")
        row_id = self.store.add_instance(record, supersede=bool(existing) and self.policy == "replace", destinations=destinations)
        ae = self.metrics.ae_label(calling)
        self.metrics.instances.labels(sop_class, ae).inc()
        self.metrics.instance_bytes.labels(sop_class, ae).inc(size)
        self.metrics.store_latency.observe(time.perf_counter() - started)
        log.info(
            "store.stored",
            extra=fields(instance=row_id, sop_instance_uid=sop_instance, kind=header.kind, size=size, calling_ae=calling, destinations=list(destinations)),
        )
        self.notify(header.kind, row_id)
        return SUCCESS
