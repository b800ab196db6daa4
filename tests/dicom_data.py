"""Test DICOM objects written with pydicom: a secondary capture of a given size."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SC = "1.2.840.10008.5.1.4.1.1.7"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"


def secondary_capture(
    path: Path,
    *,
    pixels: int = 512 * 512,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    patient_id: str = "P001",
    accession: str = "ACC1",
    frames: int = 1,
    seed: int = 0,
    sop_class: str = SC,
) -> Dataset:
    """An 8-bit grayscale SC (or multi-frame) image of about ``pixels * frames`` bytes."""
    side = int(pixels**0.5)
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.AccessionNumber = accession
    ds.Modality = "OT"
    ds.Manufacturer = "HOLOGIC"
    ds.StudyDate = dt.date.today().strftime("%Y%m%d")
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = side
    ds.Columns = side
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = rng.integers(0, 255, size=side * side * frames, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds
