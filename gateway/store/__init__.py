"""The store interface: what the daemon keeps, whatever database holds it.

:class:`Store` is the contract; :class:`~gateway.store.sqlite.SqliteStore` is
the embedded default.  A PostgreSQL store implements the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from mappings.hl7_orders import Action, OrderKey
from mappings.mwl import IndexFilter
from mappings.worklist import WorklistItem


class StoreError(RuntimeError):
    """The store cannot do what was asked (schema too new, bad value)."""


class UnknownOrder(StoreError):
    """A change or cancel names an order the gateway does not have."""

    def __init__(self, key: OrderKey) -> None:
        super().__init__("unknown order")
        self.key = key


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message as received, kept raw beside what it changed."""

    source: str  # hl7, fhir
    sender: str
    message_id: str  # MSH-10; empty: no duplicate check
    message_type: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class InboundResult:
    duplicate: bool
    ack_code: str
    item_ids: tuple[int, ...]


class DuplicateInstance(StoreError):
    """An MPPS N-CREATE for a SOP Instance UID that exists (0x0111)."""


class NoSuchInstance(StoreError):
    """An N-SET or lookup for an instance the gateway does not have (0x0112)."""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A stored object as the spool index keeps it."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    accession: str
    modality: str
    manufacturer: str
    kind: str
    transfer_syntax: str
    size: int
    sha256: str
    path: str
    calling_ae: str


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: int
    record: InstanceRecord
    received_at: str
    is_current: bool


@dataclass(frozen=True, slots=True)
class MppsRow:
    id: int
    sop_instance_uid: str
    status: str
    calling_ae: str
    worklist_item_id: int | None
    attributes: bytes  # DICOM JSON


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    destination: str
    kind: str
    ref_table: str
    ref_id: int
    order_key: str
    state: str
    attempts: int
    next_attempt_at: str
    last_error: str


@dataclass(frozen=True, slots=True)
class WorklistRow:
    id: int
    item: WorklistItem
    created_at: str
    updated_at: str


class Store(Protocol):
    """Thread-safe; every write is durable when the call returns."""

    schema_version: int

    def apply_inbound(self, message: InboundMessage, actions: tuple[Action, ...]) -> InboundResult: ...
    def add_worklist_items(self, items: list[WorklistItem], *, sender: str = ..., actor: str = ...) -> list[int]: ...
    def get_worklist_item(self, row_id: int) -> WorklistRow | None: ...
    def set_worklist_status(self, row_id: int, status: str, *, actor: str) -> bool: ...
    def list_worklist(self, **filters: object) -> list[WorklistRow]: ...
    def find_worklist(self, flt: IndexFilter) -> Iterator[WorklistRow]: ...
    def count_worklist_by_status(self) -> dict[str, int]: ...
    def audit(self, event: str, actor: str, detail: dict) -> None: ...
    def list_audit(self, *, event: str | None = None, actor: str | None = None, limit: int = 100) -> list[dict]: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


def open_store(path: str) -> "Store":
    """The store under ``storage.path`` (SQLite, the embedded default)."""
    from pathlib import Path

    from gateway.store.sqlite import SqliteStore

    return SqliteStore(Path(path) / "gateway.sqlite3")
