"""hl7v2.mllp: MLLP frames out of a byte stream (HL7 v2.5.1 Appendix C)."""

from hl7v2.mllp import Frame, MllpFramer, StrayStart, TooLarge, Unframed


def test_frames_split_anywhere_come_out_whole():
    stream = b"\x0bMSH|a\x1c\x0d\x0bMSH|b\x1c\x0d"
    for step in range(1, len(stream) + 1):
        framer = MllpFramer(100)
        events = [e for i in range(0, len(stream), step) for e in framer.feed(stream[i : i + step])]
        assert events == [Frame(b"MSH|a"), Frame(b"MSH|b")], step
        assert framer.buffered == 0


def test_fs_not_followed_by_cr_is_data():
    assert MllpFramer(100).feed(b"\x0bA\x1cB\x1c\x0d") == [Frame(b"A\x1cB")]


def test_stray_start_block_refuses_the_frame_and_keeps_what_came_before():
    framer = MllpFramer(100)
    assert framer.feed(b"\x0bMSH|one\x0bMSH|two\x1c\x0d") == [StrayStart(b"MSH|one")]
    assert framer.feed(b"\x0bMSH|three\x1c\x0d") == [Frame(b"MSH|three")]


def test_junk_outside_frames_is_reported_white_space_is_not():
    framer = MllpFramer(100)
    assert framer.feed(b"\r\n  ") == []
    assert framer.feed(b"GET / HTTP/1.1\r\n") == [Unframed(16)]


def test_a_frame_over_the_limit_stops_the_stream():
    framer = MllpFramer(10)
    assert framer.feed(b"\x0b" + b"x" * 11) == [TooLarge(10)]
    assert framer.broken and framer.buffered == 0
    assert framer.feed(b"\x0bok\x1c\x0d") == []
