"""The direct command-set encoder gives pydicom's bytes, or leaves it to pydicom."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages as dm
from pynetdicom import dimse_primitives as dp
from pynetdicom.dsutils import encode

from dicomext.command_set import _fast, encode_command_set

MWL = "1.2.840.10008.5.1.4.31"
SC = "1.2.840.10008.5.1.4.1.1.7"


def _find_rsp(status):
    p = dp.C_FIND()
    p.MessageIDBeingRespondedTo, p.AffectedSOPClassUID, p.Status = 7, MWL, status
    if status == 0xFF00:
        p.Identifier = BytesIO(b"\x10\x00\x10\x00\x00\x00\x00\x00")
    return dm.C_FIND_RSP, p


def _store_rq():
    p = dp.C_STORE()
    p.MessageID, p.AffectedSOPClassUID, p.AffectedSOPInstanceUID, p.Priority = 3, SC, "1.2.826.0.1.3680043.2.1125.1.12345", 2
    p.MoveOriginatorApplicationEntityTitle, p.MoveOriginatorMessageID = "DXA1", 9
    p.DataSet = BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    return dm.C_STORE_RQ, p


def _store_rsp_with_comment():
    p = dp.C_STORE()
    p.MessageIDBeingRespondedTo, p.AffectedSOPClassUID, p.AffectedSOPInstanceUID, p.Status = 3, SC, "1.2.3", 0xC000
    p.ErrorComment = "cannot read the dataset: odd"
    return dm.C_STORE_RSP, p


def _echo_rq():
    p = dp.C_ECHO()
    p.MessageID, p.AffectedSOPClassUID = 1, "1.2.840.10008.1.1"
    return dm.C_ECHO_RQ, p


def _event_report_rq():
    p = dp.N_EVENT_REPORT()
    p.MessageID, p.AffectedSOPClassUID, p.AffectedSOPInstanceUID, p.EventTypeID = 5, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1
    p.EventInformation = BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    return dm.N_EVENT_REPORT_RQ, p


@pytest.mark.parametrize("build", [lambda: _find_rsp(0xFF00), lambda: _find_rsp(0x0000), _store_rq, _store_rsp_with_comment, _echo_rq, _event_report_rq])
def test_same_bytes_as_pydicom(build):
    cls, primitive = build()
    msg = cls()
    msg.primitive_to_message(primitive)  # sets the Command Group Length with the installed encoder
    ours = encode_command_set(msg.command_set, True, True)
    assert _fast(msg.command_set) is not None  # the direct path was taken
    assert ours == encode(msg.command_set, True, True)
    assert msg.command_set.CommandGroupLength == len(ours) - 12  # PS3.7 E.1: bytes after the group length element


def test_what_it_does_not_pack_goes_to_pydicom():
    ds = Dataset()
    ds.CommandGroupLength = 0
    ds.OffendingElement = [0x00100010, 0x00100020]  # AT, two values
    assert _fast(ds) is None
    assert encode_command_set(ds, True, True) == encode(ds, True, True)
    ds = Dataset()
    ds.ErrorComment = "ünïcode"
    assert _fast(ds) is None
    assert encode_command_set(ds, True, True) == encode(ds, True, True)
    assert encode_command_set(_echo_cmd(), False, True) == encode(_echo_cmd(), False, True)


def _echo_cmd():
    cls, p = _echo_rq()
    msg = cls()
    msg.primitive_to_message(p)
    return msg.command_set
