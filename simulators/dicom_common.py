"""Small pynetdicom helpers shared by the DICOM simulators."""

from __future__ import annotations

import socket

import dicomext
from dicomext import association
from pydicom.uid import UID


# pynetdicom's own reactors, with the race of its association reactor
# closed (dicomext/checkpoint.py): seen with eight exams at once.
dicomext.install(only=("checkpoint_race",))

# Status names for reports (PS3.7 C, PS3.4 B.2.3, F.7.2, J.3)
STATUS_TEXT = {
    0x0000: "Success",
    0x0001: "Warning: requested optional attributes are not supported",
    0x0107: "Warning: attribute list error",
    0x0110: "Processing failure",
    0x0112: "No such SOP instance",
    0x0117: "Invalid object instance",
    0x0119: "Class-instance conflict",
    0x0122: "SOP class not supported",
    0x0211: "Unrecognised operation",
    0xA700: "Out of resources",
    0xA900: "Dataset does not match SOP class",
    0xB000: "Coercion of data elements",
    0xB007: "Data set does not match SOP class (warning)",
    0xB006: "Elements discarded",
    0xC000: "Cannot understand",
    0xFF00: "Pending",
    0xFF01: "Pending (optional keys not supported)",
}


def status_text(status: int | None) -> str:
    if status is None:
        return "no response (timeout, abort or rejected context)"
    return f"0x{status:04X} {STATUS_TEXT.get(status, '')}".strip()


def is_success(status: int | None, warning_ok: bool = True) -> bool:
    if status is None:
        return False
    if status == 0x0000:
        return True
    return warning_ok and (status in (0x0001, 0x0107, 0x0116) or (status & 0xF000) == 0xB000)


def status_of(rsp) -> int | None:
    """The Status of a response dataset from a pynetdicom send_* call."""
    if rsp is None or "Status" not in rsp:
        return None
    return int(rsp.Status)


def set_nodelay(event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle off (pynetdicom leaves it on)."""
    try:
        sock = association.raw_socket(event.assoc)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def parse_endpoint(text: str, default_ae: str = "") -> tuple[str, str, int]:
    """``AE@HOST:PORT`` or ``HOST:PORT`` -> (ae, host, port)."""
    ae, _, rest = text.rpartition("@")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected [AE@]HOST:PORT, got {text!r}")
    return (ae or default_ae), host, int(port)


STORAGE_COMMITMENT = UID("1.2.840.10008.1.20.1")
STORAGE_COMMITMENT_INSTANCE = UID("1.2.840.10008.1.20.1.1")
MPPS = UID("1.2.840.10008.3.1.2.3.3")
MWL_FIND = UID("1.2.840.10008.5.1.4.31")
