"""UID checks (PS3.5 9.1) and safe file names from received values."""

from __future__ import annotations

import hashlib
import re

# PS3.5 9.1: components of digits separated by ".", no leading zero in a
# multi-digit component, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def uid_problem(value) -> str:
    """Why ``value`` is not a valid UID, or "" when it is one."""
    if value is None:
        return "missing"
    text = str(value)
    if not text:
        return "empty"
    if len(text) > 64:
        return f"{len(text)} characters (at most 64)"
    if not _UID.match(text):
        return f"{text[:70]!r} is not dot-separated numeric components without leading zeros"
    return ""


def is_valid_uid(value) -> bool:
    return not uid_problem(value)


def safe_name(value: str) -> str:
    """A file name for a received identifier: the UID itself when it is one,
    else a hash (never a path built from peer input)."""
    if is_valid_uid(value):
        return str(value)
    return "x" + hashlib.sha256(str(value).encode("utf-8", "replace")).hexdigest()[:40]
