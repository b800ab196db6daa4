"""Shared pieces of the benchmarks: processes, ports, the gateway, figures.

Not a test helper: nothing here asserts a time.  Every process started here
is put in its own process group and ended (SIGTERM, then SIGKILL) when the
benchmark exits, also on Ctrl-C.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_STARTED: list[subprocess.Popen] = []

sys.stdout.reconfigure(line_buffering=True)  # figures appear as they are measured, also in a pipe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], *, env: dict | None = None, log: Path | None = None, cwd: str | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group; it is ended when we exit."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # forked children (wlmscpfs --fork) too
    except ProcessLookupError:
        pass
    proc.wait()
    if proc in _STARTED:
        _STARTED.remove(proc)


def stop_all() -> None:
    for proc in list(_STARTED):
        stop(proc, grace=5.0)


interrupted = False


def _on_signal(signum, frame):  # noqa: ARG001
    """Ctrl-C / SIGTERM: end the servers at once, then unwind.

    The servers go first because a KeyboardInterrupt raised inside a
    pynetdicom call can be swallowed by it; with the peer gone, the next
    call fails and the benchmark unwinds through its ``finally`` anyway.
    """
    global interrupted
    interrupted = True
    for proc in list(_STARTED):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    raise KeyboardInterrupt


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


# -- the gateway -------------------------------------------------------------


BENCH_TOKEN = "bench-token-viewer-admin-metrics-01"  # the benchmarks' HTTP identity
BENCH_HEADERS = {"Authorization": f"Bearer {BENCH_TOKEN}"}


def write_gateway_config(path: Path, data_dir: Path, *, ae_title: str = "DXAGW", log_level: str = "INFO") -> dict:
    ports = {"dicom": free_port(), "hl7": free_port(), "http": free_port()}
    path.write_text(
        "\n".join(
            [
                f"dicom: {{ae_title: {ae_title}, host: 127.0.0.1, port: {ports['dicom']}}}",
                f"hl7: {{host: 127.0.0.1, port: {ports['hl7']}}}",
                f"http: {{host: 127.0.0.1, port: {ports['http']}}}",
                f"storage: {{path: {json.dumps(str(data_dir))}}}",
                f"logging: {{level: {log_level}}}",
                f"security: {{tokens: [{{name: bench, token: {BENCH_TOKEN}, roles: [viewer, admin, metrics]}}]}}",
                "",
            ]
        )
    )
    return ports


def start_gateway(config: Path, ports: dict, log: Path, *, cpu: str | None = None, timeout: float = 120.0) -> subprocess.Popen:
    """``python -m gateway run --config`` (optionally ``taskset -c cpu``), ready."""
    cmd = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = start(cmd, log=log, cwd=str(REPO))
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{ports['http']}/readyz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"the gateway was not ready after {timeout} s; see {log}")


# -- figures -----------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} | {os.cpu_count()} CPUs {cpu} | Python {platform.python_version()} | {platform.platform()}"
