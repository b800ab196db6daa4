"""Presentation state graphics on the workbench's images (mappings/gsps.py, mappings/image_png.py)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from mappings.gsps import annotations_for, applies_to
from mappings.image_png import render_png
from tests.unit.test_image_png import _image

IMAGE_UID = "1.2.826.0.1.3680043.8.498.500"


def _item(**kw) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def gsps(*graphics: Dataset, texts=(), refs=((IMAGE_UID, None),), own_refs=None) -> Dataset:
    """A presentation state referencing ``refs`` (SOP UID, frames) with one annotation."""
    ps = Dataset()
    ps.ReferencedSeriesSequence = [
        _item(SeriesInstanceUID="1.2.3", ReferencedImageSequence=[
            _item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.7", ReferencedSOPInstanceUID=uid, **({"ReferencedFrameNumber": f} if f else {}))
            for uid, f in refs
        ])
    ]  # fmt: skip
    ann = _item(GraphicLayer="ROI", GraphicObjectSequence=list(graphics), TextObjectSequence=list(texts))
    if own_refs is not None:
        ann.ReferencedImageSequence = [_item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.7", ReferencedSOPInstanceUID=u) for u in own_refs]
    ps.GraphicAnnotationSequence = [ann]
    return ps


def poly(points, units="PIXEL", kind="POLYLINE") -> Dataset:
    return _item(GraphicAnnotationUnits=units, GraphicDimensions=2, NumberOfGraphicPoints=len(points) // 2, GraphicData=list(points), GraphicType=kind, GraphicFilled="N")


def test_a_presentation_state_applies_to_the_images_and_frames_it_references():
    """PS3.3 C.11.11 / C.10.5: Referenced Series > Referenced Image (and Frame) Sequence;
    an annotation's own Referenced Image Sequence narrows it."""
    ps = gsps(poly([1, 1, 5, 5]), refs=((IMAGE_UID, 2), ("9.9", None)))
    assert applies_to(ps, IMAGE_UID, 2) and not applies_to(ps, IMAGE_UID, 1) and applies_to(ps, "9.9", 1)
    assert not applies_to(ps, "1.2.3.4", 1)
    narrowed = gsps(poly([1, 1, 5, 5]), refs=((IMAGE_UID, None), ("9.9", None)), own_refs=["9.9"])
    assert annotations_for(narrowed, IMAGE_UID, 1, 10, 10) == ((), ())
    assert len(annotations_for(narrowed, "9.9", 1, 10, 10)[0]) == 1


def test_display_units_scale_to_the_image_and_text_is_anchored():
    """C.10.5.1.2: DISPLAY units are fractions of the displayed area (here the image)."""
    text = _item(UnformattedTextValue="L1-L4", AnchorPoint=[0.5, 0.25], AnchorPointAnnotationUnits="DISPLAY", AnchorPointVisibility="N")
    shapes, labels = annotations_for(gsps(poly([0.0, 0.5, 1.0, 0.5], units="DISPLAY"), texts=[text]), IMAGE_UID, 1, 40, 80)
    assert shapes[0].points == ((0.0, 20.0), (80.0, 20.0))
    assert labels[0].text == "L1-L4" and labels[0].at == (40.0, 10.0)


def test_the_scanners_roi_is_drawn_on_the_png():
    """A POLYLINE ROI and a CIRCLE drawn in yellow; without the state, the bare image."""
    ds = _image(40, 40, pixels=np.zeros((40, 40), np.uint8))
    ds.SOPInstanceUID = IMAGE_UID
    ps = gsps(poly([5, 10, 35, 10]), poly([20, 25, 20, 30], kind="CIRCLE"))
    im = Image.open(BytesIO(render_png(ds, 0, [ps])))
    assert im.mode == "RGB" and im.getpixel((20, 10)) == (255, 255, 0)
    assert im.getpixel((20, 30)) == (255, 255, 0) and im.getpixel((20, 25)) == (0, 0, 0)  # on the circle, its centre
    other = gsps(poly([5, 10, 35, 10]), refs=(("1.2.3.4", None),))
    assert Image.open(BytesIO(render_png(ds, 0, [other]))).mode == "L"  # another image's state: nothing drawn


def test_an_ellipse_and_a_point():
    ds = _image(40, 40, pixels=np.zeros((40, 40), np.uint8))
    ds.SOPInstanceUID = IMAGE_UID
    ps = gsps(poly([10, 20, 30, 20, 20, 15, 20, 25], kind="ELLIPSE"), poly([5, 5], kind="POINT"))
    im = Image.open(BytesIO(render_png(ds, 0, [ps])))
    assert im.getpixel((30, 20)) == (255, 255, 0) and im.getpixel((20, 15)) == (255, 255, 0) and im.getpixel((20, 20)) == (0, 0, 0)
