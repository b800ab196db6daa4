"""What every destination sender shares: the delivery and its outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class DeliveryError(Exception):
    """A delivery that did not succeed; ``permanent`` ones go to dead letter."""

    permanent = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(DeliveryError):
    """Try again later: the peer is down, busy, or answered a transient error."""


class Refused(DeliveryError):
    """The peer refused what can never succeed as it is (C-STORE 0xA9xx/0xCxxx, HL7 AR, HTTP 4xx)."""

    permanent = True


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A JSON document already serialised (keeps exact decimals)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row made concrete: what to send."""

    outbox_id: int
    kind: str
    path: Path | None = None  # a spooled DICOM file
    message: bytes | None = None  # an HL7 v2 message (ER7)
    control_id: str = ""  # its MSH-10
    resource: dict | None = None  # a FHIR resource or Bundle
    resource_json: bytes = b""  # the same, already serialised
    mpps_operation: str = ""  # create or set
    mpps_uid: str = ""
    mpps_attributes: bytes = b""  # DICOM JSON


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> None: ...
    async def close(self) -> None: ...


async def idle(sender: Sender) -> None:
    """Let a sender drop connections it has not used for a while."""
    hook = getattr(sender, "idle", None)
    if hook is not None:
        await hook()


class PathOutsideRoot(ValueError):
    """A file name built from received values that would leave its folder."""


def path_inside(root: Path, *parts: str) -> Path:
    """``root / parts``, refused unless it resolves inside ``root``.

    Every writer naming files after received values goes through this:
    each part must be one plain name (no separator, not ``.`` or ``..``),
    and the resolved path (symlinks followed) must stay under the resolved
    root.
    """
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise PathOutsideRoot("not a plain file name")
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    if not target.is_relative_to(base) or target == base:
        raise PathOutsideRoot("resolves outside its folder")
    return target
