"""How a replacement of a pynetdicom internal checks what it replaces (docs/architecture.md rule 10).

A replacement names the upstream code it mirrors (``module:qualname``) with
the sha256 of its source as ``inspect.getsource`` gives it.  It is applied
only when every one of those hashes is the one it was written against;
otherwise it stays off and says which code differs.  A patch of a
module-level name (``transport.deepcopy``) also names the only functions
of that module that may read the name: another reader appearing upstream
keeps it off too.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import logging
import threading
from dataclasses import dataclass, field
from types import ModuleType

log = logging.getLogger("dicomext")


@dataclass(frozen=True)
class Mirror:
    """Upstream code a replacement was written against: ``module:qualname`` and its sha256."""

    target: str
    sha256: str


@dataclass(frozen=True)
class Patch:
    """One attribute set on install: ``module:qualname`` (a class attribute or a module global).

    ``users``, for a module global, are the qualnames in that module allowed
    to read it (the replacement holds only for them).
    """

    target: str
    new: object
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Replacement:
    name: str
    summary: str
    mirrors: tuple[Mirror, ...]
    patches: tuple[Patch, ...]
    #: a guard (memory, time) rather than a speed-up: off is logged as an error
    protects: bool = False


@dataclass(frozen=True)
class Status:
    name: str
    active: bool
    reason: str = ""
    differs: tuple[str, ...] = field(default=())


_lock = threading.RLock()
# (id of the owner, attribute) -> (owner, the upstream value) for every attribute we replaced
_originals: dict[tuple[int, str], tuple[object, object]] = {}
_status: dict[str, Status] = {}


def split(target: str) -> tuple[str, list[str]]:
    module, _, qualname = target.partition(":")
    return module, qualname.split(".")


def _owner(target: str) -> tuple[object, str]:
    module, parts = split(target)
    owner: object = importlib.import_module(module)
    for part in parts[:-1]:
        owner = _upstream(owner, part)
    return owner, parts[-1]


def _upstream(owner: object, name: str) -> object:
    """``owner.name`` as upstream has it (the original if we replaced it)."""
    saved = _originals.get((id(owner), name))
    if saved is not None and saved[0] is owner:
        return saved[1]
    if isinstance(owner, type):
        return owner.__dict__[name] if name in owner.__dict__ else getattr(owner, name)
    return getattr(owner, name)


def upstream(target: str) -> object:
    """The upstream object at ``module:qualname``, never our replacement of it."""
    owner, name = _owner(target)
    return _upstream(owner, name)


def source_hash(target: str) -> str:
    obj = upstream(target)
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def _readers(module: ModuleType, name: str) -> set[str]:
    """Qualnames of the functions in ``module`` that read the global ``name``."""
    tree = ast.parse(inspect.getsource(module))
    found: set[str] = set()

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Name) and child.id == name and isinstance(child.ctx, ast.Load):
                found.add(".".join(scope) or "<module>")
            visit(child, scope)

    visit(tree, [])
    return found


def check(replacement: Replacement) -> tuple[str, ...]:
    """What differs from the code ``replacement`` mirrors (empty: it may be applied)."""
    differs = []
    for mirror in replacement.mirrors:
        try:
            got = source_hash(mirror.target)
        except (ImportError, AttributeError, KeyError, OSError, TypeError) as exc:
            differs.append(f"{mirror.target}: not found ({type(exc).__name__})")
            continue
        if got != mirror.sha256:
            differs.append(f"{mirror.target}: source sha256 {got[:12]}, mirrored {mirror.sha256[:12]}")
    for patch in replacement.patches:
        if not patch.users:
            continue
        module, parts = split(patch.target)
        try:
            readers = _readers(importlib.import_module(module), parts[-1])
        except (ImportError, OSError, SyntaxError) as exc:
            differs.append(f"{patch.target}: cannot read its module ({type(exc).__name__})")
            continue
        extra = sorted(readers - set(patch.users))
        if extra:
            differs.append(f"{patch.target}: also read by {', '.join(extra)}")
    return tuple(differs)


def apply(replacement: Replacement, version: str = "") -> Status:
    """Apply ``replacement`` if the code it mirrors is as expected; idempotent (checked once)."""
    with _lock:
        done = _status.get(replacement.name)
        if done is not None:
            return done
        differs = check(replacement)
        if differs:
            status = Status(replacement.name, False, "upstream code differs from the code it mirrors", differs)
            level = logging.ERROR if replacement.protects else logging.WARNING
            log.log(level, "dicomext.replacement_off", extra={"fields": {"replacement": replacement.name, "pynetdicom": version, "differs": list(differs)}})
        else:
            for patch in replacement.patches:
                owner, name = _owner(patch.target)
                _originals.setdefault((id(owner), name), (owner, _upstream(owner, name)))
                setattr(owner, name, patch.new)
            status = Status(replacement.name, True)
        _status[replacement.name] = status
        return status


def remove(replacement: Replacement) -> None:
    """Put upstream's code back (tests)."""
    with _lock:
        for patch in replacement.patches:
            owner, name = _owner(patch.target)
            saved = _originals.pop((id(owner), name), None)
            if saved is not None:
                setattr(owner, name, saved[1])
        _status.pop(replacement.name, None)


def status() -> dict[str, Status]:
    with _lock:
        return dict(_status)
