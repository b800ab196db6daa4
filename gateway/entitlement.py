"""Referrer entitlement: the register file and what happens to an order.

The decision is mappings.entitlement.check (pure); here the register is read
(again when the file's modification time or size changes) and the policy
applied: hold (status HELD with the reason), accept, or reject (the caller
answers AR / 422).  Every method here may block on the file system: call
them from the executor, never on the event loop.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

from gateway.config import EntitlementSettings
from gateway.logs import fields
from mappings import entitlement as ent
from mappings.hl7_orders import Action, UpsertOrder
from mappings.worklist import HELD, SCHEDULED

log = logging.getLogger("gateway.entitlement")


class NotEntitled(Exception):
    """``reject`` policy: the order is refused and nothing is stored."""

    def __init__(self, decision: ent.Decision, field: str) -> None:
        super().__init__(decision.detail)
        self.decision = decision
        self.field = field  # where the referrer was read (ORC-12, OBR-16, PV1-8, ...)


@dataclass(frozen=True, slots=True)
class Screened:
    actions: tuple[Action, ...]
    held: tuple[str, ...] = ()  # one reason per step held
    accepted_unentitled: tuple[str, ...] = ()  # policy accept: reasons let through


class Entitlement:
    def __init__(self, settings: EntitlementSettings, today: Callable[[], date] = date.today) -> None:
        self.settings = settings
        self.enabled = settings.referrers_file is not None
        self.path = Path(settings.referrers_file) if settings.referrers_file else None
        self._today = today
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._register = ent.UNAVAILABLE
        self._unreadable = False

    def register(self) -> ent.Register:
        """The register, read again if the file changed (blocking)."""
        assert self.path is not None
        with self._lock:
            try:
                st = os.stat(self.path)
                key = (st.st_mtime_ns, st.st_size)
                if key != self._key:
                    register = ent.parse_register(self.path.read_text(encoding="utf-8-sig"))
                    self._key, self._register = key, register
                    log.info(
                        "entitlement.register_loaded",
                        extra=fields(referrers=len(register.referrers), problems=list(register.problems)[:20], usable=register.available),
                    )
            except (OSError, UnicodeDecodeError) as exc:
                if not self._unreadable:  # logged once until the file can be read again
                    log.error("entitlement.register_unreadable", extra=fields(path=str(self.path), error=type(exc).__name__))
                self._unreadable = True
                self._key, self._register = None, ent.Register(available=False, problems=(type(exc).__name__,))
            else:
                self._unreadable = False
            return self._register

    def screen(self, actions: tuple[Action, ...]) -> Screened:
        """Check each new or changed step's referrer and apply the policy."""
        if not self.enabled:
            return Screened(actions)
        register = self.register()
        today = self._today()
        out: list[Action] = []
        held: list[str] = []
        let_through: list[str] = []
        for action in actions:
            if not isinstance(action, UpsertOrder):
                out.append(action)
                continue
            items = []
            for item in action.items:
                decision = ent.check(item, register, today)
                if decision.entitled or item.status != SCHEDULED:
                    items.append(item.replace(hold_reason=""))
                elif self.settings.on_unknown == ent.REJECT:
                    raise NotEntitled(decision, item.referrer_field)
                elif self.settings.on_unknown == ent.ACCEPT:
                    let_through.append(decision.reason)
                    items.append(item)
                else:
                    held.append(decision.reason)
                    items.append(item.replace(status=HELD, hold_reason=f"{decision.reason}: {decision.detail}"))
            out.append(UpsertOrder(items=tuple(items), key=action.key, is_change=action.is_change))
        return Screened(tuple(out), tuple(held), tuple(let_through))

    def practitioner(self, candidates: list[str]) -> tuple[str, str]:
        """(register id, '') for the first of ``candidates`` (the caller's
        registration, then name) that may justify a held order today, else
        ('', why not).  Blocking."""
        if not self.enabled:
            return "", "entitlement is not configured"
        register = self.register()
        for candidate in (c for c in candidates if c):
            if register.find(candidate, "") is not None:
                problem = ent.check_practitioner(register, candidate, self._today())
                return (candidate, "") if not problem else ("", problem)
        return "", "not in the register"


def reason_of(hold_reason: str) -> str:
    """The closed-set reason at the head of an item's hold_reason."""
    head = hold_reason.split(":", 1)[0]
    return head if head in ent.REASONS else ""
