"""BMD results -> HL7 v2.5.1 ORU^R01 (ER7, segments separated by CR).

MSH, PID, PV1, ORC, OBR (panel 83311-1; ORC-2/OBR-2 the order's placer
number, ORC-3/OBR-3 the filler number, OBR-16 the ordering provider,
OBR-18 accession, OBR-25 result status -- ``C`` for an amendment --, OBR-32
the principal result interpreter), then OBX TX lines of the report text
(38269-7), OBX NM per region for BMD / T-score / Z-score (LOINC where one
exists -- the lumbar-spine codes on the spine total the diagnosis used,
vertebrae named --, always a local code naming the site; UCUM units
``g/cm2``, ``1``), OBX NM for FRAX (90265-0, 90266-8), the radiation dose
(DCM 113722 DAP total, 113725 dose (RP) total, entrance dose; units as
recorded, UCUM) and changes since
the previous exam, and OBX CWE for the diagnostic category (local code,
SNOMED CT beside it where one fits).  Every value is escaped (HL7 v2.5
section 2.7: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\).  The timestamp comes from ``ctx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mappings.bmd import codes as c
from mappings.bmd.classify import Classification
from mappings.bmd.compare import Comparison
from mappings.bmd.models import BmdExam
from mappings.bmd.report import status_code
from hl7v2.er7 import components, message, segment, subcomponents
from hl7v2.escaping import escape

VERSION = "2.5.1"
LOCAL = "99DXAGW"
CATEGORY_CODE = ("DXA-CATEGORY", LOCAL, "DXA diagnostic category")


@dataclass(frozen=True, slots=True)
class OruContext:
    """Message envelope and order identifiers; demographics default to the exam's."""

    message_control_id: str
    timestamp: str  # HL7 DTM, e.g. 20240501101500
    sending_application: str = "DXA-GATEWAY"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    placer_order_number: str = ""
    filler_order_number: str = ""
    result_status: str = "P"  # P preliminary, F final, C corrected (HL7 Table 0123)
    patient_id: str = ""
    patient_id_authority: str = ""
    patient_name: str = ""  # DICOM PN Family^Given^Middle^Prefix^Suffix
    birth_date: str = ""
    sex: str = ""
    processing_id: str = "P"
    charset: str = "UNICODE UTF-8"
    ordering_provider: str = ""  # DICOM PN of the order's requesting / referring clinician
    interpreter: str = ""  # the reporting clinician (name as signed)
    interpreter_id: str = ""  # their identifier, when the identity provider gives one
    interpreted_at: str = ""  # HL7 DTM of the signature


def _ce(code: tuple[str, str, str], alt: tuple[str, str, str] | None = None) -> str:
    """CWE: identifier^text^coding system[^alternate identifier^text^system]."""
    parts = [code[0], code[2], code[1]] + ([alt[0], alt[2], alt[1]] if alt else [])
    return components(*parts)


def _xcn(pn: str) -> str:
    """DICOM PN (Family^Given^Middle^Prefix^Suffix) -> XCN (id^family^given^middle^suffix^prefix)."""
    c = (pn.split("^") + [""] * 5)[:5]
    return components("", c[0], c[1], c[2], c[4], c[3])


def _ndl(name: str, ident: str, when: str) -> str:
    """NDL for OBR-32: CNN (id&family&given) ^ start date/time (HL7 v2.5.1 2.A.47)."""
    parts = name.split("^") if "^" in name else [name]
    cnn = subcomponents(ident, *parts[:2])
    return "^".join(x for x in (cnn, escape(when)) if x) if cnn else ""


def _obx_nm(set_id: int, ident: str, sub_id: str, value: str, unit: tuple[str, str, str], status: str, when: str) -> str:
    return segment("OBX", {1: str(set_id), 2: "NM", 3: ident, 4: sub_id, 5: escape(value), 6: _ce(unit), 11: status, 14: when})


