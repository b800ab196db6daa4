"""Pick the reader for a stored object and return its :class:`BmdExam`.

Results come in three carriers, whatever the SOP class (docs/domain.md section 2):
Hologic results text (private (0019,xx00) of creator "HOLOGIC", in an SR or
a report image), GE XML in Image Comments (0020,4000) of an image, and an SR
content tree (the GE Lunar layout, then the generic walker with the same
tables).  An object with no carrier raises :class:`NoResults`; one whose
carrier cannot be read raises :class:`UnparseableSr`; so does an X-Ray
Radiation Dose SR (use :mod:`mappings.bmd.dose`) and a tree too deep to walk.
Repeated rows are numbered (:func:`mark_repeats`).
"""

from __future__ import annotations

import dataclasses

from pydicom.dataset import Dataset

from mappings.bmd import ge_lunar, generic, hologic
from mappings.bmd.collect import NoResults, UnparseableSr, mark_repeats
from mappings.bmd.dose import dose_from_attributes
from mappings.bmd.labels import DEFAULT_TABLES, LabelTables
from mappings.bmd.models import BmdExam
from mappings.bmd.sr_items import XRAY_DOSE_SR

__all__ = ["NoResults", "UnparseableSr", "extract_bmd_exam"]


def _parse(ds: Dataset, tables: LabelTables) -> BmdExam:
    if str(ds.get("SOPClassUID", "")) == XRAY_DOSE_SR:
        raise UnparseableSr("X-Ray Radiation Dose SR carries no BMD results")
    text = hologic.results_text(ds)
    if text is not None:
        return hologic.parse_text(text, ds, tables)
    xml = ge_lunar.image_comments_xml(ds)
    if xml is not None:
        return ge_lunar.parse_image_comments(xml, ds, tables)
    if "ContentSequence" not in ds:
        raise NoResults("no SR content and no vendor results text")
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
    source = str(ds.get("SOPInstanceUID", "") or "")
    regions, repeats = mark_repeats([r if r.source else dataclasses.replace(r, source=source) for r in exam.regions])
    exam = dataclasses.replace(exam, regions=regions, flags=(*exam.flags, *repeats))
    dose = dose_from_attributes(ds)
    return dataclasses.replace(exam, dose=dose) if dose else exam
