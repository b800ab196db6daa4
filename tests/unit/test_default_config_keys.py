"""The shipped configs state each key once, and the defaults exist once.

PyYAML keeps the last of two equal keys without a word, so a key written
twice (a bad merge, a pasted block) silently drops the first; the daemon's
validation cannot see it.  Read the YAML node tree and refuse repeats.

The defaults live in the models of gateway/config.py; gateway/default.yaml
(the embedded default, every key commented) states exactly those values,
and config/docker.yaml only what the image changes (docs/architecture.md,
"Adding a config key").
"""

from pathlib import Path

import pytest
import yaml

from gateway.config import DEFAULT_CONFIG, Config, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "config").glob("*.yaml")) + [DEFAULT_CONFIG]


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


def test_the_embedded_default_states_the_models_defaults():
    """Loading gateway/default.yaml gives what no file at all gives: the
    file documents the one set of defaults and cannot drift from it."""
    assert load_config(DEFAULT_CONFIG).model_dump() == Config.model_validate({}).model_dump()


def _same_as_default(data, default, path=""):
    out = []
    for key, value in data.items():
        here = f"{path}.{key}".lstrip(".")
        base = default.get(key) if isinstance(default, dict) else None
        if isinstance(value, dict) and isinstance(base, dict):
            out += _same_as_default(value, base, here)
        elif value == base:
            out.append(here)
    return out


def test_the_docker_overlay_holds_only_what_differs():
    data = yaml.safe_load((REPO / "config" / "docker.yaml").read_text())
    assert _same_as_default(data, Config.model_validate({}).model_dump()) == []


def test_the_overlay_check_sees_a_repeated_default():
    assert _same_as_default({"dicom": {"port": 11112, "host": "0.0.0.0"}}, Config.model_validate({}).model_dump()) == ["dicom.port"]
