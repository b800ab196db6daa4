"""MLLP framing (HL7 v2.5.1 Appendix C, MLLP release 2): the one copy.

A frame is <VT> message <FS><CR>.  :class:`MllpFramer` is pure: it takes
bytes as they arrive and gives back events -- a whole :class:`Frame`, a
frame that holds a stray start block (:class:`StrayStart`: refused, never
silently cut), a frame over the limit (:class:`TooLarge`) or bytes outside
any frame (:class:`Unframed`).  The bytes of a frame are kept as the chunks
received and joined once, so the buffer never grows by copying.

Around it, the small I/O helpers every side uses: :func:`read_frame` on an
asyncio stream (the gateway's senders, the EMR simulator),
:class:`MllpClient` on a blocking socket (the RIS simulator, tests,
benchmarks) and :class:`MllpReceiver`, a threaded blocking receiver (test
and benchmark peers).  The gateway's listener (gateway/hl7/listener.py)
drives the framer itself, to count and bound what each connection holds.
This is the only module of :mod:`hl7v2` that touches sockets.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Callable

VT = 0x0B  # start block
FS = 0x1C  # end block, then CR
CR = 0x0D
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_FRAME = 16 * 1024 * 1024


def frame(message: bytes) -> bytes:
    """Wrap one message in MLLP framing."""
    return START_BLOCK + message + END_BLOCK


class FrameTooLarge(Exception):
    pass


# -- the framer (pure) ---------------------------------------------------------


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
                start = data.find(START_BLOCK, pos)
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
            end = data.find(END_BLOCK, pos)
            stop = n if end < 0 else end
            if self._stray_at < 0:
                vt = data.find(START_BLOCK, pos, stop)
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


def _payload(data: bytes) -> bytes:
    """A frame's message: what follows its start block (bytes before it are skipped)."""
    start = data.find(START_BLOCK)
    return data[start + 1 :] if start >= 0 else data


# -- asyncio -----------------------------------------------------------------


async def read_frame(reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> bytes | None:
    """The next framed message from ``reader``; None at a clean end of stream.

    Bytes before the start block are skipped; a frame longer than
    ``max_frame`` raises :class:`FrameTooLarge` (the caller drops the link);
    a stream closed inside a frame raises ConnectionError.
    """
    buf = bytearray()
    while True:
        try:
            chunk = await reader.readuntil(END_BLOCK)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip() or buf:
                raise ConnectionError("connection closed inside a frame") from None
            return None
        except asyncio.LimitOverrunError as exc:
            # the limit is below the frame: take what is there and go on
            buf += await reader.readexactly(exc.consumed)
            if len(buf) > max_frame:
                raise FrameTooLarge(f"frame exceeds {max_frame} bytes") from None
            continue
        buf += chunk
        if len(buf) > max_frame + 3:
            raise FrameTooLarge(f"frame exceeds {max_frame} bytes")
        return _payload(bytes(buf[:-2]))


# -- blocking sockets ----------------------------------------------------------


class MllpClient:
    """Blocking MLLP client: one connection, many messages, one ACK each
    (over TLS when given an ``ssl.SSLContext``)."""

    max_frame = MAX_FRAME

    def __init__(self, host: str, port: int, timeout: float = 30.0, max_frame: int = MAX_FRAME, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        self.buf = b""
        self.max_frame = max_frame

    def send(self, message: bytes) -> None:
        self.sock.sendall(frame(message))

    def receive(self) -> bytes:
        """The next frame's payload; raises ConnectionError on close."""
        while END_BLOCK not in self.buf:
            if len(self.buf) > self.max_frame:
                raise FrameTooLarge(f"frame exceeds {self.max_frame} bytes")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a complete frame")
            self.buf += chunk
        data, self.buf = self.buf.split(END_BLOCK, 1)
        return _payload(data)

    def request(self, message: bytes) -> bytes:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


Handler = Callable[[bytes], "bytes | None"]


class MllpReceiver:
    """A threaded MLLP receiver on a free port: each frame's message goes to
    ``handle``, whose reply (bytes, or None for none) is sent back framed;
    ``sent(message)`` is called once that reply went out.  One thread per
    connection; ``connections`` counts them."""

    def __init__(
        self,
        handle: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 16,
        max_frame: int = MAX_FRAME,
        timeout: float | None = None,
        nodelay: bool = False,
        sent: Callable[[bytes], None] | None = None,
    ) -> None:
        self.handle = handle
        self.sent = sent
        self.max_frame = max_frame
        self.timeout = timeout  # per connection, None blocks
        self.nodelay = nodelay
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        framer = MllpFramer(self.max_frame)
        with conn:
            conn.settimeout(self.timeout)
            if self.nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                for event in framer.feed(chunk):
                    if not isinstance(event, Frame):
                        continue
                    reply = self.handle(event.message)
                    if reply is None:
                        continue
                    try:
                        conn.sendall(frame(reply))
                    except OSError:
                        return
                    if self.sent is not None:
                        self.sent(event.message)
                if framer.broken:
                    return

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(2)
