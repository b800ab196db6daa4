"""One exam per study from the results of all its objects (SRs and report images).

A Hologic study without the SR option sends one report image per scan
(spine, left hip, right hip, forearm); a GE study may send an SR and images
with the same results, and an SR can arrive a day after the images
(docs/domain.md section 2).  :func:`merge_exams` joins what each object gave:
identical rows (the same result in two carriers) become one, different
results for one site are all kept and numbered (:func:`mark_repeats`), and
what the parts disagree on (device, reference data, FRAX) is flagged for
the reporter rather than chosen silently.
"""

from __future__ import annotations

import dataclasses

from mappings.bmd.collect import REPEAT_FLAG, mark_repeats
from mappings.bmd.models import BmdExam

_HEADER_FIELDS = (
    "patient_id", "patient_name", "patient_sex", "patient_birth_date", "exam_date", "exam_time",
    "accession_number", "study_instance_uid", "reference_database", "reference_population",
)  # fmt: skip


def _first(values):
    return next((v for v in values if v not in (None, "", ())), None)


def merge_exams(parts: list[BmdExam] | tuple[BmdExam, ...]) -> BmdExam:
    """The study's exam from its objects' exams, in arrival order (the first fills the header)."""
    if not parts:
        raise ValueError("no exam to merge")
    first = parts[0]
    flags: list[str] = []
    changes: dict = {}
    for name in _HEADER_FIELDS:
        values = [getattr(p, name) for p in parts if getattr(p, name)]
        changes[name] = values[0] if values else getattr(first, name)
        if name in ("reference_database", "reference_population", "patient_id") and len(set(values)) > 1:
            flags.append(f"The objects of this study differ in {name.replace('_', ' ')}: {', '.join(sorted(set(values)))}.")
    ages = [p.patient_age for p in parts if p.patient_age is not None]
    devices = [p.device for p in parts if p.device.manufacturer or p.device.serial]
    if len({(d.manufacturer, d.model, d.serial) for d in devices}) > 1:
        flags.append("The objects of this study come from different devices: " + "; ".join(sorted({f"{d.manufacturer} {d.model} {d.serial}".strip() for d in devices})) + ".")
    fraxes = [p.frax for p in parts if p.frax is not None]
    if len(set(fraxes)) > 1:
        flags.append("The objects of this study give different FRAX results: the first is shown.")
    regions = []
    for p in parts:
        source = p.sop_instance_uid or (p.sources[0] if p.sources else "")
        regions += [r if r.source else dataclasses.replace(r, source=source) for r in p.regions]
    regions_out, repeat_flags = mark_repeats(regions)
    for p in parts:
        flags += [f for f in p.flags if not f.startswith(REPEAT_FLAG) and f not in flags]
    sources: list[str] = []
    for p in parts:
        sources += [s for s in (p.sources or (p.sop_instance_uid,)) if s and s not in sources]
    layouts = []
    for p in parts:
        if p.layout and p.layout not in layouts:
            layouts.append(p.layout)
    return dataclasses.replace(
        first,
        **changes,
        patient_age=ages[0] if ages else None,
        device=devices[0] if devices else first.device,
        regions=regions_out,
        frax=fraxes[0] if fraxes else None,
        has_vfa=any(p.has_vfa for p in parts),
        has_body_composition=any(p.has_body_composition for p in parts),
        dose=_first(p.dose for p in parts),
        height_cm=_first(p.height_cm for p in parts),
        weight_kg=_first(p.weight_kg for p in parts),
        layout="+".join(layouts),
        flags=(*flags, *repeat_flags),
        sources=tuple(sources),
    )


__all__ = ["merge_exams"]
