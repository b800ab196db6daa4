"""What a DXA scanner sends: report images, the BMD SR and the dose SR.

Secondary Capture (PS3.3 A.8.1) 8-bit RGB report images with real pixel
data, deterministic from the ``random.Random`` passed in.  The SRs come from
``mappings.bmd.samples`` (the vendor layouts); while that module is absent a
minimal Enhanced SR / X-Ray Radiation Dose SR of our own stands in.
"""

from __future__ import annotations

import random

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
XRAY_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"

VENDORS = {
    "hologic": {"Manufacturer": "HOLOGIC", "ManufacturerModelName": "Horizon A", "SoftwareVersions": "APEX 5.6.0.4", "Modality": "OT"},
    "ge": {"Manufacturer": "GE Healthcare", "ManufacturerModelName": "Lunar iDXA", "SoftwareVersions": "enCORE 18", "Modality": "OT"},
}
SCANS = {
    "hologic": [("LSPINE", "AP Lumbar Spine", ""), ("HIP", "Left Hip", "L"), ("HIP", "Right Hip", "R"), ("ARM", "Left Forearm", "L")],
    "ge": [("LSPINE", "AP Spine", ""), ("HIP", "Left Femur", "L"), ("HIP", "DualFemur", ""), ("ARM", "Left Forearm", "L")],
}


def seeded_uid(rng: random.Random) -> str:
    return generate_uid(entropy_srcs=[f"{rng.getrandbits(128):032x}"])


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def _copy_header(ds: Dataset, header: Dataset) -> None:
    for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime"):
        setattr(ds, kw, header.get(kw, ""))
    for kw in ("SpecificCharacterSet", "ReferringPhysicianName", "StudyID", "EthnicGroup", "IssuerOfPatientID"):
        if kw in header:
            setattr(ds, kw, header.get(kw))
    if "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = "ISO_IR 192"


def report_pixels(rng: random.Random, rows: int, cols: int) -> np.ndarray:
    """An RGB report page: a bone scan panel, a reference curve, a table."""
    g = np.random.default_rng(rng.getrandbits(64))
    img = np.full((rows, cols, 3), 245, dtype=np.uint8)
    # scan panel: grey soft tissue with a bright elliptic "bone" and noise
    ph, pw = int(rows * 0.8), int(cols * 0.42)
    y, x = np.mgrid[0:ph, 0:pw]
    cy, cx = ph / 2 + g.normal(0, ph * 0.03), pw / 2 + g.normal(0, pw * 0.03)
    bone = ((y - cy) / (ph * 0.42)) ** 2 + ((x - cx) / (pw * 0.16)) ** 2 < 1.0
    soft = ((x - pw / 2) / (pw * 0.45)) ** 2 < 1.0
    panel = 30 + 70 * soft + 110 * bone + g.normal(0, 9, (ph, pw))
    panel = np.clip(panel, 0, 255).astype(np.uint8)
    top, left = int(rows * 0.1), int(cols * 0.04)
    img[top : top + ph, left : left + pw] = panel[..., None]
    # reference curve: green / yellow / red bands and the patient's point
    ch, cw = int(rows * 0.35), int(cols * 0.46)
    ctop, cleft = top, int(cols * 0.5)
    band = np.linspace(0, 1, ch)[:, None]
    curve = np.zeros((ch, cw, 3), dtype=np.uint8)
    curve[..., 0] = np.where(band > 0.66, 230, np.where(band > 0.33, 240, 140)).astype(np.uint8)
    curve[..., 1] = np.where(band > 0.66, 120, np.where(band > 0.33, 220, 210)).astype(np.uint8)
    curve[..., 2] = 120
    img[ctop : ctop + ch, cleft : cleft + cw] = curve
    py, px = int(ch * g.uniform(0.2, 0.8)), int(cw * g.uniform(0.2, 0.8))
    img[ctop + max(py - 4, 0) : ctop + py + 4, cleft + max(px - 4, 0) : cleft + px + 4] = (0, 0, 0)
    # results table: grey rows with dark "text" blocks
    ttop = ctop + ch + int(rows * 0.05)
    for r in range(6):
        ry = ttop + r * int(rows * 0.05)
        if ry + 10 >= rows:
            break
        img[ry : ry + 2, cleft : cleft + cw] = 160
        for c in range(4):
            w = int(g.uniform(0.3, 0.9) * cw / 5)
            cx0 = cleft + c * cw // 4 + 4
            img[ry + 6 : ry + 14, cx0 : cx0 + w] = 40
    return img


