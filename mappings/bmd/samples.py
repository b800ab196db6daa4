"""Realistic vendor-layout BMD SRs for the scanner simulator and the tests.

``build_bmd_sr(vendor, header, rng)`` makes a whole exam plausible for the
patient's age and sex and renders it in the vendor's layout;
``hologic_sr(exam)`` and ``ge_sr(exam)`` render a :class:`BmdExam` with known
values, so a test can parse the dataset back and compare to the last digit.
``build_dose_sr`` / ``dose_sr`` make an X-Ray Radiation Dose SR (TID 10001).

Hologic layout (docs/domain.md section 2): text in private (0019,xx00) of creator
"HOLOGIC": an XML header, then ``<JavaScriptFile>`` with scalars
(``Height = "160";``) and tables ``ResultsTableN[ row][ col] = "v";`` whose
row 0 holds the column labels.  Dual-hip rows carry the side in the label
("Neck Left"), with "Mean" and "|Diff.|" rows.  Excluded vertebrae are listed
in the scalar ``ExcludedVertebrae`` and FRAX in ``FRAXMajor``/``FRAXHip``
(``...NoBMD`` without BMD); these scalar names are **assumed**, not seen.
GE layout: see :mod:`mappings.bmd.codes`.
"""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from mappings.bmd import codes as c
from mappings.bmd import models as m
from mappings.bmd import sr_items as sr
from mappings.bmd.collect import age_years
from mappings.bmd.labels import BODY, FOREARM, HIP, SPINE
from mappings.bmd.models import BmdExam, Device, DoseRecord, FraxResult, RegionResult

HOLOGIC_LAYOUT = "hologic-apex"
GE_LAYOUT = "ge-lunar-encore"
GENERIC_LAYOUT = "generic"

# Young-adult mean BMD, SD (g/cm2) and typical area (cm2) per site: rough
# figures of the published reference curves, only for plausible samples.
_REFERENCE = {
    "L1": (Decimal("0.95"), Decimal("0.11"), 14.5),
    "L2": (Decimal("1.03"), Decimal("0.11"), 15.5),
    "L3": (Decimal("1.08"), Decimal("0.11"), 16.5),
    "L4": (Decimal("1.07"), Decimal("0.11"), 18.0),
    "spine": (Decimal("1.047"), Decimal("0.110"), 0.0),
    m.NECK: (Decimal("0.849"), Decimal("0.111"), 4.9),
    m.TOTAL_HIP: (Decimal("0.942"), Decimal("0.122"), 35.0),
    m.TROCH: (Decimal("0.700"), Decimal("0.090"), 11.0),
    m.INTER: (Decimal("1.130"), Decimal("0.150"), 20.0),
    m.WARDS: (Decimal("0.730"), Decimal("0.130"), 1.1),
    m.RADIUS_33: (Decimal("0.700"), Decimal("0.060"), 2.8),
    m.RADIUS_MID: (Decimal("0.600"), Decimal("0.050"), 5.0),
    m.RADIUS_UD: (Decimal("0.430"), Decimal("0.050"), 4.0),
    m.FOREARM_TOTAL: (Decimal("0.570"), Decimal("0.050"), 12.0),
    m.TOTAL_BODY: (Decimal("1.100"), Decimal("0.090"), 2000.0),
}
_Q3, _Q2, _Q1, _Q0 = Decimal("0.001"), Decimal("0.01"), Decimal("0.1"), Decimal("1")

_DEVICES = {
    "hologic": [Device("HOLOGIC", "Horizon A", "200123", "13.6.0.5:5"), Device("HOLOGIC", "Discovery W", "87211", "13.4.2:3")],
    "ge": [Device("GE Healthcare", "Lunar iDXA", "ME+200456", "enCORE 18.0"), Device("GE Healthcare", "Lunar Prodigy", "PA+41234", "enCORE 17.0")],
}


def _expected_t(age: int, sex: str) -> float:
    """Mean T-score of the age group: rough loss after 45 (women) or 50 (men)."""
    if sex == "F":
        return -0.035 * max(0, age - 45)
    return -0.015 * max(0, age - 50)


