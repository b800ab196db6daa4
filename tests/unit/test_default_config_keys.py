"""The shipped configs state each key once.

PyYAML keeps the last of two equal keys without a word, so a key written
twice (a bad merge, a pasted block) silently drops the first; the daemon's
validation cannot see it.  Read the YAML node tree and refuse repeats.
"""

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml"))


def _repeated_keys(node: yaml.Node, path: str = "") -> list[str]:
    out = []
    if isinstance(node, yaml.MappingNode):
        keys = [k.value for k, _ in node.value]
        out += [f"{path}.{k}".lstrip(".") for k in sorted({k for k in keys if keys.count(k) > 1})]
        for k, v in node.value:
            out += _repeated_keys(v, f"{path}.{k.value}")
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += _repeated_keys(v, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_no_key_is_written_twice(path):
    assert CONFIGS, "no config files found"
    assert _repeated_keys(yaml.compose(path.read_text())) == []


def test_the_check_finds_a_repeated_key():
    assert _repeated_keys(yaml.compose("a: 1\nb:\n  c: 1\n  c: 2\n")) == ["b.c"]