def build_report_image(vendor: str, header: Dataset, rng: random.Random, *, index: int = 0, series_uid: str = "", station_ae: str = "") -> Dataset:
    """One Secondary Capture report image (8-bit RGB, ~0.5 to 2 MB)."""
    v = VENDORS[vendor]
    body_part, protocol, laterality = SCANS[vendor][index % len(SCANS[vendor])]
    rows = rng.randrange(480, 800, 16)
    cols = rng.randrange(400, 832, 16)
    ds = Dataset()
    _copy_header(ds, header)
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = seeded_uid(rng)
    ds.SeriesInstanceUID = series_uid or seeded_uid(rng)
    ds.SeriesNumber = 1 + index
    ds.InstanceNumber = 1
    ds.Modality = v["Modality"]
    ds.ConversionType = "WSD"
    ds.Manufacturer = v["Manufacturer"]
    ds.ManufacturerModelName = v["ManufacturerModelName"]
    ds.SoftwareVersions = v["SoftwareVersions"]
    ds.StationName = station_ae or "DXA"
    ds.BodyPartExamined = body_part
    ds.ProtocolName = protocol
    ds.SeriesDescription = protocol
    if laterality:
        ds.Laterality = laterality
    ds.ContentDate = header.get("StudyDate", "")
    ds.ContentTime = header.get("StudyTime", "")
    ds.SeriesDate = ds.ContentDate
    ds.SeriesTime = ds.ContentTime
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = report_pixels(rng, rows, cols).tobytes()
    if vendor == "ge":
        ds.EntranceDoseInmGy = round(rng.uniform(0.1, 0.35), 3)
    _file_meta(ds)
    return ds


# -- SRs -------------------------------------------------------------------


def _samples():
    try:
        from mappings.bmd import samples  # noqa: PLC0415 - written by another engineer
    except ImportError:
        return None
    return samples


def sr_source() -> str:
    return "mappings.bmd.samples" if _samples() is not None else "simulator fallback"


def build_bmd_sr(vendor: str, header: Dataset, rng: random.Random) -> Dataset:
    samples = _samples()
    if samples is not None and hasattr(samples, "build_bmd_sr"):
        ds = samples.build_bmd_sr(vendor, header, rng)
    else:
        ds = fallback_bmd_sr(vendor, header, rng)
    return _ensure_header(ds, header)


def build_result_objects(vendor: str, header: Dataset, rng: random.Random, *, results: str = "images", modality: str = "OT") -> list[Dataset]:
    """The results of one plausible exam as the scanner sends them.

    ``results``: ``images`` -- report images only, one per scan (Hologic: text
    in (0019,1000); GE: XML in Image Comments), as a Hologic without the
    licensed SR option sends them; ``both`` -- the same images and the SR.
    Each image gets a real-looking RGB page (docs/domain.md section 2: ~1200x1320
    at the sites; smaller here).
    """
    from mappings.bmd import samples  # noqa: PLC0415

    exam = samples.random_exam(vendor, header, rng)
    images = samples.hologic_report_images(exam, modality=modality) if vendor == "hologic" else samples.ge_report_images(exam)
    for ds in images:
        rows, cols = rng.randrange(480, 800, 16), rng.randrange(400, 832, 16)
        ds.Rows, ds.Columns = rows, cols
        ds.PixelData = report_pixels(rng, rows, cols).tobytes()
        ds.StationName = header.get("StationName", "") or "DXA"
        if "PatientAge" not in header and "PatientAge" in ds:
            del ds.PatientAge
    objs = [_ensure_header(ds, header) for ds in images]
    if results == "both":
        sr = samples.hologic_sr(exam) if vendor == "hologic" else samples.ge_sr(exam)
        if "PatientAge" not in header and "PatientAge" in sr:
            del sr.PatientAge
        objs.append(_ensure_header(sr, header))
    return objs


