"""Who may import whom: the daemon never needs the simulators, and the HL7 v2
layer does no I/O outside its MLLP module (docs/architecture.md, "Rules")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _offenders(package: str, forbidden) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = sorted(n for n in _imports(path) if forbidden(n))
        if bad:
            out.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    return out


def test_gateway_does_not_import_simulators():
    assert _offenders("gateway", lambda n: n == "simulators" or n.startswith("simulators.")) == []


def test_routes_and_mappings_do_not_import_simulators():
    for package in ("routes", "mappings", "hl7v2"):
        assert _offenders(package, lambda n: n.split(".")[0] in ("simulators", "tests")) == [], package


def test_hl7v2_is_pure_but_for_mllp():
    io = {"socket", "ssl", "asyncio", "threading", "subprocess", "urllib", "sqlite3", "time", "datetime", "os", "pathlib"}
    bad = [o for o in _offenders("hl7v2", lambda n: n.split(".")[0] in io | {"gateway", "routes"}) if not o.startswith("hl7v2/mllp.py")]
    assert bad == []


def test_the_scan_sees_an_import_of_simulators(tmp_path):
    """The check above can fail: a module that imports simulators is found."""
    (tmp_path / "m.py").write_text("import os\nfrom simulators.emr import EmrSimulator\n")
    assert "simulators.emr" in _imports(tmp_path / "m.py")