def _region(site: str, lat: str | None, t: float, exp_t: float, ref_key: str | None = None) -> RegionResult:
    ya, sd, area_mean = _REFERENCE[ref_key or site]
    bmd = max(Decimal("0.200"), (ya + Decimal(str(t)) * sd).quantize(_Q3))
    area = Decimal(str(area_mean * (1 + (t % 0.07)))).quantize(_Q2)
    return _scores(site, lat, bmd, (bmd * area).quantize(_Q2), area, ya, sd, exp_t)


def _scores(site, lat, bmd, bmc, area, ya, sd, exp_t) -> RegionResult:
    t = ((bmd - ya) / sd).quantize(_Q1)
    am = ya + Decimal(str(exp_t)) * sd
    return RegionResult(
        site=site,
        laterality=lat,
        bmd=bmd,
        bmc=bmc,
        area=area,
        t_score=t,
        z_score=(t - Decimal(str(exp_t))).quantize(_Q1),
        pct_young_adult=(100 * bmd / ya).quantize(_Q0),
        pct_age_matched=(100 * bmd / am).quantize(_Q0),
    )


def _spine_total(vertebrae: list[RegionResult], exp_t: float) -> RegionResult:
    bmc = sum(v.bmc for v in vertebrae)
    area = sum(v.area for v in vertebrae)
    ya, sd, _ = _REFERENCE["spine"]
    site = m.spine_site([int(v.site[1]) for v in vertebrae])
    return _scores(site, None, (bmc / area).quantize(_Q3), bmc, area, ya, sd, exp_t)


def random_exam(vendor: str, header: Dataset, rng: random.Random) -> BmdExam:
    """A plausible exam for the patient in ``header`` (spine, hip, sometimes more)."""
    if vendor not in _DEVICES:
        raise ValueError(f"unknown vendor {vendor!r}; expected 'hologic' or 'ge'")
    sex = str(getattr(header, "PatientSex", "") or "F")
    age = age_years(str(getattr(header, "PatientBirthDate", "")), str(getattr(header, "StudyDate", ""))) or 65
    exp_t = _expected_t(age, sex)
    base = exp_t + rng.gauss(0, 1.0)

    def t() -> float:
        return round(base + rng.gauss(0, 0.35), 2)

    vertebrae = [_region(f"L{i}", None, t(), exp_t) for i in range(1, 5)]
    if rng.random() < 0.15:
        i = rng.choice([0, 2, 3])
        vertebrae[i] = dataclasses.replace(vertebrae[i], excluded=True)
    included = [v for v in vertebrae if not v.excluded]
    regions = vertebrae + [_spine_total(included, exp_t)]
    if len(included) == 4:
        regions.append(_spine_total(included[1:], exp_t))
    hip_sites = [m.NECK, m.TROCH, m.INTER, m.WARDS, m.TOTAL_HIP] if vendor == "hologic" else [m.NECK, m.WARDS, m.TROCH, m.TOTAL_HIP]
    sides = ["L", "R"] if rng.random() < 0.5 else [rng.choice("LR")]
    regions += [_region(s, side, t(), exp_t) for side in sides for s in hip_sites]
    if rng.random() < 0.2:
        side = rng.choice("LR")
        forearm = [m.RADIUS_33, m.RADIUS_UD, m.FOREARM_TOTAL] + ([m.RADIUS_MID] if vendor == "hologic" else [])
        regions += [_region(s, side, t(), exp_t) for s in forearm]
    body = rng.random() < 0.1
    if body:
        regions.append(_region(m.TOTAL_BODY, None, t(), exp_t))
    frax = None
    if age >= 40 and rng.random() < 0.7:
        mof = Decimal(str(round(max(1.0, 8 + 1.5 * (age - 50) / 10 - 6 * base + rng.gauss(0, 2)), 1)))
        hip = Decimal(str(round(max(0.1, float(mof) / 4 + rng.gauss(0, 0.5)), 1)))
        frax = FraxResult(mof, hip, (mof + Decimal("1.5")), (hip + Decimal("0.6")))
    device = rng.choice(_DEVICES[vendor])
    ref_db = "2012 BMDCS/NHANES" if vendor == "hologic" else "USA (Combined NHANES/Lunar)"
    return BmdExam(
        patient_id=str(getattr(header, "PatientID", "")),
        patient_name=str(getattr(header, "PatientName", "")),
        patient_sex=sex,
        patient_birth_date=str(getattr(header, "PatientBirthDate", "")),
        patient_age=age,
        exam_date=str(getattr(header, "StudyDate", "")),
        exam_time=str(getattr(header, "StudyTime", "")),
        accession_number=str(getattr(header, "AccessionNumber", "")),
        study_instance_uid=str(getattr(header, "StudyInstanceUID", "")),
        sop_instance_uid=sr.seeded_uid(rng),
        device=device,
        reference_database=ref_db,
        reference_population="White Female" if sex == "F" or vendor == "ge" else "White Male",
        regions=tuple(regions),
        frax=frax,
        has_vfa=rng.random() < 0.2,
        has_body_composition=body,
        layout=HOLOGIC_LAYOUT if vendor == "hologic" else GE_LAYOUT,
    )


