"""What a received UID may be: refused when unsafe, tolerated when only defective.

Pure.  PS3.5 9.1: a UID is components of digits separated by dots, at
most 64 characters, and a component has no leading zero unless it is "0".
Devices get the last rule wrong often enough (the note under PS3.5 9.1
admits registration authorities hand out such components) that refusing
them would refuse real scanners; nothing unsafe follows from a leading
zero, so it is accepted as received and counted (docs/tolerated-defects.md).
What is refused is what could hurt: a value that is empty, longer than
64, has an empty component, or holds anything but digits and dots (a
``/``, ``..`` or a NUL could reach a file name or a query).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 64  # PS3.5 Table 6.2-1, VR UI
# The defects accepted with a warning: a closed set, used as metric labels.
LEADING_ZERO = "uid_leading_zero"
SPACE_PADDING = "uid_space_padding"
TOLERATED_DEFECTS = (LEADING_ZERO, SPACE_PADDING)

_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")


class UidError(ValueError):
    """A value that is not a safe UID; ``reason`` says why (no value in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckedUid:
    value: str  # as received, less its padding
    defects: tuple[str, ...] = ()


def check_uid(raw: object) -> CheckedUid:
    """The UID in ``raw``, with the tolerated defects it shows; raises UidError if unsafe.

    PS3.5 6.2: a UI value is padded to even length with a NUL; a trailing
    space instead is a common defect, tolerated.
    """
    text = "" if raw is None else str(raw)
    value = text.rstrip("\0")
    defects: list[str] = []
    if value.endswith(" "):
        value = value.rstrip(" ")
        defects.append(SPACE_PADDING)
    if not value:
        raise UidError("empty")
    if len(value) > MAX_LENGTH:
        raise UidError(f"longer than {MAX_LENGTH} characters")
    if not _DIGITS_AND_DOTS.fullmatch(value):
        raise UidError("characters other than digits and dots")
    components = value.split(".")
    if any(not c for c in components):
        raise UidError("an empty component")
    if any(len(c) > 1 and c[0] == "0" for c in components):
        defects.append(LEADING_ZERO)
    return CheckedUid(value, tuple(defects))


def uid_problem(raw: object) -> str | None:
    """Why ``raw`` is not a safe UID, or None if it is one."""
    try:
        check_uid(raw)
    except UidError as exc:
        return exc.reason
    return None


def is_safe_uid(raw: object) -> bool:
    return uid_problem(raw) is None


def uid_defects(raw: object) -> tuple[str, ...]:
    """The tolerated defects of a safe UID (empty for an unsafe one)."""
    try:
        return check_uid(raw).defects
    except UidError:
        return ()


@dataclass(frozen=True, slots=True)
class UidProblem:
    """The first unsafe UID in a dataset: where (keyword path) and why."""

    tag: int
    path: str
    reason: str


def check_dataset_uids(ds) -> tuple[UidProblem | None, tuple[str, ...]]:
    """(first unsafe UID or None, tolerated defects) over every UI element of ``ds``.

    Walks sequences too; an empty UI value (type 2) is not a problem here:
    whether a value is required is the service's own rule.
    """
    defects: list[str] = []
    stack = [(ds, "")]
    while stack:
        current, prefix = stack.pop()
        for elem in current:
            name = f"{prefix}{elem.keyword or elem.tag}"
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or []):
                    stack.append((item, f"{name}[{i}]."))
                continue
            if elem.VR != "UI" or elem.value in (None, ""):
                continue
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            for value in values:
                try:
                    defects += check_uid(value).defects
                except UidError as exc:
                    return UidProblem(int(elem.tag), name, exc.reason), tuple(defects)
    return None, tuple(defects)
