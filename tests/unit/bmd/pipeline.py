"""One exam through classify / compare / report, for the output tests."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D

from mappings.bmd import samples
from mappings.bmd.classify import classify
from mappings.bmd.compare import compare_exams
from mappings.bmd.report import render_report
from tests.unit.bmd.helpers import HOLOGIC, known_exam


def exam_and_report(status="F"):
    exam = known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC, patient_name="O'Brien|Smith^Anne&Marie")
    previous = dataclasses.replace(
        exam,
        exam_date="20220501",
        regions=tuple(dataclasses.replace(r, bmd=r.bmd + D("0.050")) for r in exam.regions),
    )
    c = classify(exam, age=66, sex="F", menopausal=True, fragility_fracture=False)
    comp = compare_exams(exam, previous)
    return exam, c, comp, render_report(exam, c, comp, status=status)
