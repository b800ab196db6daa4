"""dicomext.transport.pdv_items: P-DATA-TF bodies split without copies (PS3.8 9.3.5.1)."""

from __future__ import annotations

from dicomext.transport import ReceivedPData, pdv_items


def item(context_id: int, value: bytes) -> bytes:
    return (len(value) + 1).to_bytes(4, "big") + bytes([context_id]) + value


def test_items_are_views_of_the_one_buffer():
    body = bytearray(item(1, b"\x03command") + item(3, b"\x02last fragment"))
    items = pdv_items(body)
    assert [(cx, bytes(v)) for cx, v in items] == [(1, b"\x03command"), (3, b"\x02last fragment")]
    assert all(isinstance(v, memoryview) and v.obj is body for _, v in items)
    primitive = ReceivedPData(items).to_primitive()
    assert [(cx, bytes(v)) for cx, v in primitive.presentation_data_value_list] == [(1, b"\x03command"), (3, b"\x02last fragment")]


def test_items_that_do_not_add_up_are_refused():
    good = item(1, b"\x02data")
    assert pdv_items(bytearray(good[:-1])) is None  # item longer than the PDU
    assert pdv_items(bytearray(good + b"\x00\x00")) is None  # a stray partial item
    assert pdv_items(bytearray((1).to_bytes(4, "big") + b"\x01")) is None  # no control header
    assert pdv_items(bytearray()) is None  # PS3.8: one or more items
