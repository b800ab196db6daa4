"""Run one target under atheris (libFuzzer): ``python -m tests.fuzz.run NAME [libFuzzer flags] CORPUS_DIR``.

Coverage is collected from the gateway's own packages and the parsers they
lean on (pydicom, pynetdicom, fhir.resources are instrumented too), except
for the targets that only run our own readers on text or on trees they
build (``_ONLY_OURS``): there only ``mappings`` is instrumented.
"""

from __future__ import annotations

import sys

import atheris

# The tree target builds its datasets itself: pydicom's coverage there is noise.
_ONLY_OURS = {"ge_lunar_tree", "ge_xml"}
_INCLUDE = ["mappings"] if len(sys.argv) > 1 and sys.argv[1] in _ONLY_OURS else ["gateway", "mappings", "pydicom", "pynetdicom", "fhir"]

with atheris.instrument_imports(include=_INCLUDE):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    name = sys.argv.pop(1)
    target = TARGETS[name]
    sys.setrecursionlimit(3000)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
