"""The conformance report every simulator returns: a list of named checks.

A check is one thing the simulator verified about its peer (a DIMSE status,
an ACK, a required attribute).  The report prints as text for people and as
JSON for CI (``--report FILE``); :attr:`ConformanceReport.ok` is false as soon
as one check failed, and the CLI exits non-zero then.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class ConformanceReport:
    """Thread-safe list of checks plus free-form figures (``stats``)."""

    simulator: str
    checks: list[Check] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, passed: bool, detail: str = "") -> bool:
        with self._lock:
            self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)

    def extend(self, checks) -> None:
        with self._lock:
            self.checks.extend(checks)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def by_name(self, prefix: str) -> list[Check]:
        return [c for c in self.checks if c.name.startswith(prefix)]

    def to_dict(self) -> dict:
        with self._lock:
            checks = [asdict(c) for c in self.checks]
        return {
            "simulator": self.simulator,
            "ok": all(c["passed"] for c in checks),
            "passed": sum(c["passed"] for c in checks),
            "failed": sum(not c["passed"] for c in checks),
            "checks": checks,
            "stats": self.stats,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)

    def to_text(self) -> str:
        d = self.to_dict()
        lines = [f"{self.simulator}: {d['passed']} passed, {d['failed']} failed"]
        for c in d["checks"]:
            mark = "PASS" if c["passed"] else "FAIL"
            lines.append(f"  [{mark}] {c['name']}" + (f": {c['detail']}" if c["detail"] else ""))
        for key, value in self.stats.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)

    __str__ = to_text

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")
