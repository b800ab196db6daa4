import random
from decimal import Decimal as D

from pydicom.dataset import Dataset

from mappings.bmd import samples
from mappings.bmd.dose import dose_from_attributes, dose_from_rdsr
from mappings.bmd.extract import extract_bmd_exam
from mappings.bmd.models import DoseRecord
from tests.unit.bmd.helpers import HOLOGIC, header, known_exam


def test_dose_from_rdsr_keeps_values_and_units():
    record = DoseRecord(dap=D("0.00000250"), dap_units="Gy.m2", dose_rp_total=D("0.0000123"), dose_rp_units="Gy", source="rdsr")
    ds = samples.dose_sr(header(), record, sop_uid="1.2.3", series_uid="1.2.4")
    assert dose_from_rdsr(ds) == record


def test_dose_from_sample_rdsr():
    got = dose_from_rdsr(samples.build_dose_sr(header(), random.Random(5)))
    assert got.dap is not None and got.dap > 0 and got.dap_units == "Gy.m2"
    assert got.dose_rp_total is not None and got.dose_rp_units == "Gy"


def test_rdsr_without_totals_gives_none():
    ds = samples.dose_sr(header(), DoseRecord(), sop_uid="1.2.3", series_uid="1.2.4")
    assert dose_from_rdsr(ds) is None


def test_dose_from_image_attributes():
    ds = Dataset()
    ds.EntranceDoseInmGy = "0.146"
    ds.ImageAndFluoroscopyAreaDoseProduct = "0.0120"
    got = dose_from_attributes(ds)
    assert (str(got.entrance_dose), got.entrance_dose_units) == ("0.146", "mGy")
    assert (str(got.dap), got.dap_units, got.source) == ("0.0120", "dGy.cm2", "attributes")


def test_dose_from_exposure_dose_sequence_is_summed():
    ds = Dataset()
    a, b = Dataset(), Dataset()
    a.EntranceDoseInmGy = "0.146"
    b.EntranceDoseInmGy = "0.329"
    ds.ExposureDoseSequence = [a, b]
    assert str(dose_from_attributes(ds).entrance_dose) == "0.475"
    assert dose_from_attributes(Dataset()) is None


def test_bmd_sr_with_dose_attributes_carries_dose():
    ds = samples.hologic_sr(known_exam(samples.HOLOGIC_LAYOUT, HOLOGIC))
    ds.EntranceDoseInmGy = "0.329"
    assert str(extract_bmd_exam(ds).dose.entrance_dose) == "0.329"