def build_dose_sr(header: Dataset, rng: random.Random) -> Dataset:
    samples = _samples()
    if samples is not None and hasattr(samples, "build_dose_sr"):
        ds = samples.build_dose_sr(header, rng)
    else:
        ds = fallback_dose_sr(header, rng)
    return _ensure_header(ds, header)


def _ensure_header(ds: Dataset, header: Dataset) -> Dataset:
    for kw in ("PatientID", "StudyInstanceUID", "AccessionNumber"):
        if not ds.get(kw) and header.get(kw):
            setattr(ds, kw, header.get(kw))
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        _file_meta(ds)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def _num(name: Dataset, value: float, unit: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "NUM"
    item.ConceptNameCodeSequence = Sequence([name])
    mv = Dataset()
    mv.NumericValue = f"{value:.3f}"
    mv.MeasurementUnitsCodeSequence = Sequence([unit])
    item.MeasuredValueSequence = Sequence([mv])
    return item


def _sr_shell(header: Dataset, rng: random.Random, sop_class: str, title: Dataset, vendor: str) -> Dataset:
    v = VENDORS.get(vendor, VENDORS["hologic"])
    ds = Dataset()
    _copy_header(ds, header)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = seeded_uid(rng)
    ds.SeriesInstanceUID = seeded_uid(rng)
    ds.SeriesNumber = 100 if sop_class == ENHANCED_SR else 999
    ds.InstanceNumber = 1
    ds.Modality = "SR"
    ds.Manufacturer = v["Manufacturer"]
    ds.ContentDate = header.get("StudyDate", "")
    ds.ContentTime = header.get("StudyTime", "")
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([title])
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = Sequence()
    return ds


def fallback_bmd_sr(vendor: str, header: Dataset, rng: random.Random) -> Dataset:
    """A small Enhanced SR ("DXA Report" with BMD / T / Z per region)."""
    ds = _sr_shell(header, rng, ENHANCED_SR, _code("DXAREPORT", "99DXASIM", "DXA Report"), vendor)
    items = []
    gcm2 = _code("g/cm2", "UCUM", "g/cm2")
    one = _code("1", "UCUM", "no units")
    for region in ("L1-L4", "Neck", "Total Hip"):
        bmd = rng.uniform(0.6, 1.2)
        container = Dataset()
        container.RelationshipType = "CONTAINS"
        container.ValueType = "CONTAINER"
        container.ContinuityOfContent = "SEPARATE"
        container.ConceptNameCodeSequence = Sequence([_code(region.replace(" ", ""), "99DXASIM", region)])
        container.ContentSequence = Sequence(
            [
                _num(_code("BMD", "99DXASIM", "BMD"), bmd, gcm2),
                _num(_code("TSCORE", "99DXASIM", "T-score"), (bmd - 1.0) / 0.11, one),
                _num(_code("113071", "DCM", "Z-score"), (bmd - 0.9) / 0.12, one),
            ]
        )
        items.append(container)
    ds.ContentSequence = Sequence(items)
    _file_meta(ds)
    return ds


def fallback_dose_sr(header: Dataset, rng: random.Random) -> Dataset:
    """A minimal X-Ray Radiation Dose SR (TID 10001 title, DAP and dose)."""
    ds = _sr_shell(header, rng, XRAY_DOSE_SR, _code("113701", "DCM", "X-Ray Radiation Dose Report"), "hologic")
    proc = Dataset()
    proc.RelationshipType = "HAS CONCEPT MOD"
    proc.ValueType = "CODE"
    proc.ConceptNameCodeSequence = Sequence([_code("121058", "DCM", "Procedure reported")])
    proc.ConceptCodeSequence = Sequence([_code("241686001", "SCT", "Dual energy X-Ray absorptiometry")])
    ds.ContentSequence = Sequence(
        [
            proc,
            _num(_code("113722", "DCM", "Dose Area Product Total"), rng.uniform(1e-6, 5e-6), _code("Gy.m2", "UCUM", "Gy.m2")),
            _num(_code("113725", "DCM", "Dose (RP) Total"), rng.uniform(1e-5, 4e-5), _code("Gy", "UCUM", "Gy")),
        ]
    )
    _file_meta(ds)
    return ds
