"""Pick the parser for a BMD SR and return its :class:`BmdExam`.

Order: Hologic results text (private creator "HOLOGIC"), then the GE Lunar
layout, then the generic walker with the same tables.  Anything that yields
no region result raises :class:`UnparseableSr`; so does an X-Ray Radiation
Dose SR (use :mod:`mappings.bmd.dose`) and a tree too deep to walk.
"""

from __future__ import annotations

import dataclasses

from pydicom.dataset import Dataset

from mappings.bmd import ge_lunar, generic, hologic
from mappings.bmd.collect import UnparseableSr
from mappings.bmd.dose import dose_from_attributes
from mappings.bmd.labels import DEFAULT_TABLES, LabelTables
from mappings.bmd.models import BmdExam
from mappings.bmd.sr_items import XRAY_DOSE_SR

__all__ = ["UnparseableSr", "extract_bmd_exam"]


def _parse(ds: Dataset, tables: LabelTables) -> BmdExam:
    if str(ds.get("SOPClassUID", "")) == XRAY_DOSE_SR:
        raise UnparseableSr("X-Ray Radiation Dose SR carries no BMD results")
    text = hologic.results_text(ds)
    if text is not None:
        return hologic.parse_text(text, ds, tables)
    if "ContentSequence" not in ds:
        raise UnparseableSr("no SR content and no vendor results text")
    if ge_lunar.is_ge_lunar(ds):
        return ge_lunar.parse_ge_lunar(ds, tables)
    return generic.parse_generic(ds, tables)


def extract_bmd_exam(ds: Dataset, tables: LabelTables = DEFAULT_TABLES) -> BmdExam:
    """The exam in a vendor BMD SR; ``tables`` may extend the label tables."""
    try:
        exam = _parse(ds, tables)
    except RecursionError:
        raise UnparseableSr("SR nested too deeply") from None
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, UnparseableSr):
            raise
        raise UnparseableSr(f"malformed SR: {type(exc).__name__}: {exc}") from None
    dose = dose_from_attributes(ds)
    return dataclasses.replace(exam, dose=dose) if dose else exam
