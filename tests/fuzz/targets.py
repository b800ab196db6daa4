"""Fuzz targets: one function per reader of untrusted bytes (issue 11, fuzzing).

Each target takes one input (bytes), does what the daemon does with such
bytes, swallows the refusals the daemon turns into a clear answer, and
checks what must hold of an accepted input.  Anything else it raises is a
finding.  No atheris here: ``tests/fuzz/test_corpus.py`` replays the
corpus with plain pytest, ``bench/fuzz.py`` drives these under atheris.

Contracts (what counts as a refusal rather than a crash):

* ``pdu``: a P-DATA-TF body gives items adding up to it, or None (Evt19);
  another PDU type decodes or raises (the DUL answers Evt19, A-ABORT); an
  A-ASSOCIATE-RQ/AC that decodes turns into its primitive (fsm AE-6/AE-3).
* ``cstore_header``: the received file as the daemon has it (our file
  meta, then the peer's bytes as the dataset) read by
  ``read_received_header``, then ``read_header``: any exception is a
  refusal (0xC000/0xA900, as ``StorageScp.handle``); an accepted header has
  UIDs safe as file names.
* ``hl7``: ``parse_message`` raises only ``Hl7Error``; every accepted
  worklist field fits its VR (``mappings.hl7_bounds``).
* ``mllp``: the framer never raises, never holds more than its limit, and
  no frame it gives holds a start block.
* ``fhir``: JSON that parses goes to ``service_request_actions``, which
  raises only ``FhirOrderError`` (the HTTP handler catches nothing else).
* ``hologic``: ``parse_text`` on a results text raises only ``UnparseableSr``.
* ``ge_lunar``: a dataset pydicom can read goes to ``parse_ge_lunar``,
  which raises only ``UnparseableSr``.
* ``ge_lunar_tree``: the same walker on SR content trees decoded from the
  input by ``tests/fuzz/sr_tree.py`` (no pydicom reader in the way, so
  about a hundred times as many trees an hour); raises only ``UnparseableSr``.
* ``ge_xml``: the GE Image Comments results XML (``parse_image_comments``)
  raises only ``UnparseableSr``.
"""

from __future__ import annotations

import io
import struct
from typing import Callable

import orjson

from dicomext.transport import pdv_items
from hl7v2.errors import Hl7Error
from hl7v2.mllp import Frame, MllpFramer, StrayStart
from mappings.bmd.collect import UnparseableSr
from mappings.bmd.ge_lunar import parse_ge_lunar, parse_image_comments
from mappings.bmd.hologic import parse_text
from mappings.fhir_orders import FhirOrderError, service_request_actions
from mappings.hl7_bounds import ITEM_BOUNDS, VR_LENGTH
from mappings.hl7_orders import UpdatePatient, UpsertOrder, parse_message
from mappings.instances import HEADER_KEYWORDS, HeaderError, read_header, text_value, valid_uid

Target = Callable[[bytes], None]


def pdu(data: bytes) -> None:
    from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, PDU_TYPES

    if len(data) < 6:
        return
    pdu_type, _, length = struct.unpack(">BBL", data[:6])
    body = data[6 : 6 + length]
    if pdu_type == 0x04:
        items = pdv_items(bytearray(body))
        if items is not None:
            assert sum(5 + len(v) for _, v in items) == len(body)
            assert all(0 <= cid <= 255 for cid, _ in items)
        return
    cls = PDU_TYPES.get(pdu_type)
    if cls is None:
        return  # the DUL answers Evt19 before decoding
    decoded = cls()
    try:
        decoded.decode(data[:6] + body)
    except Exception:
        return  # _decode_pdu raised: Evt19, A-ABORT
    if isinstance(decoded, (A_ASSOCIATE_RQ, A_ASSOCIATE_AC)):
        decoded.to_primitive()


#: (transfer syntax, big endian) the first input byte picks for the dataset
_STORE_SYNTAXES = (("1.2.840.10008.1.2.1", False), ("1.2.840.10008.1.2", False), ("1.2.840.10008.1.2.2", True))
_STORE_META: dict[str, bytes] = {}


def _store_meta(syntax: str) -> bytes:
    """Preamble and file meta as pynetdicom writes them before a received dataset."""
    if syntax not in _STORE_META:
        from pydicom.dataset import FileMetaDataset
        from pydicom.filewriter import write_file_meta_info

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.10"
        meta.TransferSyntaxUID = syntax
        buf = io.BytesIO()
        buf.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(buf, meta, enforce_standard=True)
        _STORE_META[syntax] = buf.getvalue()
    return _STORE_META[syntax]


