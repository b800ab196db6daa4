"""Shared builders for the BMD unit tests: headers and exams with known values."""

from __future__ import annotations

from decimal import Decimal as D

from pydicom.dataset import Dataset

from mappings.bmd.models import BmdExam, Device, FraxResult, RegionResult


def header(**over) -> Dataset:
    h = Dataset()
    h.PatientID = "PAT-001"
    h.PatientName = "Smith^Anne^M"
    h.PatientBirthDate = "19580312"
    h.PatientSex = "F"
    h.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    h.AccessionNumber = "ACC-42"
    h.StudyDate = "20240501"
    h.StudyTime = "101500"
    for k, v in over.items():
        setattr(h, k, v)
    return h


def region(site, lat=None, bmd=None, t=None, z=None, *, bmc=None, area=None, ya=None, am=None, excluded=False) -> RegionResult:
    dec = lambda v: None if v is None else D(v)  # noqa: E731
    return RegionResult(site, lat, dec(bmd), dec(bmc), dec(area), dec(t), dec(z), dec(ya), dec(am), excluded)


def known_exam(layout: str, device: Device, **over) -> BmdExam:
    """An exam whose values test digit fidelity: trailing zeros, -1.0, -2.5."""
    regions = (
        region("L1", None, "0.810", "-1.0", "-0.3", bmc="11.75", area="14.50", ya="85", am="96"),
        region("L2", None, "0.900", "-1.2", "-0.5", bmc="13.95", area="15.50", ya="87", am="95"),
        region("L3", None, "1.050", "0.4", "1.1", bmc="17.33", area="16.50", ya="104", am="111", excluded=True),
        region("L4", None, "0.880", "-1.7", "-1.0", bmc="15.84", area="18.00", ya="82", am="90"),
        region("L1,L2,L4", None, "0.864", "-1.6", "-0.9", bmc="41.54", area="48.00", ya="83", am="91"),
        region("neck", "L", "0.571", "-2.5", "-1.80", bmc="2.80", area="4.90", ya="67", am="75"),
        region("total_hip", "L", "0.700", "-2.0", "-1.3", bmc="24.50", area="35.00", ya="74", am="83"),
        region("wards", "L", "0.400", "-3.2", "-2.1", bmc="0.44", area="1.10", ya="55", am="70"),
        region("neck", "R", "0.600", "-2.3", "-1.6", bmc="2.94", area="4.90", ya="71", am="78"),
        region("total_hip", "R", "0.710", "-1.9", "-1.2", bmc="24.85", area="35.00", ya="75", am="84"),
        region("radius_33", "L", "0.650", "-0.8", "0.0", bmc="1.82", area="2.80", ya="93", am="100"),
    )
    values = dict(
        patient_id="PAT-001",
        patient_name="Smith^Anne^M",
        patient_sex="F",
        patient_birth_date="19580312",
        patient_age=66,
        exam_date="20240501",
        exam_time="101500",
        accession_number="ACC-42",
        study_instance_uid="1.2.826.0.1.3680043.8.498.1",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
        device=device,
        reference_database="2012 BMDCS/NHANES",
        reference_population="White Female",
        regions=regions,
        frax=FraxResult(D("18.0"), D("4.5"), D("20.1"), D("6.30")),
        has_vfa=True,
        has_body_composition=False,
        layout=layout,
    )
    values.update(over)
    return BmdExam(**values)


HOLOGIC = Device("HOLOGIC", "Horizon A", "200123", "13.6.0.5:5")
GE = Device("GE Healthcare", "Lunar iDXA", "ME+200456", "enCORE 18.0")


def bare(exam: BmdExam) -> BmdExam:
    """``exam`` without the reader's provenance (sources, scan labels, flags), to compare values."""
    import dataclasses

    regions = tuple(dataclasses.replace(r, flags=(), source="", scan="") for r in exam.regions)
    return dataclasses.replace(exam, regions=regions, sources=(), flags=())
