"""Run one target under atheris (libFuzzer): ``python -m tests.fuzz.run NAME [libFuzzer flags] CORPUS_DIR``.

Coverage is collected from the gateway's own packages and the parsers they
lean on (pydicom, pynetdicom, fhir.resources are instrumented too).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["gateway", "mappings", "pydicom", "pynetdicom", "fhir"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    name = sys.argv.pop(1)
    target = TARGETS[name]
    sys.setrecursionlimit(3000)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
