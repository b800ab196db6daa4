"""The graphics of a Softcopy Presentation State that apply to one image (PS3.3 C.10.5).

Pure: a presentation state dataset (Grayscale Softcopy Presentation State
and its colour siblings, which a Hologic sends for its regions of interest)
and an image's SOP Instance UID and frame in; the shapes and labels to draw
on that image out.  A presentation state applies to the images of its
Referenced Series Sequence (PS3.3 C.11.11, Presentation State Relationship);
a Graphic Annotation Sequence item that has its own Referenced Image
Sequence applies only to those (C.10.5).  Frames: a reference with
Referenced Frame Number applies to those frames only (1-based).

Graphic types (C.10.5.1.2): POINT, POLYLINE, INTERPOLATED (drawn as a
polyline through its points), CIRCLE (centre, a point on the circumference)
and ELLIPSE (the ends of the major axis, then of the minor axis).
Coordinates are in PIXEL units (0.0\\0.0 the top left corner of the top
left pixel) or DISPLAY units (0.0 to 1.0 of the displayed area, taken here
as the whole image); they are returned in image pixels.
Text objects (C.10.5.1.1) are returned at their anchor point, or the top
left of their bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.dataset import Dataset

GRAPHIC_TYPES = ("POINT", "POLYLINE", "INTERPOLATED", "CIRCLE", "ELLIPSE")


@dataclass(frozen=True, slots=True)
class Shape:
    kind: str  # one of GRAPHIC_TYPES
    points: tuple[tuple[float, float], ...]  # (x = column, y = row) in image pixels


@dataclass(frozen=True, slots=True)
class Label:
    text: str
    at: tuple[float, float]


def _refers(items, sop_uid: str, frame_number: int) -> bool:
    for item in items or ():
        if str(item.get("ReferencedSOPInstanceUID", "")) != sop_uid:
            continue
        frames = item.get("ReferencedFrameNumber")
        if frames in (None, ""):
            return True
        if isinstance(frames, (int, str)):  # one value (IS), else a MultiValue
            frames = [frames]
        if frame_number in {int(f) for f in frames}:
            return True
    return False


def applies_to(gsps: Dataset, sop_uid: str, frame_number: int = 1) -> bool:
    """Whether the presentation state names this image (and frame) at all."""
    return any(_refers(series.get("ReferencedImageSequence"), sop_uid, frame_number) for series in gsps.get("ReferencedSeriesSequence") or ())


def _points(data, units: str, rows: int, cols: int) -> tuple[tuple[float, float], ...]:
    values = [float(v) for v in (data or ())]
    sx, sy = (cols, rows) if units == "DISPLAY" else (1.0, 1.0)
    return tuple((values[i] * sx, values[i + 1] * sy) for i in range(0, len(values) - 1, 2))


def ellipse_outline(points: tuple[tuple[float, float], ...], steps: int = 64) -> tuple[tuple[float, float], ...]:
    """An ELLIPSE's four axis end points as a closed polygon."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points[:4]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = math.hypot(x1 - x0, y1 - y0) / 2, math.hypot(x3 - x2, y3 - y2) / 2
    angle = math.atan2(y1 - y0, x1 - x0)
    ca, sa = math.cos(angle), math.sin(angle)
    out = []
    for i in range(steps + 1):
        t = 2 * math.pi * i / steps
        ex, ey = a * math.cos(t), b * math.sin(t)
        out.append((cx + ex * ca - ey * sa, cy + ex * sa + ey * ca))
    return tuple(out)


def annotations_for(gsps: Dataset, sop_uid: str, frame_number: int, rows: int, cols: int) -> tuple[tuple[Shape, ...], tuple[Label, ...]]:
    """The shapes and labels of ``gsps`` drawn on this image's frame (1-based)."""
    if not applies_to(gsps, sop_uid, frame_number):
        return (), ()
    shapes: list[Shape] = []
    labels: list[Label] = []
    for ann in gsps.get("GraphicAnnotationSequence") or ():
        own = ann.get("ReferencedImageSequence")
        if own and not _refers(own, sop_uid, frame_number):
            continue
        for g in ann.get("GraphicObjectSequence") or ():
            kind = str(g.get("GraphicType", "")).strip().upper()
            pts = _points(g.get("GraphicData"), str(g.get("GraphicAnnotationUnits", "PIXEL")).upper(), rows, cols)
            need = {"POINT": 1, "CIRCLE": 2, "ELLIPSE": 4}.get(kind, 2)
            if kind in GRAPHIC_TYPES and len(pts) >= need:
                shapes.append(Shape(kind, pts))
        for t in ann.get("TextObjectSequence") or ():
            text = str(t.get("UnformattedTextValue", "")).strip()
            if not text:
                continue
            if "AnchorPoint" in t:
                at = _points(t.AnchorPoint, str(t.get("AnchorPointAnnotationUnits", "PIXEL")).upper(), rows, cols)
            else:
                at = _points(t.get("BoundingBoxTopLeftHandCorner"), str(t.get("BoundingBoxAnnotationUnits", "PIXEL")).upper(), rows, cols)
            if at:
                labels.append(Label(text[:200], at[0]))
    return tuple(shapes), tuple(labels)
