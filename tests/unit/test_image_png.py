"""Stored images as PNG for the workbench (mappings/image_png.py)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from mappings.image_png import ImageError, render_png


def _image(rows=4, cols=6, *, photometric="MONOCHROME2", bits=8, pixels=None, samples=1, frames=1, syntax=ExplicitVRLittleEndian, **extra) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, samples, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels is None:
        dtype = np.uint8 if bits == 8 else np.uint16
        pixels = (np.arange(rows * cols * samples * frames) % 200).astype(dtype)
    ds.PixelData = np.asarray(pixels).tobytes()
    for k, v in extra.items():
        setattr(ds, k, v)
    return ds


def _png(ds: Dataset, frame: int = 0) -> Image.Image:
    im = Image.open(BytesIO(render_png(ds, frame)))
    im.load()
    return im


def test_monochrome2_stretched_and_monochrome1_inverted():
    """PS3.3 C.7.6.3.1.2: MONOCHROME1 shows the minimum as white."""
    ramp = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    m2 = _png(_image(2, 2, bits=16, pixels=ramp))
    assert m2.mode == "L" and m2.size == (2, 2)
    assert (m2.getpixel((0, 0)), m2.getpixel((1, 1))) == (0, 255)
    m1 = _png(_image(2, 2, bits=16, pixels=ramp, photometric="MONOCHROME1"))
    assert (m1.getpixel((0, 0)), m1.getpixel((1, 1))) == (255, 0)


def test_window_center_and_width_apply():
    """PS3.3 C.11.2.1.2: values below the window are black, above it white."""
    px = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    im = _png(_image(2, 2, bits=16, pixels=px, WindowCenter=1000, WindowWidth=200))
    assert im.getpixel((0, 0)) == 0 and im.getpixel((0, 1)) == 255 and im.getpixel((1, 1)) == 255


def test_rgb_keeps_its_colours_and_size():
    """A Hologic report image: RGB Secondary Capture (DOMAIN.md section 2)."""
    px = np.zeros((5, 7, 3), dtype=np.uint8)
    px[..., 1] = 200
    im = _png(_image(5, 7, samples=3, photometric="RGB", pixels=px))
    assert im.mode == "RGB" and im.size == (7, 5) and im.getpixel((3, 2)) == (0, 200, 0)


def test_overlay_plane_is_drawn_at_its_origin():
    """PS3.3 C.9.2: overlay data (6000,3000), one bit per pixel, origin 1-based."""
    ds = _image(4, 4, pixels=np.zeros((4, 4), dtype=np.uint8))
    bits = np.zeros((2, 2), dtype=np.uint8)
    bits[0, 0] = 1
    packed = np.packbits(bits.flatten(), bitorder="little").tobytes()
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x60000011, "US", 2)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [2, 3])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", packed + b"\0" * (len(packed) % 2))
    im = _png(ds)
    assert im.getpixel((2, 1)) == 255  # row 2, column 3 (1-based)
    assert sum(1 for x in range(4) for y in range(4) if im.getpixel((x, y)) == 255) == 1


def test_a_frame_of_a_multiframe_image():
    px = np.stack([np.zeros((2, 2), np.uint8), np.full((2, 2), 9, np.uint8)])
    px[0, 0, 0] = 5
    assert _png(_image(2, 2, pixels=px, frames=2), 0).getpixel((0, 0)) == 255
    with pytest.raises(ImageError, match="no frame 3"):
        render_png(_image(2, 2, pixels=px, frames=2), 2)


def test_what_cannot_be_shown_is_a_clear_error():
    no_pixels = _image()
    del no_pixels.PixelData
    with pytest.raises(ImageError, match="no pixel data"):
        render_png(no_pixels)
    truncated = _image()
    truncated.PixelData = b"\0\0"
    with pytest.raises(ImageError, match="cannot be decoded"):
        render_png(truncated)
    jpeg = _image(syntax=JPEGBaseline8Bit)
    jpeg.PixelData = b"\xff\xd8\xff\xd9"
    with pytest.raises(ImageError):
        render_png(jpeg)
