"""Encoding DIMSE command sets without pydicom's general writer.

A command set (PS3.7 6.3, Annex E) is a handful of group 0000 elements,
always Implicit VR Little Endian (PS3.7 6.3.1).  pynetdicom encodes each
one twice with pydicom's ``write_dataset`` (once for the Command Group
Length, once to send): ~0.2 ms each on a small VM, paid for every C-FIND
pending response, C-STORE response and N-EVENT-REPORT.  Here the common
value representations (UL, US, UI and the short strings) are packed
directly; anything else (AT, multiple values, another syntax) goes to
pydicom as before, so the bytes are the same either way (PS3.5 7.1.3,
6.2: UI padded with NUL, other strings with a space, to an even length).
"""

from __future__ import annotations

import struct

from pynetdicom.dsutils import encode as pydicom_encode

from dicomext.guard import Mirror, Patch, Replacement

_STRINGS = {"UI": b"\x00", "AE": b" ", "LO": b" ", "SH": b" ", "CS": b" "}
_HEADER = struct.Struct("<HHI")


def _fast(ds) -> bytes | None:
    out = bytearray()
    for elem in ds:
        vr = elem.VR
        value = elem.value
        if value is None or value == "":
            data = b""
        elif vr == "UL" and type(value) is int:
            data = struct.pack("<I", value)
        elif vr == "US" and type(value) is int:
            data = struct.pack("<H", value)
        elif vr in _STRINGS and isinstance(value, str) and "\\" not in value:
            try:
                data = value.encode("ascii")
            except UnicodeEncodeError:
                return None
            if len(data) % 2:
                data += _STRINGS[vr]
        else:
            return None
        tag = elem.tag
        out += _HEADER.pack(tag >> 16, tag & 0xFFFF, len(data))
        out += data
    return bytes(out)


def encode_command_set(ds, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:
    """``pynetdicom.dsutils.encode`` for a command set, packing the common VRs directly."""
    if is_implicit_vr and is_little_endian and not deflated:
        data = _fast(ds)
        if data is not None:
            return data
    return pydicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


REPLACEMENT = Replacement(
    name="command_set",
    summary="DIMSE command sets packed with struct instead of pydicom's writer (same bytes)",
    mirrors=(
        Mirror("pynetdicom.dimse_messages:DIMSEMessage.encode_msg", "73000c902c52832dab302ddb3bc274ea93d205a810a197225dd87d4c1212ba57"),
        Mirror("pynetdicom.dimse_messages:DIMSEMessage._set_command_group_length", "c3057c97344d5db3dc7a084ca5520ff7e04bbc8a07f3738295362c97718e3085"),
    ),
    # dimse_messages calls encode() only on command sets: those two read it
    patches=(
        Patch(
            "pynetdicom.dimse_messages:encode",
            encode_command_set,
            users=("DIMSEMessage.encode_msg", "DIMSEMessage._set_command_group_length"),
        ),
    ),
)
