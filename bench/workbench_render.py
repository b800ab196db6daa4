"""The workbench's rendering: how long the report PDF, its Encapsulated PDF,
a report image's PNG and the trend SVG take (pure functions, no daemon).

    python bench/workbench_render.py            # 30 repetitions each
    python bench/workbench_render.py --repeat 100

The PDF and its DICOM object are rendered inside the release transaction
(docs/architecture.md rule 9), so their time is added to every sign; the PNG and the
SVG are rendered per request.  It prints figures (median and 95th
percentile of the repetitions, and sizes); it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from mappings.bmd.classify import classify  # noqa: E402
from mappings.bmd.encapsulated_pdf import PdfObjectContext, encapsulated_pdf_bytes  # noqa: E402
from mappings.bmd.models import BmdExam, Device, RegionResult  # noqa: E402
from mappings.bmd.report import ReportDetails, render_report, report_values  # noqa: E402
from mappings.bmd.report_pdf import PdfContext, report_pdf  # noqa: E402
from mappings.bmd.trend_svg import trend_sites, trend_svg  # noqa: E402
from mappings.image_png import render_png  # noqa: E402

DEVICE = Device("HOLOGIC", "Horizon A", "200123", "13.6.0.5")


def exam() -> BmdExam:
    d = Decimal
    regions = tuple(
        RegionResult(site, lat, d(bmd), None, None, d(t), d(z))
        for site, lat, bmd, t, z in (
            ("L1", None, "0.810", "-1.0", "-0.3"), ("L2", None, "0.900", "-1.2", "-0.5"), ("L3", None, "0.950", "-0.8", "-0.1"),
            ("L4", None, "0.880", "-1.7", "-1.0"), ("L1,L2,L3,L4", None, "0.885", "-1.3", "-0.6"), ("neck", "L", "0.571", "-2.5", "-1.8"),
            ("total_hip", "L", "0.700", "-2.0", "-1.3"), ("neck", "R", "0.600", "-2.3", "-1.6"), ("total_hip", "R", "0.710", "-1.9", "-1.2"),
        )
    )  # fmt: skip
    return BmdExam(
        patient_id="BENCH-1", patient_name="Bench^Patient", patient_sex="F", patient_birth_date="19580312", patient_age=66,
        exam_date="20240501", exam_time="101500", accession_number="ACC-B", study_instance_uid="1.2.826.0.1.3680043.8.498.77",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.78", device=DEVICE, regions=regions,
    )  # fmt: skip


def report_image(rows: int = 1320, cols: int = 1200) -> Dataset:
    """A Hologic-sized RGB Secondary Capture report image (docs/domain.md section 2: ~1200x1320)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = rows, cols, 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rng = np.random.default_rng(1)
    px = np.full((rows, cols, 3), 255, np.uint8)
    px[100:900, 100:700] = rng.integers(0, 255, (800, 600, 3), dtype=np.uint8)  # the scan area; the rest is page
    ds.PixelData = px.tobytes()
    return ds


def timed(fn, repeat: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    e = exam()
    c = classify(e, age=66, sex="F", menopausal=True)
    details = ReportDetails(reporter="Dr Bench", reporter_role="Consultant radiologist", signed_on="2024-05-02")
    text = render_report(e, c, status="F", details=details)
    values = report_values(e, c, status="F", details=details)
    at = datetime(2024, 5, 2, 9, 30, tzinfo=timezone.utc)
    med, p95, pdf = timed(lambda: report_pdf(text, values, PdfContext(created=at)), args.repeat)
    print(f"report PDF            median {med * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  {len(pdf):>9,} bytes")
    ctx = PdfObjectContext(report_id=1, content_date="20240502", content_time="093000")
    med, p95, obj = timed(lambda: encapsulated_pdf_bytes(e, pdf, ctx), args.repeat)
    print(f"Encapsulated PDF      median {med * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  {len(obj):>9,} bytes")
    image = report_image()
    med, p95, png = timed(lambda: render_png(image), max(3, args.repeat // 5))
    print(f"PNG 1200x1320 RGB     median {med * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  {len(png):>9,} bytes")
    earlier = [dataclasses.replace(e, exam_date=f"{2024 - 2 * k}0501", regions=tuple(dataclasses.replace(r, bmd=r.bmd + Decimal("0.01") * k) for r in e.regions)) for k in range(1, 8)]
    med, p95, svg = timed(lambda: trend_svg(trend_sites(e, earlier)), args.repeat)
    print(f"trend SVG, 8 exams    median {med * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  {len(svg):>9,} bytes")


if __name__ == "__main__":
    main()
