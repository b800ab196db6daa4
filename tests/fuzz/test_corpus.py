"""Replay the fuzz corpus (seeds and any crash found, kept as regressions).

Plain pytest, no atheris: each input goes through its target once and must
keep the target's contract (tests/fuzz/targets.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted((name, path) for name in TARGETS for path in (CORPUS / name).glob("*"))


def test_every_target_has_a_corpus():
    assert {name for name, _ in CASES} == set(TARGETS)


@pytest.mark.parametrize("name, path", CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_input_keeps_the_contract(name, path):
    TARGETS[name](path.read_bytes())
