"""A scripted MLLP receiver for tests: answers each message with the next ACK code."""

from __future__ import annotations

import socket
import threading


class MllpPeer:
    """Listens on a free port; answers AE/AA/AR... as scripted, then ``default``."""

    def __init__(self, script: list[str] | None = None, default: str = "AA") -> None:
        self.script = list(script or [])
        self.default = default
        self.received: list[str] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\x1c\r" in buf:
                    frame, buf = buf.split(b"\x1c\r", 1)
                    text = frame.lstrip(b"\x0b").decode("utf-8", "replace")
                    fields = text.split("\r")[0].split("|")
                    control_id = fields[9] if len(fields) > 9 else ""
                    with self.lock:
                        code = self.script.pop(0) if self.script else self.default
                        self.received.append(text)
                    ack = f"MSH|^~\\&|EMR|HOSP|DXAGW|DXA|20261124||ACK|A{len(self.received)}|P|2.5.1\rMSA|{code}|{control_id}|scripted {code}\r"
                    conn.sendall(b"\x0b" + ack.encode() + b"\x1c\r")

    def close(self) -> None:
        self._stop = True
        self.sock.close()
