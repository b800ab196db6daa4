"""Referrer entitlement (IR(ME)R 2017 reg. 6 and 10; RCR/SCoR/RCN/NHSE 2025
good practice guidance, principles 3, 6 and 9): is the referrer of an order
entitled, under the employer's register, to request this exposure?

Pure: the register is parsed from text, "today" is an argument.  The gateway
(gateway/entitlement.py) reads the file and applies the decision.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date

from mappings.worklist import WorklistItem

# Why an order is not entitled: a closed set (a metric label and an API field).
NO_REFERRER = "no_referrer"  # the order names nobody
UNKNOWN = "unknown"  # not in the register
EXPIRED = "expired"  # entitlement ended (valid_until before the day of referral)
OUT_OF_SCOPE = "out_of_scope"  # entitled, but not for this procedure
REGISTER_UNAVAILABLE = "register_unavailable"  # the register could not be read
REASONS = (NO_REFERRER, UNKNOWN, EXPIRED, OUT_OF_SCOPE, REGISTER_UNAVAILABLE)

ACCEPT, HOLD, REJECT = "accept", "hold", "reject"
POLICIES = (HOLD, ACCEPT, REJECT)

COLUMNS = ("id", "name", "role", "scope", "valid_until")
ANY_SCOPE = frozenset({"*", "ALL"})
PRACTITIONER = "practitioner"  # the role that may justify a held order (IR(ME)R reg. 11)
_TITLES = frozenset({"DR", "MR", "MRS", "MS", "MISS", "MX", "PROF"})


@dataclass(frozen=True, slots=True)
class Referrer:
    """One row of the employer's register of entitled referrers."""

    id: str
    name: str
    roles: tuple[str, ...]
    scope: frozenset[str]  # modalities or procedure codes, upper case; "*" for any
    valid_until: date | None  # the last day of entitlement; None for no end


@dataclass(frozen=True, slots=True)
class Register:
    referrers: tuple[Referrer, ...] = ()
    problems: tuple[str, ...] = ()  # "line N: why" for each row left out
    available: bool = True
    _by_id: dict = field(default_factory=dict, compare=False, repr=False)
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def find(self, referrer_id: str, name: str) -> Referrer | None:
        """By identifier; without one, by name when exactly one row has it."""
        if referrer_id:
            return self._by_id.get(referrer_id.strip().upper())
        matches = self._by_name.get(name_key(name), ())
        return matches[0] if len(matches) == 1 else None


UNAVAILABLE = Register(available=False)


def name_key(name: str) -> tuple[str, ...]:
    """A name compared without order, case, punctuation or titles.

    Takes DICOM PN (``SMITH^JOHN^^DR``) and plain text (``Dr John Smith``) alike.
    """
    words = re.split(r"[\s^,.]+", name.upper())
    return tuple(sorted(w for w in words if w and w not in _TITLES))


def parse_register(text: str) -> Register:
    """The register from its CSV text (header ``id,name,role,scope,valid_until``).

    ``role`` and ``scope`` hold several values separated by ``;``.  A row
    that cannot be read is left out (its referrer is then unknown, so its
    orders are held) and named in ``problems``.
    """
    reader = csv.reader(io.StringIO(text))
    rows = list(reader)
    if not rows:
        return Register(problems=("the file is empty",))
    header = tuple(c.strip().lower() for c in rows[0])
    if header[: len(COLUMNS)] != COLUMNS:
        return Register(available=False, problems=(f"line 1: the header must be {','.join(COLUMNS)}",))
    referrers: list[Referrer] = []
    problems: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < len(COLUMNS):
            problems.append(f"line {line}: {len(row)} columns, {len(COLUMNS)} expected")
            continue
        rid, name, role, scope, until = (c.strip() for c in row[: len(COLUMNS)])
        if not rid:
            problems.append(f"line {line}: id is empty")
            continue
        valid_until = None
        if until:
            try:
                valid_until = date.fromisoformat(until)
            except ValueError:
                problems.append(f"line {line}: valid_until {until[:20]!r} is not a date (YYYY-MM-DD)")
                continue
        referrers.append(
            Referrer(
                id=rid,
                name=name,
                roles=tuple(r.strip().lower() for r in role.split(";") if r.strip()),
                scope=frozenset(s.strip().upper() for s in scope.split(";") if s.strip()),
                valid_until=valid_until,
            )
        )
    by_id: dict[str, Referrer] = {}
    by_name: dict[tuple, list[Referrer]] = {}
    for r in referrers:
        by_id[r.id.upper()] = r
        by_name.setdefault(name_key(r.name), []).append(r)
    return Register(tuple(referrers), tuple(problems), True, by_id, {k: tuple(v) for k, v in by_name.items()})


@dataclass(frozen=True, slots=True)
class Decision:
    entitled: bool
    reason: str = ""  # one of REASONS when not entitled
    detail: str = ""  # for the API and the ERR segment (no patient data)
    referrer: Referrer | None = None


def _in_scope(referrer: Referrer, item: WorklistItem) -> bool:
    if referrer.scope & ANY_SCOPE:
        return True
    wanted = {item.modality.upper()}
    if item.requested_procedure_code is not None:
        wanted.add(item.requested_procedure_code.value.upper())
    return bool(referrer.scope & wanted)


def check(item: WorklistItem, register: Register, today: date) -> Decision:
    """Is the referrer of ``item`` entitled to request it?"""
    if not register.available:
        return Decision(False, REGISTER_UNAVAILABLE, "the register of referrers could not be read")
    who = item.requesting_physician or item.referring_physician
    if not item.referrer_id and not who:
        return Decision(False, NO_REFERRER, "the order names no referrer")
    referrer = register.find(item.referrer_id, who)
    if referrer is None:
        shown = f"id {item.referrer_id[:32]}" if item.referrer_id else "the named referrer"
        return Decision(False, UNKNOWN, f"referrer ({shown}) is not in the register")
    # Entitlement is held when the referral is made (the day the gateway gets it).
    if referrer.valid_until is not None and today > referrer.valid_until:
        return Decision(False, EXPIRED, f"referrer {referrer.id} entitled until {referrer.valid_until.isoformat()}", referrer)
    if not _in_scope(referrer, item):
        return Decision(False, OUT_OF_SCOPE, f"referrer {referrer.id} is not entitled to request {item.modality}", referrer)
    return Decision(True, referrer=referrer)


def check_practitioner(register: Register, practitioner_id: str, today: date) -> str:
    """'' when ``practitioner_id`` may justify an exposure today, else why not."""
    if not register.available:
        return "the register could not be read"
    person = register.find(practitioner_id, "") if practitioner_id else None
    if person is None:
        return "not in the register"
    if PRACTITIONER not in person.roles:
        return f"role is not {PRACTITIONER}"
    if person.valid_until is not None and today > person.valid_until:
        return "entitlement expired"
    return ""
