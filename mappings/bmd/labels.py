"""Label and code tables that turn vendor text and SR codes into sites and measures.

All tables are data: :class:`LabelTables` holds them, :meth:`LabelTables.extend`
returns a copy with extra entries (so configuration can add a layout), and
:func:`normalize` is the one way a label is compared (case- and
space-insensitive, HTML entities decoded, units in brackets dropped).
Synonyms follow docs/domain.md section 2 ("Labels to recognise").
"""

from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from mappings.bmd import models as m

SPINE, HIP, FOREARM, BODY = "spine", "hip", "forearm", "body"

_UNITS = re.compile(r"\[[^\]]*\]|\((?:[mk]?g|[cm]m|%)[^)]*\)")
_TAGS = re.compile(r"<[^>]{0,40}>")


def normalize(label: str) -> str:
    """``"BMD[g/cm&sup2;]"`` -> ``"bmd"``; ``"L1 - L4"`` -> ``"l1-l4"``."""
    text = html.unescape(str(label)).replace("\u00a0", " ")
    text = _UNITS.sub(" ", text).lower()
    text = re.sub(r"\s*-\s*", "-", text)
    return " ".join(text.split())


def column_unit(label: str) -> str:
    """The unit printed in a column label, normalized: ``"BMD[g/cm<sup>2</sup>]"`` -> ``"g/cm2"``.

    Markup, entities, brackets, spaces and case are dropped (docs/domain.md
    section 2: ``Area[cm<sup><small>2</small></sup>]``, ``Area[cm&sup2;]``,
    ``BMC[(g)]``); "" when the label names no unit.
    """
    text = _TAGS.sub("", html.unescape(str(label)))
    found = re.search(r"\[(.*)\]", text) or re.search(r"\(([^)]*)\)", text)
    if not found:
        return ""
    unit = found.group(1).strip().strip("()[] ").replace("\u00b2", "2").replace("\u00b3", "3")
    return "".join(unit.split()).lower()


