"""A scripted MLLP receiver for tests: answers each message with the next ACK code."""

from __future__ import annotations

import threading

from hl7v2.ack import answer
from hl7v2.mllp import MllpReceiver


class MllpPeer:
    """Listens on a free port; answers AE/AA/AR... as scripted, then ``default``."""

    def __init__(self, script: list[str] | None = None, default: str = "AA") -> None:
        self.script = list(script or [])
        self.default = default
        self.received: list[str] = []
        self.lock = threading.Lock()
        self._receiver = MllpReceiver(self._answer, backlog=8)
        self.port = self._receiver.port

    def _answer(self, message: bytes) -> bytes:
        with self.lock:
            code = self.script.pop(0) if self.script else self.default
            self.received.append(message.decode("utf-8", "replace"))
            n = len(self.received)
        return answer(message, code, control_id=f"A{n}", timestamp="20261124", text=f"scripted {code}")

    def close(self) -> None:
        self._receiver.close()
