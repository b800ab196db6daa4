"""A stored DICOM image as a PNG for the reporting workbench.

Pure: a decoded dataset in, PNG bytes out (pydicom's pixel handlers with
numpy, Pillow to encode).  What it renders (docs/dicom-conformance.md,
"Report images in the workbench"):

- MONOCHROME2 and MONOCHROME1 (inverted, PS3.3 C.7.6.3.1.2) after the
  Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence) and the
  VOI LUT (Window Center/Width, the first pair, or a VOI LUT Sequence);
  without either, the stored range is stretched to 0..255;
- RGB, YBR_FULL / YBR_FULL_422 (pydicom converts them to RGB) and PALETTE COLOR;
- the first frame of a multi-frame image (``frame`` picks another);
- overlay planes (60xx,3000) in groups 6000-601E (PS3.3 C.9.2), drawn over
  the image in white (yellow on colour images): the regions of interest
  as the scanner drew them when it sent them as overlays;
- the graphics and text of the presentation states that reference the image
  (mappings/gsps.py: POINT, POLYLINE, INTERPOLATED, CIRCLE, ELLIPSE, text
  objects), drawn in yellow (the image becomes RGB).  Regions burnt into the
  pixels (the Hologic and GE report images) need nothing more.

Not rendered: compressed transfer syntaxes pydicom cannot decode without
an extra plugin (the error names the syntax), a presentation state's own
LUTs, spatial transformation, displayed area and shutters.
"""

from __future__ import annotations

from io import BytesIO
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from mappings.gsps import annotations_for, ellipse_outline

OVERLAY_GROUPS = tuple(range(0x6000, 0x6020, 2))  # PS3.3 C.9.2: 6000-601E, even groups
MAX_PIXELS = 32 * 1024 * 1024  # samples in one frame: refuse absurd sizes (memory); a DXA report image has ~5 M


class ImageError(ValueError):
    """The object cannot be shown as an image; the message says why (no patient data)."""


def _to_uint8(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values.astype(np.float64) - lo) * (255.0 / (hi - lo))).round().clip(0, 255).astype(np.uint8)


def _grey(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    out = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        out = apply_voi_lut(out, ds, index=0)
    grey = _to_uint8(np.asarray(out))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        grey = 255 - grey  # minimum is white (PS3.3 C.7.6.3.1.2)
    return grey


def _overlays(ds: Dataset, rows: int, cols: int, frame: int) -> np.ndarray | None:
    """A boolean mask of every overlay plane of ``frame``, or None when there is none."""
    mask = None
    for group in OVERLAY_GROUPS:
        if (group, 0x3000) not in ds:
            continue
        try:
            plane = ds.overlay_array(group)
        except (ValueError, KeyError, AttributeError):
            continue  # a broken overlay is left out, the image still shows
        if plane.ndim == 3:
            if frame >= plane.shape[0]:
                continue
            plane = plane[frame]
        origin = ds.get((group, 0x0050))
        r0, c0 = (int(origin.value[0]) - 1, int(origin.value[1]) - 1) if origin is not None and len(origin.value) == 2 else (0, 0)
        full = np.zeros((rows, cols), dtype=bool)
        # place the plane at its origin (1-based, PS3.3 C.9.2.1.1), clipped to the image
        rs, cs = max(r0, 0), max(c0, 0)
        re_, ce = min(r0 + plane.shape[0], rows), min(c0 + plane.shape[1], cols)
        if rs < re_ and cs < ce:
            full[rs:re_, cs:ce] = plane[rs - r0 : re_ - r0, cs - c0 : ce - c0] != 0
        mask = full if mask is None else (mask | full)
    return mask


def _draw_annotations(image: Image.Image, presentation_states: Sequence[Dataset], sop_uid: str, frame: int) -> Image.Image:
    rows, cols = image.height, image.width
    found = [annotations_for(p, sop_uid, frame + 1, rows, cols) for p in presentation_states]
    if not any(shapes or labels for shapes, labels in found):
        return image
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(1, round(min(rows, cols) / 300))
    colour = (255, 255, 0)
    for shapes, labels in found:
        for s in shapes:
            if s.kind == "POINT":
                x, y = s.points[0]
                draw.ellipse((x - 2 * width, y - 2 * width, x + 2 * width, y + 2 * width), outline=colour, width=width)
            elif s.kind == "CIRCLE":
                (cx, cy), (px, py) = s.points[:2]
                r = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=width)
            elif s.kind == "ELLIPSE":
                draw.line(ellipse_outline(s.points), fill=colour, width=width)
            else:  # POLYLINE, INTERPOLATED
                draw.line(s.points, fill=colour, width=width)
        for label in labels:
            draw.text(label.at, label.text, fill=colour)
    return image


def render_png(ds: Dataset, frame: int = 0, presentation_states: Sequence[Dataset] = ()) -> bytes:
    """PNG bytes of one frame of ``ds`` with the graphics of ``presentation_states``
    that reference it; raises :class:`ImageError`."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError("the object has no pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise ImageError("Rows, Columns or Samples per Pixel missing or not numbers") from None
    if rows <= 0 or cols <= 0 or rows * cols * max(samples, 1) > MAX_PIXELS:
        raise ImageError(f"unsupported image size {rows}x{cols}")
    if not 0 <= frame < frames:
        raise ImageError(f"no frame {frame + 1}: the image has {frames}")
    try:
        if frames > 1:
            ds.pixel_array_options(index=frame)  # decode only the frame shown
        arr = ds.pixel_array
    except NotImplementedError as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "?") if hasattr(ds, "file_meta") else "?"
        raise ImageError(f"pixel data in transfer syntax {syntax} cannot be decoded here") from exc
    except Exception as exc:  # truncated or inconsistent pixel data
        raise ImageError(f"pixel data cannot be decoded: {type(exc).__name__}") from None
    if arr.ndim == (4 if samples > 1 else 3):  # a decoder that ignored the index
        arr = arr[frame]
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        rgb = rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else _to_uint8(rgb)
        image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    elif samples == 3:
        rgb = arr if arr.dtype == np.uint8 else _to_uint8(arr)
        image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    elif samples == 1:
        image = Image.fromarray(np.ascontiguousarray(_grey(ds, arr)), "L")
    else:
        raise ImageError(f"unsupported Samples per Pixel {samples}")
    mask = _overlays(ds, rows, cols, frame)
    if mask is not None and mask.any():
        px = np.array(image.convert("RGB"))
        px[mask] = (255, 255, 0) if image.mode == "RGB" else (255, 255, 255)
        image = Image.fromarray(px, "RGB") if image.mode == "RGB" else Image.fromarray(px[..., 0], "L")
    if presentation_states:
        image = _draw_annotations(image, presentation_states, str(ds.get("SOPInstanceUID", "")), frame)
    buf = BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
