"""Bone densitometry core: vendor SR -> :class:`BmdExam` -> report, ORU, FHIR.

Pure functions over typed values; no I/O, no clock, no globals.  The
classifier is ``mappings.bmd.classify.classify`` (not re-exported here, so the
name keeps meaning the module).
"""

from mappings.bmd.classify import Classification
from mappings.bmd.collect import UnparseableSr
from mappings.bmd.compare import Comparison, LscTable, compare_exams
from mappings.bmd.dose import dose_from_attributes, dose_from_rdsr
from mappings.bmd.extract import extract_bmd_exam
from mappings.bmd.fhir_bundle import FhirContext, build_bundle, bundle_json
from mappings.bmd.hl7_oru import OruContext, build_oru_r01
from mappings.bmd.labels import DEFAULT_TABLES, LabelTables
from mappings.bmd.models import BmdExam, Device, DoseRecord, FraxResult, RegionResult
from mappings.bmd.report import render_report
from mappings.bmd.samples import build_bmd_sr, build_dose_sr, ge_sr, hologic_sr

__all__ = [
    "DEFAULT_TABLES", "BmdExam", "Classification", "Comparison", "Device", "DoseRecord", "FhirContext",
    "FraxResult", "LabelTables", "LscTable", "OruContext", "RegionResult", "UnparseableSr",
    "build_bmd_sr", "build_bundle", "build_dose_sr", "build_oru_r01", "bundle_json",
    "compare_exams", "dose_from_attributes", "dose_from_rdsr", "extract_bmd_exam", "ge_sr",
    "hologic_sr", "render_report",
]  # fmt: skip
