"""The store's records and errors, shared by every aggregate and both databases."""

from __future__ import annotations

from dataclasses import dataclass

from mappings.hl7_orders import OrderKey
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
