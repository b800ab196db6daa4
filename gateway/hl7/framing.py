"""MLLP framing (HL7 v2.5.1 Appendix C, MLLP release 2), without I/O.

A frame is <VT> message <FS><CR>.  :class:`MllpFramer` takes bytes as they
arrive and gives back events: a whole :class:`Frame`, a frame that holds a
stray start block (:class:`StrayStart`: refused, never silently cut), a
frame over the limit (:class:`TooLarge`) or bytes outside any frame
(:class:`Unframed`).  The bytes of a frame are kept as the chunks received
and joined once, so the buffer never grows by copying.
"""

from __future__ import annotations

from dataclasses import dataclass

VT = 0x0B  # start block
FS = 0x1C  # end block, then CR
CR = 0x0D
_END = b"\x1c\x0d"


@dataclass(frozen=True, slots=True)
class Frame:
    message: bytes


@dataclass(frozen=True, slots=True)
class StrayStart:
    """A start block inside a frame.  ``message`` is what came before it."""

    message: bytes


@dataclass(frozen=True, slots=True)
class TooLarge:
    limit: int


@dataclass(frozen=True, slots=True)
class Unframed:
    size: int  # bytes outside a frame that were not white space


Event = Frame | StrayStart | TooLarge | Unframed


class MllpFramer:
    """Frames out of a byte stream; at most ``max_frame`` bytes buffered."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._chunks: list[bytes] = []
        self._size = 0
        self._in_frame = False
        self._stray_at = -1  # offset of the first stray VT in the frame
        self._fs_pending = False  # the last chunk ended with FS
        self.broken = False  # after TooLarge: the stream cannot be resynchronised

    @property
    def buffered(self) -> int:
        """Bytes of the frame being received."""
        return self._size

    def _reset(self) -> None:
        self._chunks = []
        self._size = 0
        self._in_frame = False
        self._stray_at = -1
        self._fs_pending = False

    def _take(self, end: int) -> bytes:
        """The frame's bytes up to ``end`` (an offset in the whole frame)."""
        data = b"".join(self._chunks)
        return data[:end]

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.broken:
            return events
        pos = 0
        n = len(data)
        while pos < n:
            if not self._in_frame:
                start = data.find(b"\x0b", pos)
                outside = data[pos : n if start < 0 else start]
                if outside.strip():
                    events.append(Unframed(len(outside)))
                if start < 0:
                    return events
                self._in_frame = True
                pos = start + 1
                continue
            # In a frame: an FS left at the end of the last chunk ends it on CR.
            if self._fs_pending:
                self._fs_pending = False
                if data[pos] == CR:
                    events.append(self._finish(self._size - 1))
                    pos += 1
                    continue
            end = data.find(_END, pos)
            stop = n if end < 0 else end
            if self._stray_at < 0:
                vt = data.find(b"\x0b", pos, stop)
                if vt >= 0:
                    self._stray_at = self._size + (vt - pos)
            piece = data[pos:stop]
            if self._size + len(piece) > self.max_frame:
                self._reset()
                self.broken = True
                events.append(TooLarge(self.max_frame))
                return events
            if piece:
                self._chunks.append(piece)
                self._size += len(piece)
            if end < 0:
                self._fs_pending = data[-1] == FS
                return events
            events.append(self._finish(self._size))
            pos = end + 2
        return events

    def _finish(self, end: int) -> Event:
        stray = self._stray_at
        if stray >= 0:
            event: Event = StrayStart(self._take(stray))
        else:
            event = Frame(self._take(end))
        self._reset()
        return event
