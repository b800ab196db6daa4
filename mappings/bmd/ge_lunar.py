"""GE Lunar enCORE Enhanced SR -> :class:`BmdExam`.

The layout (root container "DXA Report", one container per scan and per
region, NUM items named by the printed labels) is read by the generic walker
with the label tables; see :mod:`mappings.bmd.codes` for what is uncertain.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from mappings.bmd.collect import UnparseableSr
from mappings.bmd.generic import parse_generic
from mappings.bmd.labels import DEFAULT_TABLES, LabelTables, normalize
from mappings.bmd.models import BmdExam

LAYOUT = "ge-lunar-encore"
ROOT_NAMES = frozenset({"dxa report"})
MANUFACTURER_MARKS = ("GE ", "GE_", "LUNAR", "GE HEALTHCARE", "GE MEDICAL")


def is_ge_lunar(ds: Dataset) -> bool:
    """Manufacturer says GE / Lunar, or the root container is "DXA Report"."""
    maker = str(ds.get("Manufacturer", "") or "").upper() + " "
    seq = ds.get("ConceptNameCodeSequence")
    root = normalize(seq[0].get("CodeMeaning", "")) if seq else ""
    return root in ROOT_NAMES or any(mark in maker for mark in MANUFACTURER_MARKS)


def parse_ge_lunar(ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """A BmdExam from an enCORE SR; :class:`UnparseableSr` when nothing is read."""
    if "ContentSequence" not in ds:
        raise UnparseableSr("GE Lunar SR has no content")
    return parse_generic(ds, tables, layout=LAYOUT)
