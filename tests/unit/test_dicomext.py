"""dicomext: every pynetdicom replacement is on for the pinned pynetdicom, stays
off when the code it mirrors differs, and nothing else reaches into pynetdicom
(docs/architecture.md rule 10)."""

from __future__ import annotations

import ast
import importlib
import logging
import pathlib
import sys
import textwrap

import pynetdicom
import pytest

import dicomext
from dicomext import guard
from dicomext.guard import Mirror, Patch, Replacement, source_hash

REPO = pathlib.Path(__file__).resolve().parents[2]


def _pinned_pynetdicom() -> str:
    text = (REPO / "pyproject.toml").read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith('"pynetdicom'))
    return line.strip().strip('",').removeprefix("pynetdicom==")


def test_the_installed_pynetdicom_is_the_pinned_one():
    assert pynetdicom.__version__ == _pinned_pynetdicom()


def test_every_replacement_is_active_on_the_pinned_pynetdicom():
    """A pynetdicom release that changes any mirrored function fails here, naming it."""
    status = dicomext.install()
    assert set(status) == set(dicomext.BY_NAME)
    off = {name: s.differs for name, s in status.items() if not s.active}
    assert off == {}, f"pynetdicom {pynetdicom.__version__}: replacements off: {off}"
    for replacement in dicomext.REPLACEMENTS:
        for mirror in replacement.mirrors:
            assert source_hash(mirror.target) == mirror.sha256, mirror.target


def test_install_is_idempotent_and_replaces_what_it_says():
    from pynetdicom import dimse_messages, service_class, transport
    from pynetdicom.association import Association
    from pynetdicom.dul import DULServiceProvider

    dicomext.install()
    first = (DULServiceProvider.run_reactor, Association._run_reactor, transport.deepcopy, dimse_messages.encode, service_class.encode)
    again = dicomext.install()
    assert all(s.active for s in again.values())
    assert (DULServiceProvider.run_reactor, Association._run_reactor, transport.deepcopy, dimse_messages.encode, service_class.encode) == first
    assert DULServiceProvider.run_reactor is dicomext.reactor.dul_run_reactor
    assert Association._run_reactor is dicomext.reactor.assoc_run_reactor
    assert transport.deepcopy is dicomext.acceptor._own_list
    assert dimse_messages.encode is dicomext.command_set.encode_command_set
    assert service_class.encode is dicomext.identifiers.encode
    # the hash is of upstream's code, not of ours now in its place
    assert guard.upstream("pynetdicom.dul:DULServiceProvider.run_reactor").__module__ == "pynetdicom.dul"


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="no_such"):
        dicomext.install(only=("no_such",))


FAKE = '''
import copy

copy_it = copy.deepcopy


class Peer:
    def run(self):
        return "upstream run"

    def read(self):
        return copy_it([1])
'''