def exam_header(exam: BmdExam) -> Dataset:
    """The patient/study attributes of ``exam`` as a header dataset."""
    h = Dataset()
    h.PatientID = exam.patient_id
    h.PatientName = exam.patient_name
    h.PatientBirthDate = exam.patient_birth_date
    h.PatientSex = exam.patient_sex
    h.StudyInstanceUID = exam.study_instance_uid
    h.AccessionNumber = exam.accession_number
    h.StudyDate = exam.exam_date
    h.StudyTime = exam.exam_time
    if exam.patient_age is not None:
        h.PatientAge = f"{exam.patient_age:03d}Y"
    return h


def _device_attrs(d: Device) -> dict[str, str]:
    return {
        "Manufacturer": d.manufacturer,
        "ManufacturerModelName": d.model,
        "DeviceSerialNumber": d.serial,
        "SoftwareVersions": d.software,
    }


# -- Hologic -----------------------------------------------------------------
_HOLOGIC_COLUMNS = (
    ("Area[cm&sup2;]", "area"),
    ("BMC[g]", "bmc"),
    ("BMD[g/cm&sup2;]", "bmd"),
    ("T-Score", "t_score"),
    ("PR (%)", "pct_young_adult"),
    ("Z-Score", "z_score"),
    ("AM (%)", "pct_age_matched"),
)
_HOLOGIC_BODY_COLUMNS = ("Fat[g]", "Lean[g]", "Lean+BMC[g]", "Total[g]", "%Fat")
_HOLOGIC_LABELS = {
    m.NECK: "Neck",
    m.TROCH: "Troch",
    m.INTER: "Inter",
    m.WARDS: "Ward&#039;s",
    m.TOTAL_HIP: "Total",
    m.RADIUS_33: "1/3",
    m.RADIUS_MID: "MID",
    m.RADIUS_UD: "UD",
    m.FOREARM_TOTAL: "Total",
    m.TOTAL_BODY: "Total",
}
_SIDE_WORD = {"L": "Left", "R": "Right"}


def _hologic_label(r: RegionResult, spine_total: str) -> str:
    if m.spine_vertebrae(r.site):
        return "Total" if r.site == spine_total else r.site
    label = _HOLOGIC_LABELS[r.site]
    return f"{label} {_SIDE_WORD[r.laterality]}" if r.laterality else label


def _js_table(n: int, header: list[str], rows: list[list[str]]) -> list[str]:
    out = []
    for i, row in enumerate([header, *rows]):
        out += [f'ResultsTable{n}[ {i}][ {j}] = "{v}";' for j, v in enumerate(row)]
    return out


