"""Write the seed corpus (tests/fuzz/corpus/<target>/seed-*): ``python -m tests.fuzz.make_seeds``."""

from __future__ import annotations

import io
import random
from pathlib import Path

import orjson
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from hl7v2.mllp import frame
from tests.hl7_messages import adt, omi, orm

CORPUS = Path(__file__).parent / "corpus"


def _write(target: str, seeds: list[bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds):
        (folder / f"seed-{i:02d}").write_bytes(data)


def _part10(ds: Dataset, syntax=ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def pdus() -> list[bytes]:
    from pynetdicom.pdu import A_ASSOCIATE_RQ, A_RELEASE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context
    from pynetdicom.transport import AddressInformation
    from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = "SCANNER"
    prim.called_ae_title = "DXAGW"
    prim.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    prim.called_presentation_address = AddressInformation("127.0.0.1", 104)
    contexts = [build_context(Verification), build_context(ModalityWorklistInformationFind)]
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    prim.presentation_context_definition_list = contexts
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16382
    prim.user_information = [ml]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(prim)
    pdata_body = (6).to_bytes(4, "big") + b"\x01\x03" + b"\x00\x00\x00\x00"
    pdata = b"\x04\x00" + len(pdata_body).to_bytes(4, "big") + pdata_body
    return [rq.encode(), pdata, A_RELEASE_RQ().encode(), b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"]


def datasets() -> list[bytes]:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.10"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.11"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.12"
    ds.PatientID = "P1"
    ds.AccessionNumber = "A1"
    ds.Modality = "OT"
    ds.Manufacturer = "HOLOGIC"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 8
    ds.PixelData = b"\x00" * 4
    from gateway.spool import meta_length

    # first byte: the transfer syntax (tests/fuzz/targets.py _STORE_SYNTAXES), then the dataset alone
    explicit, implicit = _part10(ds), _part10(ds.copy(), ImplicitVRLittleEndian)
    return [b"\x00" + explicit[meta_length(explicit):], b"\x01" + implicit[meta_length(implicit):]]


def hl7_messages() -> list[bytes]:
    return [m.encode() for m in (orm("F1"), orm("F2", name="Muller^Jorg"), omi("F3"), adt("F4"), adt("F5", "A40", prior="P0"))]


def mllp_streams() -> list[bytes]:
    frames = b"".join(frame(m) for m in hl7_messages()[:2])
    return [b"\x03" + frames, b"\x10junk" + frames, b"\x00\x0bMSH|a\x0bMSH|b\x1c\x0d"]


def fhir_bodies() -> list[bytes]:
    from tests.unit.test_fhir_orders import PATIENT, sr

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {k: v for k, v in PATIENT.items() if k != "id"}},
            {"resource": {**{k: v for k, v in sr().items() if k != "contained"}, "subject": {"reference": "urn:uuid:1"}}},
        ],
    }
    return [orjson.dumps(sr()), orjson.dumps(bundle), orjson.dumps(sr(status="revoked"))]


def vendor_srs() -> tuple[list[bytes], list[bytes]]:
    from mappings.bmd.samples import hologic_text, random_exam, ge_sr
    from tests.unit.bmd.helpers import header

    hologic, ge = [], []
    for seed in (1, 2):
        rng = random.Random(seed)
        hologic.append(hologic_text(random_exam("hologic", header(), rng)).encode("latin-1", "replace"))
        exam = random_exam("ge", header(), random.Random(seed))
        ge.append(_part10(ge_sr(exam)))
    return hologic, ge


def ge_trees_and_xml() -> tuple[list[bytes], list[bytes]]:
    """GE sample SRs in the tree grammar (tests/fuzz/sr_tree.py) and GE results XML."""
    from mappings.bmd.samples import ge_report_images, ge_sr, random_exam
    from tests.fuzz.sr_tree import encode
    from tests.unit.bmd.helpers import header

    trees, xml = [], []
    for seed in (1, 2):
        exam = random_exam("ge", header(), random.Random(seed))
        trees.append(encode(ge_sr(exam)))
        xml += [str(ds.ImageComments).encode() for ds in ge_report_images(exam)[:2] if "ImageComments" in ds]
    xml.append(
        b'<DENSITOMETRY_RESULTS><CURRENT_EXAM><SCAN type="Left Femur"><TREND><TREND_ROI region="Neck">'
        b'<BMD units=" g/cm2">0,826</BMD><YAT>-1,5</YAT><AMZ>-0.4</AMZ></TREND_ROI></TREND></SCAN></CURRENT_EXAM></DENSITOMETRY_RESULTS>'
    )
    return trees, xml


def main() -> None:
    _write("pdu", pdus())
    _write("cstore_header", datasets())
    _write("hl7", hl7_messages())
    _write("mllp", mllp_streams())
    _write("fhir", fhir_bodies())
    hologic, ge = vendor_srs()
    _write("hologic", hologic)
    _write("ge_lunar", ge)
    trees, xml = ge_trees_and_xml()
    _write("ge_lunar_tree", trees)
    _write("ge_xml", xml)


if __name__ == "__main__":
    main()