@pytest.fixture
def fake_upstream(tmp_path, monkeypatch):
    """An importable module standing in for an upstream one (its source on disk, as inspect needs)."""

    def make(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    yield make
    for name in ("fake_upstream_a", "fake_upstream_b", "fake_upstream_c"):
        sys.modules.pop(name, None)


def _ours(self):
    return "our run"


def _replacement(module: str, sha256: str, users: tuple[str, ...] = ()) -> Replacement:
    patches = [Patch(f"{module}:Peer.run", _ours)]
    if users:
        patches.append(Patch(f"{module}:copy_it", list, users=users))
    return Replacement(
        name=f"test_{module}",
        summary="a test replacement",
        mirrors=(Mirror(f"{module}:Peer.run", sha256),),
        patches=tuple(patches),
    )


def test_a_replacement_whose_mirrored_code_differs_stays_off_and_says_so(fake_upstream, caplog):
    mod = fake_upstream("fake_upstream_a", FAKE)
    replacement = _replacement("fake_upstream_a", "0" * 64)
    with caplog.at_level(logging.WARNING, logger="dicomext"):
        status = guard.apply(replacement, "9.9")
    assert not status.active
    assert status.differs and "fake_upstream_a:Peer.run" in status.differs[0]
    assert mod.Peer().run() == "upstream run"  # left as upstream has it
    record = next(r for r in caplog.records if r.getMessage() == "dicomext.replacement_off")
    assert record.fields["replacement"] == "test_fake_upstream_a"
    guard.remove(replacement)


def test_a_replacement_whose_mirrored_code_matches_is_applied_and_removable(fake_upstream):
    mod = fake_upstream("fake_upstream_b", FAKE)
    replacement = _replacement("fake_upstream_b", source_hash("fake_upstream_b:Peer.run"))
    assert guard.apply(replacement).active
    assert mod.Peer().run() == "our run"
    assert guard.apply(replacement).active  # idempotent
    assert source_hash("fake_upstream_b:Peer.run") == replacement.mirrors[0].sha256  # still upstream's
    guard.remove(replacement)
    assert mod.Peer().run() == "upstream run"


def test_a_module_global_read_by_an_unlisted_function_keeps_it_off(fake_upstream):
    mod = fake_upstream("fake_upstream_c", FAKE + "\n\ndef other():\n    return copy_it({})\n")
    good = source_hash("fake_upstream_c:Peer.run")
    replacement = _replacement("fake_upstream_c", good, users=("Peer.read",))
    status = guard.apply(replacement)
    assert not status.active
    assert any("also read by other" in d for d in status.differs)
    assert mod.copy_it is not list and mod.Peer().run() == "upstream run"
    guard.remove(replacement)


# -- nothing outside dicomext/ reaches into pynetdicom ------------------------------

SCANNED = ("gateway", "simulators", "routes")
#: pynetdicom modules with a documented public API
PUBLIC_MODULES = {"pynetdicom", "pynetdicom.sop_class", "pynetdicom.presentation", "pynetdicom.evt", "pynetdicom.status"}


def _sources():
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def _private_names(trees) -> set[str]:
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name.startswith("_") and not node.name.startswith("__"):
                names.add(node.name)
    return names


def _own_private_names(trees) -> set[str]:
    """Private names our own code defines (``self._x = ...``, ``def _x``)."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return names


def test_gateway_and_simulators_import_only_pynetdicom_public_modules():
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pynetdicom":
                if node.module not in PUBLIC_MODULES:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} from {node.module}")
                found += [
                    f"{path.relative_to(REPO)}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "_config"  # _config: pynetdicom's documented settings
                ]
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(REPO)}:{node.lineno} import {a.name}" for a in node.names if a.name.startswith("pynetdicom") and a.name not in PUBLIC_MODULES]
    assert found == [], "pynetdicom internals belong in dicomext/"


def test_gateway_and_simulators_patch_nothing_of_pynetdicom():
    """No assignment to (or setattr on) a pynetdicom module or class, but _config's settings."""
    found = []
    for path, tree in _sources():
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pynetdicom":
                imported |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("pynetdicom")}
        imported.discard("_config")
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr") and node.args:
                targets = [ast.Attribute(value=node.args[0], attr="?", ctx=ast.Store())]
            for target in targets:
                base = target
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(target, ast.Attribute) and isinstance(base, ast.Name) and base.id in imported:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)[:80]}")
    assert found == [], "pynetdicom is patched only by dicomext.install()"


def test_gateway_and_simulators_use_no_private_pynetdicom_names():
    """No ``x._name`` (or getattr(x, "_name")) for a private name of pynetdicom's, unless our own code defines it too."""
    root = pathlib.Path(pynetdicom.__file__).parent
    upstream = _private_names(ast.parse(p.read_text()) for p in root.rglob("*.py") if "tests" not in p.parts)
    trees = [tree for _, tree in _sources()]
    theirs = upstream - _own_private_names(trees)
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                name = node.attr
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                name = node.args[1].value
            if name in theirs:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)[:80]}")
    assert found == [], "pynetdicom internals belong in dicomext/"