def hologic_text(exam: BmdExam) -> str:
    """The (0019,xx00) text of a Hologic APEX result for ``exam``."""
    groups: dict[str, list[RegionResult]] = {SPINE: [], HIP: [], FOREARM: [], BODY: []}
    for r in exam.regions:
        groups[c.scan_of_site(r.site)].append(r)
    lines = [
        f'Age = "{exam.patient_age if exam.patient_age is not None else ""}";',
        f'PatientSex = "{exam.patient_sex}";',
        'Ethnicity = "White";',
        f'DOB = "{exam.patient_birth_date}";',
        'ScanMode = "Express (5.8&micro;Gy)";',
        f'ReferenceDatabase = "{exam.reference_database}";',
        f'ReferencePopulation = "{exam.reference_population}";',
        'TableNote1 = "ACF = 1.033, BCF = 1.007, TH = 6.340";',
    ]
    excluded = [r.site for r in groups[SPINE] if r.excluded]
    # "Total" is the total over the vertebrae not excluded
    included = [int(r.site[1]) for r in groups[SPINE] if r.site in m.VERTEBRAE and not r.excluded]
    spine_total = m.spine_site(included) if included else ""
    if excluded:
        lines.append(f'ExcludedVertebrae = "{",".join(excluded)}";')
    if exam.has_vfa:
        lines.append('IVA = "Yes";')
    if exam.frax is not None:
        for key, value in (
            ("FRAXMajor", exam.frax.major_with_bmd),
            ("FRAXHip", exam.frax.hip_with_bmd),
            ("FRAXMajorNoBMD", exam.frax.major_without_bmd),
            ("FRAXHipNoBMD", exam.frax.hip_without_bmd),
        ):
            if value is not None:
                lines.append(f'{key} = "{value}";')
    n = 0
    for scan in (SPINE, HIP, FOREARM, BODY):
        regs = groups[scan]
        if not regs:
            continue
        n += 1
        header = ["Region"] + [label for label, _ in _HOLOGIC_COLUMNS]
        if scan == BODY and exam.has_body_composition:
            header += list(_HOLOGIC_BODY_COLUMNS)
        rows = []
        for r in regs:
            row = [_hologic_label(r, spine_total)] + [_fmt(getattr(r, f)) for _, f in _HOLOGIC_COLUMNS]
            if scan == BODY and exam.has_body_composition:
                row += ["24012.3", "38011.2", "40233.1", "64245.4", "37.4"]
                rows.append(["Head"] + [""] * (len(row) - 1))
            rows.append(row)
        if scan == HIP and {r.laterality for r in regs} == {"L", "R"}:
            rows.append(["Neck Mean"] + [""] * len(_HOLOGIC_COLUMNS))
            rows.append(["Neck |Diff.|"] + [""] * len(_HOLOGIC_COLUMNS))
        lines += _js_table(n, header, rows)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<HologicHeader1>\n"
        f"  <ScanDate>{exam.exam_date}</ScanDate>\n"
        f"  <Software>{exam.device.software}</Software>\n"
        "</HologicHeader1>\n"
        "<JavaScriptFile>\n" + "\n".join(lines) + "\n</JavaScriptFile>\n"
    )


def _series_uid(exam: BmdExam) -> str:
    return generate_uid(entropy_srcs=["series", exam.sop_instance_uid])


