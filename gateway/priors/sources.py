"""Where priors come from: a PACS asked by study-level C-FIND then C-MOVE to
ourselves (PS3.4 C.4.1, C.4.2, Study Root), or by DICOMweb QIDO-RS then
WADO-RS (PS3.18 10.6, 10.4).  Blocking; called from the priors threads only.

A C-MOVE'd study arrives through our own C-STORE SCP (the caller records it
in ``prior_studies`` first, so it is kept out of the routes); a WADO-RS
study is handed to ``keep`` object by object.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Callable, Iterable

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from mappings.priors import FoundStudy, PatientIdentity


class SourceDown(RuntimeError):
    """The source could not be reached or refused the query: try again or the next source."""


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """Study-level keys: a patient's studies, or every study in a date window."""

    patient_id: str = ""
    issuer: str = ""
    date_from: str = ""  # DA
    date_to: str = ""  # DA


def _text(value) -> str:
    return "" if value is None else str(value).strip()


# -- DIMSE -------------------------------------------------------------------------


class CMoveSource:
    """Study Root Q/R: C-FIND SCU at STUDY level, C-MOVE SCU to ``move_destination``."""

    method = "c-move"

    def __init__(self, name: str, host: str, port: int, called_ae: str, calling_ae: str, move_destination: str, timeout: float) -> None:
        self.name, self.host, self.port = name, host, port
        self.called_ae, self.calling_ae, self.move_destination = called_ae, calling_ae, move_destination
        self.timeout = timeout

    def _associate(self, context: str, *, storage: tuple[str, ...] = (), handlers: list | None = None):
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        ae.add_requested_context(context)
        for sop_class in storage:  # C-GET: the objects come back on this association
            ae.add_requested_context(sop_class)
        # PS3.4 C.4.3.1: the SCU takes the Storage SCP role (SCP/SCU Role Selection, PS3.7 D.3.3.4)
        roles = [build_role(c, scp_role=True) for c in storage]
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, ext_neg=roles or None, evt_handlers=handlers)
        except (OSError, socket.error) as exc:
            raise SourceDown(f"{self.name}: cannot connect ({type(exc).__name__})") from None
        if not assoc.is_established:
            raise SourceDown(f"{self.name}: association {'rejected' if assoc.is_rejected else 'failed'}")
        return assoc

    def find(self, query: StudyQuery) -> list[FoundStudy]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"  # PS3.4 C.6.2.1: Study Root, study level
        ds.PatientID = query.patient_id
        ds.IssuerOfPatientID = ""  # a return key, compared by us (PACSs differ on matching it)
        ds.PatientName = ""
        ds.PatientBirthDate = ""
        ds.StudyDate = f"{query.date_from}-{query.date_to}" if (query.date_from or query.date_to) else ""
        ds.StudyInstanceUID = ""
        ds.ModalitiesInStudy = ""
        ds.AccessionNumber = ""
        assoc = self._associate(StudyRootQueryRetrieveInformationModelFind)
        out: list[FoundStudy] = []
        try:
            for status, ident in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
                if status is None or "Status" not in status:
                    raise SourceDown(f"{self.name}: C-FIND got no response")
                code = int(status.Status)
                if code in (0xFF00, 0xFF01) and ident is not None:
                    out.append(_found(ident))
                elif code != 0x0000:
                    raise SourceDown(f"{self.name}: C-FIND status 0x{code:04X}")
        finally:
            assoc.release()
        return out

    def retrieve(self, study_uid: str, keep: Callable[[bytes], None] | None = None) -> int:
        """C-MOVE the study to ourselves; returns the sub-operations completed."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        assoc = self._associate(StudyRootQueryRetrieveInformationModelMove)
        completed, failed = 0, 0
        try:
            for status, _ in assoc.send_c_move(ds, self.move_destination, StudyRootQueryRetrieveInformationModelMove):
                if status is None or "Status" not in status:
                    raise SourceDown(f"{self.name}: C-MOVE got no response")
                code = int(status.Status)
                if code == 0xFF00:
                    continue
                completed = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
                failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
                # PS3.4 C.4.2.1.4.1: 0000 success, B000 some sub-operations failed
                if code not in (0x0000, 0xB000):
                    raise SourceDown(f"{self.name}: C-MOVE status 0x{code:04X} (is {self.move_destination} known to the PACS?)")
        finally:
            assoc.release()
        if failed and not completed:
            raise SourceDown(f"{self.name}: every C-MOVE sub-operation failed ({failed})")
        return completed


class CGetSource(CMoveSource):
    """Study Root Q/R: C-FIND SCU, then C-GET SCU with the objects on the same association
    (no Move Destination to configure at the PACS)."""

    method = "c-get"

    def __init__(self, name: str, host: str, port: int, called_ae: str, calling_ae: str, storage_classes: tuple[str, ...], timeout: float) -> None:
        super().__init__(name, host, port, called_ae, calling_ae, "", timeout)
        self.storage_classes = storage_classes[:127]  # PS3.8 9.3.2.2: 128 contexts with the Q/R one

    def retrieve(self, study_uid: str, keep: Callable[[bytes], None] | None = None) -> int:
        if keep is None:
            raise ValueError("a C-GET needs somewhere to keep the objects")

        def on_store(event) -> int:
            try:
                # the daemon receives into files (STORE_RECV_CHUNKED_DATASET, gateway/dicom/server.py):
                # then pynetdicom hands a Part 10 file, else the encoded bytes
                path = getattr(event, "dataset_path", None) if _config.STORE_RECV_CHUNKED_DATASET else None
                keep(Path(path).read_bytes() if path else bytes(event.encoded_dataset(include_meta=True)))
            except Exception:
                return 0xA700  # PS3.4 B.2.3: out of resources; the study is retried by the next lookup
            return 0x0000

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        assoc = self._associate(StudyRootQueryRetrieveInformationModelGet, storage=self.storage_classes, handlers=[(evt.EVT_C_STORE, on_store)])
        completed, failed = 0, 0
        try:
            for status, _ in assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet):
                if status is None or "Status" not in status:
                    raise SourceDown(f"{self.name}: C-GET got no response")
                code = int(status.Status)
                if code == 0xFF00:
                    continue
                completed = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
                failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
                if code not in (0x0000, 0xB000):  # PS3.4 C.4.3.1.4
                    raise SourceDown(f"{self.name}: C-GET status 0x{code:04X}")
        finally:
            assoc.release()
        if failed and not completed:
            raise SourceDown(f"{self.name}: every C-GET sub-operation failed ({failed})")
        return completed


def _found(ident: Dataset) -> FoundStudy:
    mods = ident.get("ModalitiesInStudy", "") or ""
    modalities = tuple(str(m) for m in mods) if not isinstance(mods, str) else tuple(m for m in mods.split("\\") if m)
    return FoundStudy(
        study_uid=_text(ident.get("StudyInstanceUID")),
        study_date=_text(ident.get("StudyDate")),
        modalities=modalities,
        identity=PatientIdentity(
            patient_id=_text(ident.get("PatientID")),
            issuer=_text(ident.get("IssuerOfPatientID")),
            name=_text(ident.get("PatientName")),
            birth_date=_text(ident.get("PatientBirthDate")),
        ),
    )


# -- DICOMweb ------------------------------------------------------------------------


def _json_value(item: dict, tag: str) -> list:
    return (item.get(tag) or {}).get("Value") or []


def _json_text(item: dict, tag: str) -> str:
    values = _json_value(item, tag)
    if not values:
        return ""
    v = values[0]
    if isinstance(v, dict):  # PN in DICOM JSON (PS3.18 F.2.2)
        return str(v.get("Alphabetic", ""))
    return str(v)


class DicomWebSource:
    """QIDO-RS /studies then WADO-RS /studies/{uid} (multipart/related; type=application/dicom)."""

    method = "dicomweb"

    def __init__(self, name: str, url: str, auth: str, timeout: float) -> None:
        self.name, self.url, self.timeout = name, url.rstrip("/"), timeout
        self.headers = {"Authorization": auth} if auth else {}

    def _get(self, path: str, accept: str) -> tuple[bytes, str]:
        req = urllib.request.Request(self.url + path, headers={**self.headers, "Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as rsp:
                return rsp.read(), rsp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raise SourceDown(f"{self.name}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceDown(f"{self.name}: cannot connect ({type(exc).__name__})") from None

    def find(self, query: StudyQuery) -> list[FoundStudy]:
        params = {"includefield": "00100010,00100020,00100021,00100030,00080020,00080061,0020000D"}
        if query.patient_id:
            params["PatientID"] = query.patient_id
        if query.date_from or query.date_to:
            params["StudyDate"] = f"{query.date_from}-{query.date_to}"
        body, _ = self._get("/studies?" + urllib.parse.urlencode(params), "application/dicom+json")
        try:
            items = json.loads(body or b"[]")
        except ValueError:
            raise SourceDown(f"{self.name}: QIDO-RS answer is not JSON") from None
        out = []
        for item in items if isinstance(items, list) else []:
            out.append(
                FoundStudy(
                    study_uid=_json_text(item, "0020000D"),
                    study_date=_json_text(item, "00080020"),
                    modalities=tuple(str(m) for m in _json_value(item, "00080061")),
                    identity=PatientIdentity(
                        patient_id=_json_text(item, "00100020"),
                        issuer=_json_text(item, "00100021"),
                        name=_json_text(item, "00100010"),
                        birth_date=_json_text(item, "00100030"),
                    ),
                )
            )
        return out

    def retrieve(self, study_uid: str, keep: Callable[[bytes], None] | None = None) -> int:
        """WADO-RS the study; each part (a Part 10 file) goes to ``keep``."""
        if keep is None:
            raise ValueError("a DICOMweb retrieve needs somewhere to keep the objects")
        body, ctype = self._get(f"/studies/{urllib.parse.quote(study_uid)}", 'multipart/related; type="application/dicom"')
        count = 0
        for part in multipart_parts(body, ctype):
            keep(part)
            count += 1
        return count


def multipart_parts(body: bytes, content_type: str) -> Iterable[bytes]:
    """The bodies of a multipart/related answer (RFC 2387), parsed by the standard email parser."""
    if "multipart/" not in content_type.lower():
        raise SourceDown(f"WADO-RS answer is {content_type or 'untyped'}, not multipart")
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise SourceDown("WADO-RS answer has no parts")
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        if payload:
            yield payload