def build_oru_r01(
    exam: BmdExam,
    classification: Classification,
    comparison: Comparison | None,
    report_text: str,
    ctx: OruContext,
) -> str:
    """The ORU^R01 message text (segments joined by ``\\r``)."""
    status = status_code(ctx.result_status)
    when = (exam.exam_date + exam.exam_time.split(".")[0])[:14]
    msh = segment(
        "MSH",
        {3: components(ctx.sending_application), 4: components(ctx.sending_facility), 5: components(ctx.receiving_application),
         6: components(ctx.receiving_facility), 7: escape(ctx.timestamp), 9: "ORU^R01^ORU_R01", 10: escape(ctx.message_control_id),
         11: escape(ctx.processing_id), 12: VERSION, 18: escape(ctx.charset)},
    )  # fmt: skip
    name = (ctx.patient_name or exam.patient_name).split("^")
    pid = segment(
        "PID",
        {
            1: "1",
            3: components(ctx.patient_id or exam.patient_id, "", "", ctx.patient_id_authority, "MR" if ctx.patient_id_authority else ""),
            5: components(*name[:5]),
            7: escape(ctx.birth_date or exam.patient_birth_date),
            8: escape(ctx.sex or exam.patient_sex),
        },
    )
    segments = [msh, pid, segment("PV1", {1: "1", 2: "O"})]
    segments.append(
        segment("ORC", {1: "RE", 2: components(ctx.placer_order_number), 3: components(ctx.filler_order_number), 5: "CM"})
    )
    segments.append(
        segment(
            "OBR",
            {
                1: "1",
                2: components(ctx.placer_order_number),
                3: components(ctx.filler_order_number),
                4: _ce(c.PANEL),
                7: when,
                16: _xcn(ctx.ordering_provider) if ctx.ordering_provider else "",
                18: escape(exam.accession_number),
                22: escape(ctx.timestamp),
                24: "RAD",
                25: status,
                32: _ndl(ctx.interpreter, ctx.interpreter_id, ctx.interpreted_at) if ctx.interpreter else "",
            },
        )
    )
    obx: list[str] = []

    def add(line: str) -> None:
        obx.append(line)

    lines = report_text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in lines:
        add(segment("OBX", {1: "", 2: "TX", 3: _ce(c.STUDY_REPORT), 4: "1", 5: escape(line), 11: status, 14: when}))
    spine = classification.spine.site if classification.spine is not None else None
    for k, r in enumerate(exam.regions, start=1):
        loinc = c.loinc_codes(r.site, r.laterality, spine)
        for measure in ("bmd", "t_score", "z_score"):
            value = getattr(r, measure)
            if value is None:
                continue
            local = c.local_code(r.site, r.laterality, measure)
            ident = _ce((loinc[measure], c.LOINC, f"{r.name} {c.MEASURE_NAMES[measure]}"), local) if measure in loinc else _ce(local)
            unit = (c.MEASURE_UNITS[measure], "UCUM", c.MEASURE_UNITS[measure])
            add(_obx_nm(0, ident, str(k), str(value), unit, status, when))
    if exam.frax is not None:
        for code, value in c.frax_items(exam.frax):
            add(_obx_nm(0, _ce(code), "1", str(value), c.PERCENT, status, when))
    if exam.dose is not None:  # the exam's radiation dose (PS3.16 TID 10001 concepts; IR(ME)R record)
        d = exam.dose
        for measure, value, unit in (("dap", d.dap, d.dap_units), ("dose_rp_total", d.dose_rp_total, d.dose_rp_units), ("entrance_dose", d.entrance_dose, d.entrance_dose_units)):
            if value is not None:
                # HL7 NM is an optional sign, digits and a point: never an exponent (9.5E-7)
                text = format(Decimal(str(value)), "f")
                add(_obx_nm(0, _ce(c.DOSE_CODES[measure]), "1", text, (unit or "1", "UCUM", unit or "1"), status, when))
    if comparison is not None and comparison.comparable:
        for k, ch in enumerate(comparison.changes, start=1):
            local = (f"{ch.laterality + '.' if ch.laterality else ''}{ch.site}.bmd_change_pct", LOCAL, f"{ch.name} BMD change since previous")
            add(_obx_nm(0, _ce(local), str(k), str(ch.change_percent), c.PERCENT, status, when))
    category = (classification.category, LOCAL, classification.category_text)
    sct = c.CATEGORY_SCT.get(classification.category)
    alt = (sct[0], "SCT", sct[1]) if sct else None
    add(segment("OBX", {1: "", 2: "CWE", 3: _ce(CATEGORY_CODE), 4: "1", 5: _ce(category, alt), 11: status, 14: when}))
    # OBX-1 Set ID numbers the OBX segments of the order from 1
    for n, seg in enumerate(obx, start=1):
        name_, _set, rest = seg.split("|", 2)
        segments.append(f"{name_}|{n}|{rest}")
    return message(segments, terminated=False)
