"""The signed report as a PDF: a layout of the report text, not a second template.

Pure: the report text as rendered (mappings/bmd/report.py, with the site's
template) and the placeholder values it was rendered from, in; PDF bytes out.
The text's first line is the title; every page carries the patient block
(name, ID, birth date, exam date, accession, status) from the same values;
the results table (``$results_table``) is set in a fixed-width font so its
columns stay aligned; section headings (a line ending in ``:``) are bold;
the signature block (``$signature``) is set apart at the end.  Nothing is
added that the text does not say, besides the page header and numbers.

Deterministic: the same text, values and ``created`` give the same bytes
(fpdf2 derives the file identifier from the content and the creation date;
the producer is fixed), so the hash stored at release can be reproduced
(docs/architecture.md rule 9).  The PDF uses the standard Helvetica/Courier fonts
(WinAnsi encoding, nothing embedded): characters outside it are written
without their accents, or as ``?``; the text/plain form of the report keeps
the exact characters (docs/fhir.md).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

from fpdf import FPDF

PRODUCER = "dxa-gateway"
MARGIN = 15  # mm
BODY_PT = 10
TABLE_PT = 8.5


# letters NFKD does not take apart (a stroke is not a combining mark)
_FOLD = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i", "Ŧ": "T", "ŧ": "t"})


def latin(text: str) -> str:
    """``text`` in the standard fonts' encoding (cp1252): accents dropped where
    that makes it fit, anything else ``?``."""
    out = []
    for ch in text.translate(_FOLD):
        try:
            ch.encode("cp1252")
            out.append(ch)
            continue
        except UnicodeEncodeError:
            pass
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        try:
            base.encode("cp1252")
            out.append(base or "?")
        except UnicodeEncodeError:
            out.append("?")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class PdfContext:
    """What the PDF needs beyond the text; no clock is read here."""

    created: datetime  # the release time: the PDF's CreationDate
    author: str = ""  # the reporter, as signed
    subject: str = "DXA bone densitometry report"


class _Report(FPDF):
    def __init__(self, header_lines: tuple[str, ...], footer: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self._header_lines = header_lines
        self._footer = footer

    def header(self) -> None:
        self.set_font("Helvetica", "B", 9)
        for line in self._header_lines:
            self.cell(0, 4.5, line, new_x="LMARGIN", new_y="NEXT")
        y = self.get_y() + 1
        self.set_draw_color(120, 120, 120)
        self.line(MARGIN, y, self.w - MARGIN, y)
        self.set_y(y + 3)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.cell(0, 5, f"{self._footer}    Page {self.page_no()} of {{nb}}", align="C")


def _block_range(lines: list[str], block: str) -> range:
    """Where the lines of ``block`` stand in ``lines`` (empty range when absent)."""
    want = [x.rstrip() for x in block.splitlines() if x.strip()]
    if not want:
        return range(0)
    n = len(want)
    for i in range(len(lines) - n + 1):
        if [x.rstrip() for x in lines[i : i + n]] == want:
            return range(i, i + n)
    return range(0)


def report_pdf(text: str, values: Mapping[str, str], ctx: PdfContext) -> bytes:
    """The PDF of one report version: ``text`` exactly as released, laid out."""
    lines = text.rstrip("\n").splitlines() or [""]
    title, body = lines[0], lines[1:]
    table = _block_range(body, values.get("results_table", ""))
    signature = _block_range(body, values.get("signature", ""))
    patient = latin(
        f"{values.get('patient_name', '')}   ID {values.get('patient_id', '')}   Born {values.get('birth_date', '')}   Sex {values.get('sex', '')}"
    )
    exam = latin(f"Examination {values.get('exam_date', '')}   Accession {values.get('accession', '')}   {values.get('status', '')}")
    pdf = _Report((patient, exam), latin(f"{values.get('patient_id', '')}  {values.get('status', '')}"))
    pdf.set_creation_date(ctx.created.astimezone(timezone.utc) if ctx.created.tzinfo else ctx.created.replace(tzinfo=timezone.utc))
    pdf.set_producer(PRODUCER)
    pdf.set_creator(PRODUCER)
    pdf.set_title(latin(title))
    pdf.set_subject(latin(ctx.subject))
    if ctx.author:
        pdf.set_author(latin(ctx.author))
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=18)
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.multi_cell(0, 7, latin(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for i, raw in enumerate(body):
        line = latin(raw.rstrip())
        if i in table:
            style = "B" if i == table.start else ""
            pdf.set_font("Courier", style, TABLE_PT)
            room = pdf.w - 2 * MARGIN
            if pdf.get_string_width(line) > room:  # a wide site table: smaller, never wrapped (columns stay aligned)
                pdf.set_font("Courier", style, max(5.0, TABLE_PT * room / pdf.get_string_width(line)))
            pdf.cell(0, 4, line, new_x="LMARGIN", new_y="NEXT")
            continue
        if signature and i == signature.start:
            pdf.ln(3)
            y = pdf.get_y()
            pdf.set_draw_color(60, 60, 60)
            pdf.line(MARGIN, y, pdf.w - MARGIN, y)
            pdf.ln(2)
        if not line:
            pdf.ln(2.5)
            continue
        heading = line.endswith(":") and not line.startswith("- ")
        pdf.set_font("Helvetica", "B" if heading or i in signature else "", BODY_PT)
        pdf.multi_cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