def cstore_header(data: bytes) -> None:
    """The first byte picks the context's transfer syntax, the rest is the
    peer's dataset, behind our file meta as the daemon receives it."""
    from gateway.dicom.storage import read_received_header

    if not data:
        return
    syntax, big = _STORE_SYNTAXES[data[0] % len(_STORE_SYNTAXES)]
    try:
        ds = read_received_header(io.BytesIO(_store_meta(syntax) + data[1:]), list(HEADER_KEYWORDS), big_endian=big)
        # the daemon takes these from the C-STORE request; the dataset's own, read safely, stand in
        header = read_header(ds, sop_class=text_value(ds, "SOPClassUID"), sop_instance=text_value(ds, "SOPInstanceUID"))
    except HeaderError:
        return
    except Exception:  # StorageScp.handle: any read error is 0xC000
        return
    for uid in (header.study_uid, header.series_uid, header.sop_instance_uid):
        assert valid_uid(uid) and "/" not in uid and ".." not in uid.split(".")


def _fits(name: str, value: str) -> bool:
    bound = ITEM_BOUNDS.get(name)
    return bound is None or len(value) <= VR_LENGTH[bound.vr]


def hl7(data: bytes) -> None:
    try:
        parsed = parse_message(data)
    except Hl7Error as exc:
        assert isinstance(exc.code, int) and exc.ack_code in ("AE", "AR")
        return
    for action in parsed.actions:
        if isinstance(action, UpsertOrder):
            for item in action.items:
                for name in ITEM_BOUNDS:
                    value = getattr(item, name)
                    for v in value if isinstance(value, tuple) else (value,):
                        assert _fits(name, v), (name, len(v))
        elif isinstance(action, UpdatePatient):
            assert _fits("patient_name", action.demographics.patient_name or "")


def mllp(data: bytes) -> None:
    """The first byte picks the chunk size the rest is fed in."""
    if not data:
        return
    step = data[0] % 17 + 1
    limit = 4096
    framer = MllpFramer(limit)
    for i in range(1, len(data), step):
        for event in framer.feed(data[i : i + step]):
            if isinstance(event, Frame):
                assert b"\x0b" not in event.message and len(event.message) <= limit
            elif isinstance(event, StrayStart):
                assert b"\x0b" not in event.message
        assert framer.buffered <= limit


def fhir(data: bytes) -> None:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    try:
        service_request_actions(body, default_station_ae="DXA1")
    except FhirOrderError:
        return


def _header():
    from pydicom.dataset import Dataset

    h = Dataset()
    h.PatientID = "PAT-001"
    h.PatientName = "Smith^Anne"
    h.PatientBirthDate = "19580312"
    h.PatientSex = "F"
    h.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    h.StudyDate = "20240501"
    h.Manufacturer = "HOLOGIC"
    return h


_HOLOGIC_HEADER = None


def hologic(data: bytes) -> None:
    global _HOLOGIC_HEADER
    if _HOLOGIC_HEADER is None:
        _HOLOGIC_HEADER = _header()
    try:
        parse_text(data.decode("latin-1"), _HOLOGIC_HEADER)
    except UnparseableSr:
        return


def ge_lunar(data: bytes) -> None:
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), force=True)
        for elem in ds.iterall():  # decode every value now, as reading it would
            elem.value
    except Exception:
        return  # read_bmd_sr: "cannot read the SR"
    try:
        parse_ge_lunar(ds)
    except UnparseableSr:
        return


def ge_lunar_tree(data: bytes) -> None:
    from tests.fuzz.sr_tree import decode

    global _GE_HEADER
    if _GE_HEADER is None:
        _GE_HEADER = _header()
    try:
        parse_ge_lunar(decode(data, _GE_HEADER))
    except UnparseableSr:
        return


_GE_HEADER = None


def ge_xml(data: bytes) -> None:
    global _GE_HEADER
    if _GE_HEADER is None:
        _GE_HEADER = _header()
    try:
        parse_image_comments(data.decode("utf-8", "replace"), _GE_HEADER)
    except UnparseableSr:
        return


TARGETS: dict[str, Target] = {
    "pdu": pdu,
    "cstore_header": cstore_header,
    "hl7": hl7,
    "mllp": mllp,
    "fhir": fhir,
    "hologic": hologic,
    "ge_lunar": ge_lunar,
    "ge_lunar_tree": ge_lunar_tree,
    "ge_xml": ge_xml,
}