def _fmt(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def hologic_sr(exam: BmdExam, *, series_uid: str = "", text: str | None = None) -> Dataset:
    """An APEX-style Enhanced SR carrying ``exam`` (or ``text``) in (0019,xx00)."""
    ds = sr.sr_document(
        exam_header(exam),
        sop_class=sr.ENHANCED_SR,
        series_uid=series_uid or _series_uid(exam),
        sop_uid=exam.sop_instance_uid,
        title=c.STUDY_REPORT,
        content=[sr.text(("121071", "DCM", "Finding"), "Results in Hologic private data.")],
        device=_device_attrs(exam.device),
    )
    block = ds.private_block(0x0019, "HOLOGIC", create=True)
    block.add_new(0x00, "OB", (hologic_text(exam) if text is None else text).encode("utf-8"))
    return ds


# -- GE Lunar ----------------------------------------------------------------
def _ge_region(r: RegionResult) -> Dataset:
    label = r.site if m.spine_vertebrae(r.site) else c.GE_REGION_LABELS[r.site]
    items = []
    for measure, (concept, unit) in c.GE_MEASURES.items():
        value = getattr(r, measure)
        if value is not None:
            items.append(sr.num(concept, value, unit))
    if r.excluded:
        items.append(sr.text(c.GE_EXCLUDED, "Yes"))
    return sr.container((label.upper().replace(" ", ""), c.GE, label), items)


def ge_content(exam: BmdExam) -> list[Dataset]:
    """The content tree under the "DXA Report" root for ``exam``."""
    content = [
        sr.text(c.GE_REFERENCE_DB, exam.reference_database),
        sr.text(c.GE_REFERENCE_POP, exam.reference_population),
    ]
    scans: dict[tuple[str, str | None], list[Dataset]] = {}
    for r in exam.regions:
        scan = c.scan_of_site(r.site)
        scans.setdefault((scan, r.laterality if scan in (HIP, FOREARM) else None), []).append(_ge_region(r))
    for key, items in scans.items():
        content.append(sr.container(c.GE_SCANS[key], items))
    if exam.has_vfa:
        content.append(sr.container(c.GE_VFA, [sr.text(("COMMENT", c.GE, "Comment"), "LVA acquired")]))
    if exam.frax is not None:
        items = [
            sr.num(c.GE_FRAX_ITEMS[f.name], getattr(exam.frax, f.name), c.PERCENT)
            for f in dataclasses.fields(FraxResult)
            if getattr(exam.frax, f.name) is not None
        ]
        content.append(sr.container(c.GE_FRAX, items))
    if exam.has_body_composition:
        content.append(
            sr.container(
                ("COMPOSITION", c.GE, "Body Composition"),
                [sr.num(("FAT", c.GE, "Fat Mass"), "24012", c.GRAM), sr.num(("LEAN", c.GE, "Lean Mass"), "38011", c.GRAM)],
            )
        )
    return content


def ge_sr(exam: BmdExam, *, series_uid: str = "") -> Dataset:
    """An enCORE-style Enhanced SR for ``exam`` (layout: :mod:`codes`)."""
    return sr.sr_document(
        exam_header(exam),
        sop_class=sr.ENHANCED_SR,
        series_uid=series_uid or _series_uid(exam),
        sop_uid=exam.sop_instance_uid,
        title=c.GE_ROOT,
        content=ge_content(exam),
        device=_device_attrs(exam.device),
    )


def build_bmd_sr(vendor: str, header: Dataset, rng: random.Random) -> Dataset:
    """A complete vendor BMD SR for the patient/study in ``header``.

    ``vendor`` is "hologic" or "ge"; the same seed gives the same dataset.
    """
    exam = random_exam(vendor, header, rng)
    series_uid = sr.seeded_uid(rng)
    ds = hologic_sr(exam, series_uid=series_uid) if vendor == "hologic" else ge_sr(exam, series_uid=series_uid)
    if "PatientAge" in header:
        ds.PatientAge = header.PatientAge
    elif "PatientAge" in ds:
        del ds.PatientAge
    return ds


# -- Dose SR -----------------------------------------------------------------
def dose_sr(header: Dataset, dose: DoseRecord, *, sop_uid: str, series_uid: str, device: Device = Device()) -> Dataset:
    """An X-Ray Radiation Dose SR (PS3.16 TID 10001) for a DXA procedure."""
    accumulated = []
    if dose.dap is not None:
        accumulated.append(sr.num(c.DAP_TOTAL, dose.dap, c.GY_M2))
    if dose.dose_rp_total is not None:
        accumulated.append(sr.num(c.DOSE_RP_TOTAL, dose.dose_rp_total, c.GY))
    content = [
        sr.coded(c.PROCEDURE_REPORTED, c.DXA_PROCEDURE, "HAS CONCEPT MOD"),
        sr.container(c.ACCUMULATED_DOSE, accumulated),
    ]
    ds = sr.sr_document(
        header,
        sop_class=sr.XRAY_DOSE_SR,
        series_uid=series_uid,
        sop_uid=sop_uid,
        title=c.DOSE_TITLE,
        content=content,
        device=_device_attrs(device),
        series_number=999,
    )
    ds.ContentTemplateSequence = [Dataset()]
    ds.ContentTemplateSequence[0].MappingResource = "DCMR"
    ds.ContentTemplateSequence[0].TemplateIdentifier = "10001"
    return ds


def build_dose_sr(header: Dataset, rng: random.Random) -> Dataset:
    """A plausible DXA dose SR: DAP of order 1e-6 Gy.m2, Dose (RP) of µGy."""
    dap = Decimal(str(round(rng.uniform(0.5, 6.0), 2))) * Decimal("1E-6")
    rp = Decimal(str(round(rng.uniform(2.0, 40.0), 1))) * Decimal("1E-6")
    sop, series = sr.seeded_uid(rng), sr.seeded_uid(rng)
    record = DoseRecord(dap=dap, dap_units="Gy.m2", dose_rp_total=rp, dose_rp_units="Gy", source="rdsr")
    return dose_sr(header, record, sop_uid=sop, series_uid=series, device=rng.choice(_DEVICES["hologic"] + _DEVICES["ge"]))


# -- report images carrying the results ------------------------------------------------
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# (scan type, side) -> Hologic AnalProtocol and ScanMode (docs/domain.md section 2: "f Left Hip").
_HOLOGIC_SCANS = {
    (SPINE, None): ("Spine", "x Lumbar Spine"),
    (HIP, "L"): ("Hip", "f Left Hip"),
    (HIP, "R"): ("Hip", "f Right Hip"),
    (HIP, None): ("Hip", "f Hip"),
    (FOREARM, "L"): ("Left Forearm", "f Left Forearm"),
    (FOREARM, "R"): ("Right Forearm", "f Right Forearm"),
    (BODY, None): ("Whole Body", "a Whole Body"),
}


def scans_of(exam: BmdExam) -> dict[tuple[str, str | None], list[RegionResult]]:
    """The exam's regions grouped by scan (spine; hip and forearm per side; body)."""
    out: dict[tuple[str, str | None], list[RegionResult]] = {}
    for r in exam.regions:
        scan = c.scan_of_site(r.site)
        out.setdefault((scan, r.laterality if scan in (HIP, FOREARM) else None), []).append(r)
    return out


def hologic_scan_text(exam: BmdExam, scan: tuple[str, str | None], regions: list[RegionResult], *, frax: bool = False) -> str:
    """The (0019,xx00) text of one APEX report image: one scan, row labels without a side."""
    protocol, mode = _HOLOGIC_SCANS[scan]
    lines = [
        f'Age = "{exam.patient_age if exam.patient_age is not None else ""}";',
        f'AnalProtocol = "{protocol}";',
        f'ScanMode = "{mode}";',
        f'ReferenceDatabase = "{exam.reference_database}";',
        f'ReferencePopulation = "{exam.reference_population}";',
        'TableNote1 = "Total BMD CV 1.0%, ACF = 1.045, BCF = 1.022, TH = 10.126";',
    ]
    spine_total = ""
    if scan[0] == SPINE:
        excluded = [r.site for r in regions if r.excluded]
        included = [int(r.site[1]) for r in regions if r.site in m.VERTEBRAE and not r.excluded]
        spine_total = m.spine_site(included) if included else ""
        if excluded:
            lines.append(f'ExcludedVertebrae = "{",".join(excluded)}";')
    if frax and exam.frax is not None:
        for key, value in (("FRAXMajor", exam.frax.major_with_bmd), ("FRAXHip", exam.frax.hip_with_bmd),
                           ("FRAXMajorNoBMD", exam.frax.major_without_bmd), ("FRAXHipNoBMD", exam.frax.hip_without_bmd)):  # fmt: skip
            if value is not None:
                lines.append(f'{key} = "{value}";')
    header = ["Region"] + [label for label, _ in _HOLOGIC_COLUMNS]
    rows = [[_hologic_label(dataclasses.replace(r, laterality=None), spine_total)] + [_fmt(getattr(r, f)) for _, f in _HOLOGIC_COLUMNS] for r in regions]
    lines += _js_table(1, header, rows)
    body = "\r\n".join(lines)
    return (
        "<HologicHeader1>\r\n<Institution>DXA service</Institution>\r\n<GeneralData>\r\n"
        f"<ScanDate>{exam.exam_date}</ScanDate>\r\n</GeneralData>\r\n</HologicHeader1>\r\n"
        '<JavaScriptFile, filetype=3, filename="C:\\QDR\\qdrdicom\\html2\\Results.js">\r\n' + body + "\r\n</JavaScriptFile>\r\n"
    )


def _report_image(exam: BmdExam, *, sop_uid: str, series_uid: str, number: int, modality: str, laterality: str | None, protocol: str) -> Dataset:
    """A small Secondary Capture report image (PS3.3 A.8.1) with ``exam``'s header."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for kw in sr.HEADER_KEYWORDS:
        setattr(ds, kw, getattr(exam_header(exam), kw, "") or "")
    if exam.patient_age is not None:
        ds.PatientAge = f"{exam.patient_age:03d}Y"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.ConversionType = "WSD"
    for kw, value in _device_attrs(exam.device).items():
        setattr(ds, kw, value)
    ds.BodyPartExamined = "LSPINE"  # as one site sent it on hip series too (docs/domain.md section 2)
    ds.ProtocolName = protocol
    ds.SeriesDescription = protocol
    if laterality:
        ds.Laterality = laterality
    ds.ContentDate, ds.ContentTime = exam.exam_date, exam.exam_time
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(8 * 8 * 3)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _image_uids(exam: BmdExam, i: int) -> tuple[str, str]:
    return (generate_uid(entropy_srcs=["image", exam.sop_instance_uid, str(i)]), generate_uid(entropy_srcs=["image-series", exam.sop_instance_uid, str(i)]))


def hologic_report_images(exam: BmdExam, *, modality: str = "OT") -> list[Dataset]:
    """APEX report images carrying ``exam``: one per scan, results text in (0019,1000).

    Modality ``OT`` (``BD`` at one site), Laterality on hip and forearm
    series, the side only in AnalProtocol/ScanMode and Laterality, never in
    the row labels (docs/domain.md section 2).  FRAX goes with the first image.
    """
    out = []
    for i, (scan, regions) in enumerate(scans_of(exam).items()):
        sop, series = _image_uids(exam, i)
        ds = _report_image(exam, sop_uid=sop, series_uid=series, number=i + 1, modality=modality, laterality=scan[1], protocol=_HOLOGIC_SCANS[scan][1][2:])
        block = ds.private_block(0x0019, "HOLOGIC", create=True)
        block.add_new(0x00, "OB", hologic_scan_text(exam, scan, regions, frax=i == 0).encode("utf-8"))
        out.append(ds)
    return out


_GE_XML_UNITS = {"bmd": " g/cm2", "bmc": " g", "area": " cm2", "pct_young_adult": "%", "pct_age_matched": "%"}
_GE_XML_TAGS = {"bmd": "BMD", "pct_young_adult": "BMD_PYA", "t_score": "BMD_TSCORE", "pct_age_matched": "BMD_PAM", "z_score": "BMD_ZSCORE", "bmc": "BMC", "area": "AREA"}


def ge_results_xml(exam: BmdExam, scan: tuple[str, str | None], regions: list[RegionResult]) -> str:
    """The newer enCORE Image Comments XML for one scan (docs/domain.md section 2)."""
    from xml.sax.saxutils import quoteattr

    d = exam.exam_date
    rois = []
    for r in regions:
        label = r.site if m.spine_vertebrae(r.site) else c.GE_REGION_LABELS[r.site]
        values = "".join(
            f"<{tag} units={quoteattr(_GE_XML_UNITS[k])}>{getattr(r, k)}</{tag}>" if k in _GE_XML_UNITS else f"<{tag}>{getattr(r, k)}</{tag}>"
            for k, tag in _GE_XML_TAGS.items() if getattr(r, k) is not None
        )  # fmt: skip
        rois.append(f"<ROI region={quoteattr(label)}>{values}</ROI>")
    scan_type = c.GE_SCANS[scan][2]
    return f"<DXA_RESULTS><EXAM_DATE>{d[6:8]}/{d[4:6]}/{d[:4]}</EXAM_DATE><SCAN type={quoteattr(scan_type)}>{''.join(rois)}</SCAN></DXA_RESULTS>"


def ge_report_images(exam: BmdExam) -> list[Dataset]:
    """enCORE images carrying ``exam`` as XML in Image Comments (0020,4000), one per scan."""
    out = []
    for i, (scan, regions) in enumerate(scans_of(exam).items()):
        sop, series = _image_uids(exam, i)
        ds = _report_image(exam, sop_uid=sop, series_uid=series, number=i + 1, modality="OT", laterality=scan[1], protocol=c.GE_SCANS[scan][2])
        ds.ImageComments = ge_results_xml(exam, scan, regions)
        out.append(ds)
    return out
