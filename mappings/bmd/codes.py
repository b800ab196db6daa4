"""Coded concepts: the GE Lunar sample layout, dose SR, and output LOINC codes.

GE Lunar layout (**uncertain**): no real GE BMD SR is public (docs/domain.md
section 2).  The sample layout follows what a public project reports: an
Enhanced SR whose root container is named "DXA Report", with one container
per scan ("AP Spine", "Left Femur"...), one per region named by the printed
label ("L1-L4", "Neck"), holding NUM items named "BMD", "YA T-score",
"AM Z-score"...  The codes below are private ("99LUNAR", PS3.16 8.2 private
coding scheme designator) and invented; the parsers match the code meaning
through :mod:`mappings.bmd.labels` first, so real codes can differ as long
as the meanings are the printed labels.  Z-score uses the one standard code
that exists, (113071, DCM).
"""

from __future__ import annotations

from mappings.bmd import models as m
from mappings.bmd.labels import BODY, FOREARM, HIP, SPINE

Code = tuple[str, str, str]  # (value, scheme, meaning)

GE = "99LUNAR"
GE_ROOT: Code = ("DXA-REPORT", GE, "DXA Report")
GE_SCANS: dict[tuple[str, str | None], Code] = {
    (SPINE, None): ("APSPINE", GE, "AP Spine"),
    (HIP, "L"): ("LFEMUR", GE, "Left Femur"),
    (HIP, "R"): ("RFEMUR", GE, "Right Femur"),
    (FOREARM, "L"): ("LFOREARM", GE, "Left Forearm"),
    (FOREARM, "R"): ("RFOREARM", GE, "Right Forearm"),
    (BODY, None): ("TOTALBODY", GE, "Total Body"),
}
GE_VFA: Code = ("LVA", GE, "LVA")
GE_FRAX: Code = ("FRAX", GE, "FRAX")
GE_REGION_LABELS = {
    m.NECK: "Neck",
    m.TOTAL_HIP: "Total",
    m.TROCH: "Troch",
    m.WARDS: "Wards",
    m.INTER: "Inter",
    m.RADIUS_33: "Radius 33%",
    m.RADIUS_MID: "Radius MID",
    m.RADIUS_UD: "Radius UD",
    m.FOREARM_TOTAL: "Radius Total",
    m.TOTAL_BODY: "Total",
}
UCUM = "UCUM"
G_CM2: Code = ("g/cm2", UCUM, "g/cm2")
GRAM: Code = ("g", UCUM, "g")
CM2: Code = ("cm2", UCUM, "cm2")
ONE: Code = ("1", UCUM, "1")
PERCENT: Code = ("%", UCUM, "%")
# measure -> (concept, unit)
GE_MEASURES: dict[str, tuple[Code, Code]] = {
    "bmd": (("BMD", GE, "BMD"), G_CM2),
    "bmc": (("BMC", GE, "BMC"), GRAM),
    "area": (("AREA", GE, "Area"), CM2),
    "t_score": (("YA-TSCORE", GE, "YA T-score"), ONE),
    "z_score": (("113071", "DCM", "AM Z-score"), ONE),
    "pct_young_adult": (("YA-PCT", GE, "YA %"), PERCENT),
    "pct_age_matched": (("AM-PCT", GE, "AM %"), PERCENT),
}
GE_FRAX_ITEMS: dict[str, Code] = {
    "major_with_bmd": ("FRAX-MOF", GE, "Major Osteoporotic Fracture"),
    "hip_with_bmd": ("FRAX-HIP", GE, "Hip Fracture"),
    "major_without_bmd": ("FRAX-MOF-NB", GE, "Major Osteoporotic Fracture (no BMD)"),
    "hip_without_bmd": ("FRAX-HIP-NB", GE, "Hip Fracture (no BMD)"),
}
GE_REFERENCE_DB: Code = ("REFDB", GE, "Reference Database")
GE_REFERENCE_POP: Code = ("REFPOP", GE, "Reference Population")
GE_EXCLUDED: Code = ("EXCLUDED", GE, "Excluded")

# X-Ray Radiation Dose SR, TID 10001 (PS3.16)
DOSE_TITLE: Code = ("113701", "DCM", "X-Ray Radiation Dose Report")
PROCEDURE_REPORTED: Code = ("121058", "DCM", "Procedure reported")
DXA_PROCEDURE: Code = ("241686001", "SCT", "Dual energy X-Ray absorptiometry")  # CID 10005
ACCUMULATED_DOSE: Code = ("113702", "DCM", "Accumulated X-Ray Dose Data")
DAP_TOTAL: Code = ("113722", "DCM", "Dose Area Product Total")
DOSE_RP_TOTAL: Code = ("113725", "DCM", "Dose (RP) Total")
GY_M2: Code = ("Gy.m2", UCUM, "Gy.m2")
GY: Code = ("Gy", UCUM, "Gy")

# Output: LOINC (docs/domain.md section 3).  Only sites with an agreed code get one;
# US Core maps femoral neck to "Femur" and total hip to "Hip".  No neck- or
# 33%-radius-specific LOINC is known (uncertain).
LOINC = "LN"
PANEL: Code = ("83311-1", LOINC, "DXA Bone density quantitative measurement panel")
STUDY_REPORT: Code = ("38269-7", LOINC, "DXA Bone density Study report")
FRAX_MAJOR: Code = ("90265-0", LOINC, "FRAX 10-year major osteoporotic fracture probability")
FRAX_HIP: Code = ("90266-8", LOINC, "FRAX 10-year hip fracture probability")
RADIOLOGY_CATEGORY: Code = ("LP29684-5", LOINC, "Radiology")
# FRAX without BMD: the LOINC codes do not say whether BMD was used, so the
# without-BMD figures go under local codes (the with-BMD ones under LOINC).
FRAX_MAJOR_NO_BMD: Code = ("frax_major_without_bmd", "99DXAGW", "FRAX 10-year major osteoporotic fracture probability without BMD")
FRAX_HIP_NO_BMD: Code = ("frax_hip_without_bmd", "99DXAGW", "FRAX 10-year hip fracture probability without BMD")


