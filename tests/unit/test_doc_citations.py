"""Code comments cite the standard or the repository's own docs/, never a
note outside it (docs/architecture.md, "Layout"): a citation of ../shared,
a design or domain note that is not in the repository, or a docs/ file (or
a numbered section or rule of one) that does not exist fails here."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "hl7v2", "dicomext", "mappings", "routes", "simulators", "bench")
NOT_YET: tuple[str, ...] = ()  # folders whose comments are not yet in line

OUTSIDE = re.compile(r"\.\./shared|\bDESIGN\.md|\bDOMAIN\.md|\bseeds/|\bseed \d{3}\b|\bissue \d+")
DOC = re.compile(r"docs/([\w.-]+\.md)(?:,?\s+(section|rules?)\s+(\d+))?")


def comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    out = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline) if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append((node.body[0].lineno, doc))
    return out


def _sections(doc: Path) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\.", doc.read_text(), re.M)}


def _rules(doc: Path) -> set[int]:
    text = doc.read_text()
    part = text.split("## Rules", 1)[1].split("\n## ", 1)[0] if "## Rules" in text else ""
    return {int(m.group(1)) for m in re.finditer(r"^(\d+)\. \*\*", part, re.M)}


def problems_in(path: Path, text: str, line: int) -> list[str]:
    where = f"{path}:{line}"
    found = [f"{where}: cites {m.group(0)!r}, which is not in the repository" for m in OUTSIDE.finditer(text)]
    for m in DOC.finditer(" ".join(text.split())):
        doc = ROOT / "docs" / m.group(1)
        if not doc.is_file():
            found.append(f"{where}: cites docs/{m.group(1)}, which does not exist")
        elif m.group(2) == "section" and int(m.group(3)) not in _sections(doc):
            found.append(f"{where}: cites docs/{m.group(1)} section {m.group(3)}, which it does not have")
        elif m.group(2) and m.group(2).startswith("rule") and int(m.group(3)) not in _rules(doc):
            found.append(f"{where}: cites docs/{m.group(1)} rule {m.group(3)}, which it does not have")
    return found


def test_comments_cite_only_the_repository():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if str(rel).startswith(NOT_YET):
                continue
            for line, text in comments_and_docstrings(path):
                found += problems_in(rel, text, line)
    assert found == []


def test_the_check_finds_each_kind_of_bad_citation(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text(
        '"""Durable first (DESIGN.md rule 1)."""\n'
        "# see ../shared/DOMAIN.md and seed 001\n"
        "x = 1  # docs/nowhere.md; docs/domain.md section 99; docs/architecture.md rule 42\n"
    )
    found = [p for line, text in comments_and_docstrings(bad) for p in problems_in(Path("m.py"), text, line)]
    assert len(found) == 7, found
    ok = [p for p in problems_in(Path("m.py"), "docs/domain.md section 2; docs/architecture.md rules 1", 1)]
    assert ok == []
