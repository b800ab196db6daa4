"""hl7v2: the one ER7 writer and reader, ACKs, and the MLLP helpers over real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hl7v2 import ack, er7
from hl7v2.charsets import codec_of, encode_message
from hl7v2.mllp import FrameTooLarge, MllpClient, MllpReceiver, frame, read_frame


def test_segment_numbers_fields_as_the_standard_does():
    """HL7 v2.5 2.5.4: MSH-1 is the field separator, MSH-2 the encoding characters."""
    msh = er7.segment("MSH", {3: "RIS", 10: "C1", 12: "2.5.1"})
    assert msh == "MSH|^~\\&|RIS|||||||C1||2.5.1"
    assert er7.split_fields(msh, "|")[10] == "C1"
    assert er7.segment("PID", {1: "1", 3: "P1", 5: ""}) == "PID|1||P1||"
    assert er7.segment("PID", {1: "1", 3: "P1", 5: ""}, trim=True) == "PID|1||P1"


def test_components_escape_and_drop_trailing_empties():
    assert er7.components("O|Brien", "Anne^Marie", "", "") == "O\\F\\Brien^Anne\\S\\Marie"
    assert er7.components("A", "", trim=False) == "A^"
    assert er7.subcomponents("id", "Fam&ily", "") == "id&Fam\\T\\ily"


values = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@given(st.lists(values, min_size=1, max_size=5))
def test_what_the_writer_writes_the_reader_reads(parts):
    text = er7.message([er7.segment("MSH", {3: "A", 9: "ORU^R01", 10: "C1", 12: "2.5.1"}), er7.segment("OBX", {5: er7.components(*parts)})])
    obx = er7.split_message(text, "utf-8").first("OBX")
    read = [obx.get(5, n + 1) for n in range(len(parts))]
    assert read == [p.replace("\r\n", "\n").replace("\r", "\n").strip() for p in parts] or any('""' == p.strip() for p in parts)


def test_msh_field_reads_the_first_line_only():
    raw = b"MSH|^~\\&|RIS|H|GW|D|2026||ORM^O01|CTRL9|P|2.5.1||||||8859/1\rPID|1\r"
    assert (er7.msh_field(raw, 10), er7.msh_field(raw, 18), er7.msh_field(raw, 9)) == ("CTRL9", "8859/1", "ORM^O01")
    assert er7.msh_field(b"PID|1", 10) == ""


def test_charsets_refuse_what_the_charset_cannot_hold():
    """HL7 v2.5 Table 0211; an empty MSH-18 is ASCII (2.15.9.18)."""
    assert codec_of("") == "ascii" and codec_of("8859/1") == "latin-1" and codec_of("EBCDIC") is None
    assert encode_message("Müller", "8859/1") == "Müller".encode("latin-1")
    with pytest.raises(ValueError, match="'ü'"):
        encode_message("Müller", "ASCII")


def test_a_peers_answer_echoes_msh_10_in_the_message_charset():
    raw = "MSH|^~\\&|DXAGW|DXA|EMR|HOSP|2026||ORU^R01^ORU_R01|M\\F\\1|P|2.5.1||||||8859/1\rPID|1\r".encode("latin-1")
    reply = ack.answer(raw, "AE", control_id="A1", timestamp="20260101", text="Müller refused")
    parsed = ack.parse_ack(reply, "8859/1")
    assert (parsed.code, parsed.control_id, parsed.message_type) == ("AE", "M\\F\\1", "ACK^R01^ACK")
    assert "Müller".encode("latin-1") in reply
    assert reply.split(b"\r")[0].split(b"|")[2:6] == [b"EMR", b"HOSP", b"DXAGW", b"DXA"]
    assert ack.read_msa(ack.answer(raw, "AA", control_id="A2", timestamp="1", acked_id="OTHER"))[:2] == ("AA", "OTHER")
    assert ack.check_ack(reply, "M|1")[0] is False  # MSA-2 is as written, escaped


def test_an_unreadable_message_gets_a_bare_ack():
    reply = ack.answer(b"not hl7", "AR", control_id="A3", timestamp="1", text="unreadable")
    assert ack.read_msa(reply) == ("AR", "", "unreadable")


def test_receiver_and_client_over_a_real_socket():
    seen = []
    done = threading.Event()

    def sent(message: bytes) -> None:
        seen.append(b"sent " + message)
        if message == b"MSH|two":
            done.set()

    receiver = MllpReceiver(lambda m: seen.append(m) or (b"ACK " + m), sent=sent)
    try:
        with MllpClient("127.0.0.1", receiver.port, timeout=5) as client:
            assert client.request(b"MSH|one") == b"ACK MSH|one"
            client.sock.sendall(b"junk" + frame(b"MSH|two")[:4])  # a frame split over two writes, junk before it
            client.sock.sendall(frame(b"MSH|two")[4:])
            assert client.receive() == b"ACK MSH|two"
        assert done.wait(5)
        assert seen == [b"MSH|one", b"sent MSH|one", b"MSH|two", b"sent MSH|two"]
        assert receiver.connections == 1
    finally:
        receiver.close()


def test_client_refuses_a_frame_over_its_limit():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"\x0b" + b"x" * 5000)
            conn.recv(10)

    threading.Thread(target=serve, daemon=True).start()
    client = MllpClient("127.0.0.1", server.getsockname()[1], timeout=5, max_frame=1000)
    try:
        with pytest.raises(FrameTooLarge):
            client.receive()
    finally:
        client.close()
        server.close()


def test_read_frame_on_an_asyncio_stream():
    async def run():
        async def on_conn(reader, writer):
            writer.write(b"\r\n" + frame(b"MSH|a") + frame(b"MSH|" + b"b" * 300))
            writer.write(b"\x0bMSH|cut")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=128)
        first = await read_frame(reader)
        second = await read_frame(reader)  # longer than the stream limit
        with pytest.raises(ConnectionError):
            await read_frame(reader)  # closed inside a frame
        writer.close()
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
        await read_frame(reader2)
        with pytest.raises(FrameTooLarge):
            await read_frame(reader2, max_frame=100)
        writer2.close()
        server.close()
        return first, second

    first, second = asyncio.run(run())
    assert first == b"MSH|a" and second == b"MSH|" + b"b" * 300