def frax_items(frax) -> list[tuple[Code, object]]:
    """(code, value) of every FRAX figure given: with BMD under LOINC, without under local codes."""
    pairs = [
        (FRAX_MAJOR, frax.major_with_bmd), (FRAX_HIP, frax.hip_with_bmd),
        (FRAX_MAJOR_NO_BMD, frax.major_without_bmd), (FRAX_HIP_NO_BMD, frax.hip_without_bmd),
    ]  # fmt: skip
    return [(code, value) for code, value in pairs if value is not None]

# (site, laterality) -> {measure: LOINC code}
_SPINE = {"bmd": "24966-4", "t_score": "38267-1", "z_score": "85394-5"}
_HIP = {"bmd": "38261-4", "t_score": "38264-8", "z_score": "80933-5"}
_HIP_L = {"bmd": "46278-8", "t_score": "80946-7", "z_score": "80938-4"}
_HIP_R = {"bmd": "46279-6", "t_score": "80945-9", "z_score": "80937-6"}
_FEMUR = {"bmd": "24701-5", "t_score": "38263-0", "z_score": "80934-3"}
_FEMUR_L = {"bmd": "80954-1", "t_score": "80948-3", "z_score": "80940-0"}
_FEMUR_R = {"bmd": "80953-3", "t_score": "80947-5", "z_score": "80939-2"}
_RADIUS = {"bmd": "24890-6", "t_score": "38265-5", "z_score": "80932-7"}
# Radius and Ulna - left / right (the OHDSI LOINC listing docs/domain.md section 3 draws on)
_RADIUS_L = {"bmd": "80952-5", "t_score": "80944-2", "z_score": "80936-8"}
_RADIUS_R = {"bmd": "80951-7", "t_score": "80943-4", "z_score": "80935-0"}
LOINC_BY_SITE: dict[tuple[str, str | None], dict[str, str]] = {
    ("L1-L4", None): _SPINE,
    (m.TOTAL_HIP, None): _HIP,
    (m.TOTAL_HIP, "L"): _HIP_L,
    (m.TOTAL_HIP, "R"): _HIP_R,
    (m.NECK, None): _FEMUR,
    (m.NECK, "L"): _FEMUR_L,
    (m.NECK, "R"): _FEMUR_R,
    (m.RADIUS_33, None): _RADIUS,
    (m.RADIUS_33, "L"): _RADIUS_L,
    (m.RADIUS_33, "R"): _RADIUS_R,
}
def loinc_codes(site: str, laterality: str | None, diagnostic_spine: str | None) -> dict[str, str]:
    """LOINC codes of a region's measures.  The lumbar-spine codes go on the
    spine total the diagnosis used (``diagnostic_spine``, e.g. ``L1,L2,L4``),
    and on no other spine total: the coded result is what the diagnosis used."""
    if len(m.spine_vertebrae(site)) > 1 or site == m.SPINE_TOTAL:
        return dict(_SPINE) if site == diagnostic_spine else {}
    return LOINC_BY_SITE.get((site, laterality), {})


# WHO category: SNOMED CT beside the local code, where a disorder concept fits.
# Normal, the Z-score ranges and "no category" have no agreed concept: local only.
CATEGORY_SCT: dict[str, tuple[str, str]] = {
    "osteopenia": ("312894000", "Osteopenia (disorder)"),
    "osteoporosis": ("64859006", "Osteoporosis (disorder)"),
    "established_osteoporosis": ("443165006", "Pathological fracture due to osteoporosis (disorder)"),
}

# Dose (DICOM PS3.16 CID 10050 / TID 10001 concepts)
DCM_URL = "http://dicom.nema.org/resources/ontology/DCM"
DOSE_CODES = {
    "dap": ("113722", "DCM", "Dose Area Product Total"),
    "dose_rp_total": ("113725", "DCM", "Dose (RP) Total"),
    "entrance_dose": ("entrance_dose", "99DXAGW", "Entrance dose"),
}

MEASURE_NAMES = {"bmd": "BMD", "t_score": "T-score", "z_score": "Z-score"}
MEASURE_UNITS = {"bmd": "g/cm2", "t_score": "1", "z_score": "1"}

# SNOMED CT body sites (docs/domain.md section 3)
SCT = "http://snomed.info/sct"
BODY_SITES = {
    SPINE: ("122496007", "Lumbar spine structure"),
    HIP: ("29836001", "Hip region structure"),
    "femur": ("71341001", "Bone structure of femur"),
    FOREARM: ("75129005", "Distal radius"),
    BODY: ("38266002", "Entire body as a whole"),
}


def scan_of_site(site: str) -> str:
    """Scan type (spine, hip, forearm, body) of a site name."""
    if m.spine_vertebrae(site) or site == m.SPINE_TOTAL:
        return SPINE
    if site in m.HIP_SITES:
        return HIP
    if site in m.FOREARM_SITES:
        return FOREARM
    return BODY


def local_code(site: str, laterality: str | None, measure: str) -> Code:
    """The gateway's own code for a site measure, beside LOINC."""
    side = f"{laterality}." if laterality else ""
    return (f"{side}{site}.{measure}", "99DXAGW", f"{m.site_name(site, laterality)} {MEASURE_NAMES.get(measure, measure)}")