def _freeze(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


# Column / concept labels -> measure (RegionResult field).
MEASURE_LABELS = {
    "bmd": "bmd",
    "bmc": "bmc",
    "area": "area",
    "t-score": "t_score",
    "ya t-score": "t_score",
    "t": "t_score",
    "z-score": "z_score",
    "am z-score": "z_score",
    "z": "z_score",
    "pr": "pct_young_adult",
    "%ya": "pct_young_adult",
    "ya %": "pct_young_adult",
    "ya%": "pct_young_adult",
    "am": "pct_age_matched",
    "%am": "pct_age_matched",
    "am %": "pct_age_matched",
    "am%": "pct_age_matched",
    # Hologic APEX 13 column labels (docs/domain.md section 2)
    "pr (peak reference)": "pct_young_adult",
    "am (age matched)": "pct_age_matched",
    # GE concept names / Image Comments XML elements (docs/domain.md section 2)
    "bmd_tscore": "t_score",
    "bmd_zscore": "z_score",
    "yat": "t_score",
    "amz": "z_score",
    "bmd_pya": "pct_young_adult",
    "bmd_pam": "pct_age_matched",
}

# Body-composition columns: their presence means a body composition result.
BODY_COMPOSITION_LABELS = frozenset({"fat", "lean", "lean+bmc", "%fat", "fat mass", "lean mass"})

# Region labels per scan type.  "Total" means something different per scan.
REGION_LABELS = {
    SPINE: {
        **{f"l{i}": f"L{i}" for i in range(1, 5)},
        **{
            f"l{a}-l{b}": f"L{a}-L{b}" for a in range(1, 5) for b in range(a + 1, 5)
        },
        **{f"l{a}-{b}": f"L{a}-L{b}" for a in range(1, 5) for b in range(a + 1, 5)},
        # non-contiguous totals after an exclusion: "L1,L2,L4" (ISCD 2023)
        **{
            ",".join(f"l{v}" for v in vs): ",".join(f"L{v}" for v in vs)
            for n in (2, 3)
            for vs in itertools.combinations(range(1, 5), n)
            if vs[-1] - vs[0] >= n
        },
        "total": "spine_total",  # resolved to the vertebrae in the table
        "spine total": "spine_total",
    },
    HIP: {
        "neck": m.NECK,
        "femoral neck": m.NECK,
        "total": m.TOTAL_HIP,
        "total hip": m.TOTAL_HIP,
        "total femur": m.TOTAL_HIP,
        "troch": m.TROCH,
        "trochanter": m.TROCH,
        "inter": m.INTER,
        "intertrochanter": m.INTER,
        "ward's": m.WARDS,
        "wards": m.WARDS,
        "ward's triangle": m.WARDS,
    },
    FOREARM: {
        "1/3": m.RADIUS_33,
        "radius 33%": m.RADIUS_33,
        "33%": m.RADIUS_33,
        "radius 1/3": m.RADIUS_33,
        "mid": m.RADIUS_MID,
        "radius mid": m.RADIUS_MID,
        "ud": m.RADIUS_UD,
        "radius ud": m.RADIUS_UD,
        "total": m.FOREARM_TOTAL,
        "radius total": m.FOREARM_TOTAL,
        "forearm total": m.FOREARM_TOTAL,
    },
    BODY: {
        "total": m.TOTAL_BODY,
        "total body": m.TOTAL_BODY,
        # only labels that say so: a Hologic "Subtotal" row is not taken as TBLH
        "total body less head": m.TOTAL_BODY_LESS_HEAD,
        "total less head": m.TOTAL_BODY_LESS_HEAD,
        "tblh": m.TOTAL_BODY_LESS_HEAD,
    },
}

# Labels that, present in a table, tell which scan it belongs to.
SCAN_MARKERS = {
    SPINE: frozenset(f"l{i}" for i in range(1, 6)),
    HIP: frozenset({"neck", "femoral neck", "troch", "trochanter", "inter", "ward's", "wards"}),
    FOREARM: frozenset({"1/3", "ud", "mid", "radius 33%", "radius ud", "radius 1/3"}),
    BODY: frozenset({"head", "trunk", "arms", "legs", "l arm", "r arm", "l leg", "r leg", "subtotal", "tblh", "total body less head"}),
}

# Container / scan names (GE: "AP Spine", "Left Femur"...) -> (scan type, laterality).
SCAN_LABELS = {
    "ap spine": (SPINE, None),
    "lumbar spine": (SPINE, None),
    "ap lumbar spine": (SPINE, None),
    "l-spine": (SPINE, None),
    "lspine": (SPINE, None),
    "dual hip": (HIP, None),
    "dualhip": (HIP, None),
    "spine": (SPINE, None),
    "left femur": (HIP, "L"),
    "right femur": (HIP, "R"),
    "left hip": (HIP, "L"),
    "right hip": (HIP, "R"),
    "femur": (HIP, None),
    "hip": (HIP, None),
    "dualfemur": (HIP, None),
    "dual femur": (HIP, None),
    "left forearm": (FOREARM, "L"),
    "right forearm": (FOREARM, "R"),
    "forearm": (FOREARM, None),
    "total body": (BODY, None),
    "whole body": (BODY, None),
}

# Words in a label that give laterality, and markers of derived dual-hip rows.
LATERALITY_WORDS = {"left": "L", "right": "R", "l": "L", "r": "R"}
DERIVED_ROW_WORDS = frozenset({"mean", "|diff.|", "diff.", "diff", "|diff|", "difference"})

# FRAX labels -> FraxResult field.
FRAX_LABELS = {
    "major osteoporotic fracture": "major_with_bmd",
    "major osteoporotic": "major_with_bmd",
    "fraxmajor": "major_with_bmd",
    "hip fracture": "hip_with_bmd",
    "fraxhip": "hip_with_bmd",
    "major osteoporotic fracture (no bmd)": "major_without_bmd",
    "major osteoporotic fracture without bmd": "major_without_bmd",
    "fraxmajornobmd": "major_without_bmd",
    "hip fracture (no bmd)": "hip_without_bmd",
    "hip fracture without bmd": "hip_without_bmd",
    "fraxhipnobmd": "hip_without_bmd",
}

# Scalars / TEXT items holding exam metadata.
META_LABELS = {
    "reference database": "reference_database",
    "referencedatabase": "reference_database",
    "refdatabase": "reference_database",
    "reference population": "reference_population",
    "referencepopulation": "reference_population",
    "refpopulation": "reference_population",
    "age": "age",
    "excluded": "excluded",
    "excludedvertebrae": "excluded",
    "excludedregions": "excluded",
    "iva": "vfa",
    "vfa": "vfa",
    "lva": "vfa",
}

# SR coded concepts (scheme, value) -> what they stand for.  LOINC site codes
# (docs/domain.md section 3) let the generic parser read a standard-coded SR.
CODE_MEASURES = {
    ("DCM", "113071"): "z_score",  # PS3.16 CID: Z-score
    ("LN", "24966-4"): "bmd",
    ("LN", "38267-1"): "t_score",
    ("LN", "85394-5"): "z_score",
    ("LN", "38261-4"): "bmd",
    ("LN", "38264-8"): "t_score",
    ("LN", "80933-5"): "z_score",
    ("LN", "24701-5"): "bmd",
    ("LN", "38263-0"): "t_score",
    ("LN", "80934-3"): "z_score",
    ("LN", "24890-6"): "bmd",
    ("LN", "38265-5"): "t_score",
    ("LN", "80932-7"): "z_score",
}
# LOINC codes that name the site too: (scheme, value) -> (scan type, region label).
CODE_SITES = {
    ("LN", "24966-4"): (SPINE, "l1-l4"),
    ("LN", "38267-1"): (SPINE, "l1-l4"),
    ("LN", "85394-5"): (SPINE, "l1-l4"),
    ("LN", "38261-4"): (HIP, "total hip"),
    ("LN", "38264-8"): (HIP, "total hip"),
    ("LN", "80933-5"): (HIP, "total hip"),
    ("LN", "24701-5"): (HIP, "femoral neck"),
    ("LN", "38263-0"): (HIP, "femoral neck"),
    ("LN", "80934-3"): (HIP, "femoral neck"),
    ("LN", "24890-6"): (FOREARM, "radius 33%"),
    ("LN", "38265-5"): (FOREARM, "radius 33%"),
    ("LN", "80932-7"): (FOREARM, "radius 33%"),
}
CODE_FRAX = {("LN", "90265-0"): "major_with_bmd", ("LN", "90266-8"): "hip_with_bmd"}
# Laterality concept modifier (PS3.16 TID 300 style) and its values.
LATERALITY_CONCEPTS = frozenset({("SCT", "272741003"), ("SRT", "G-C171"), ("DCM", "272741003")})
LATERALITY_VALUES = {("SCT", "7771000"): "L", ("SCT", "24028007"): "R", ("SRT", "G-A101"): "L", ("SRT", "G-A100"): "R"}


@dataclass(frozen=True, slots=True)
class LabelTables:
    """Every table a parser consults; extend with :meth:`extend`."""

    measures: Mapping[str, str] = field(default_factory=lambda: _freeze(MEASURE_LABELS))
    regions: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: _freeze({k: _freeze(v) for k, v in REGION_LABELS.items()})
    )
    scan_markers: Mapping[str, frozenset] = field(default_factory=lambda: _freeze(SCAN_MARKERS))
    scans: Mapping[str, tuple[str, str | None]] = field(default_factory=lambda: _freeze(SCAN_LABELS))
    frax: Mapping[str, str] = field(default_factory=lambda: _freeze(FRAX_LABELS))
    meta: Mapping[str, str] = field(default_factory=lambda: _freeze(META_LABELS))
    body_composition: frozenset = BODY_COMPOSITION_LABELS
    code_measures: Mapping[tuple[str, str], str] = field(default_factory=lambda: _freeze(CODE_MEASURES))
    code_sites: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=lambda: _freeze(CODE_SITES))
    code_frax: Mapping[tuple[str, str], str] = field(default_factory=lambda: _freeze(CODE_FRAX))

    def extend(self, **extra: Mapping) -> LabelTables:
        """A copy with ``extra`` entries merged in (labels are normalized).

        ``tables.extend(measures={"Densité": "bmd"}, regions={"hip": {"Col": "neck"}})``
        """
        changes = {}
        for name, add in extra.items():
            current = getattr(self, name)
            if name == "regions" or name == "scan_markers":
                merged = {k: (dict(v) if name == "regions" else set(v)) for k, v in current.items()}
                for scan, entries in add.items():
                    if name == "regions":
                        merged.setdefault(scan, {}).update({normalize(k): v for k, v in entries.items()})
                    else:
                        merged.setdefault(scan, set()).update(normalize(k) for k in entries)
                wrap = _freeze if name == "regions" else frozenset
                changes[name] = _freeze({k: wrap(v) for k, v in merged.items()})
            elif name == "body_composition":
                changes[name] = frozenset(current) | {normalize(k) for k in add}
            elif name.startswith("code_"):
                changes[name] = _freeze({**current, **{tuple(k): v for k, v in add.items()}})
            else:
                changes[name] = _freeze({**current, **{normalize(k): v for k, v in add.items()}})
        return replace(self, **changes)

    # -- lookups ---------------------------------------------------------
    def measure(self, label: str) -> str | None:
        return self.measures.get(normalize(label))

    def scan_of(self, labels) -> str | None:
        """The scan type whose marker labels appear among ``labels``."""
        norm = {_strip_side(normalize(x))[0] for x in labels}
        for scan, markers in self.scan_markers.items():
            if norm & markers:
                return scan
        return None

    def region(self, scan: str | None, label: str) -> tuple[str | None, str | None, bool]:
        """(site, laterality, derived) for a region label under ``scan``.

        ``derived`` marks dual-hip Mean / |Diff.| rows, which are not results.
        Without a scan type only labels that mean one thing are accepted.
        """
        text, side, derived = _strip_side(normalize(label))
        if scan is not None:
            return self.regions.get(scan, {}).get(text), side, derived
        hits = {t[text] for t in self.regions.values() if text in t}
        return (hits.pop() if len(hits) == 1 else None), side, derived


def _strip_side(text: str) -> tuple[str, str | None, bool]:
    """Split laterality words and derived-row markers off a region label."""
    words = text.split()
    side = None
    derived = False
    keep = []
    for i, w in enumerate(words):
        if w in DERIVED_ROW_WORDS:
            derived = True
        elif w in LATERALITY_WORDS and (i == 0 or i == len(words) - 1) and len(words) > 1:
            side = LATERALITY_WORDS[w]
        else:
            keep.append(w)
    return " ".join(keep), side, derived


DEFAULT_TABLES = LabelTables()
