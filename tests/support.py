"""Test helpers: free ports, the real daemon as a subprocess, MLLP, dcmtk.

HTTP needs a credential (README "Security").  ``start_daemon`` configures one
test identity holding every role, ``TEST_TOKEN``; send it on every call:

    status, body, headers = daemon.request("POST", "/api/worklist", {"...": ...})
    urllib.request.Request(daemon.http + path, headers=daemon.headers)   # or by hand
    auth_headers(daemon)                                                 # the same dict

``daemon.request`` sends JSON bodies as ``application/json`` (pass
``content_type=`` for DICOM JSON / FHIR JSON, ``raw=`` for bytes) and returns
(status, parsed JSON or text, response headers) without raising on 4xx/5xx.
Extra identities for a test: ``start_daemon(tmp, {"security": {"tokens":
[...]}})`` adds them beside the test identity (``test_token=False`` leaves it out).

The store: SQLite in the daemon's folder, unless ``DXA_TEST_DATABASE_URL``
names a PostgreSQL server (``postgresql://user@host:port/postgres``): then each
daemon folder gets a fresh database there (``storage.database``), kept for a
daemon restarted on the same folder, which is the same replica
(``storage.replica_id``: the folder's name).  tests/postgres.py starts a throwaway
server; the modules in tests/integration/postgresql/ run again on it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import urllib.error
import urllib.request

import orjson
import yaml

from gateway.ports import free_port, wait_port  # noqa: F401 (the tests import them from here)
from hl7v2 import mllp

# pynetdicom installs Python scripts named findscu/echoscu/storescu; the
# tests use dcmtk's own binaries.
DCMTK = Path("/usr/bin")


def dcmtk(tool: str) -> str:
    path = DCMTK / tool
    if not path.exists():
        raise RuntimeError(f"dcmtk's {tool} is not installed (apt-get install dcmtk)")
    return str(path)


@dataclass
class Daemon:
    proc: subprocess.Popen
    dir: Path
    config_path: Path
    dicom_port: int
    hl7_port: int
    http_port: int
    ae_title: str = "DXAGW"
    token: str = ""
    database: str = ""  # storage.database (PostgreSQL), "" for SQLite in dir/data

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def headers(self) -> dict[str, str]:
        """The test identity's credential (every role)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, body: object = None, *, raw: bytes | None = None, content_type: str = "application/json", headers: dict | None = None, token: str | None = None, timeout: float = 10):
        """One HTTP call as the test identity (or ``token``): (status, JSON or text, headers)."""
        return http_request(self.http + path, method, body, raw=raw, content_type=content_type, headers=headers, token=self.token if token is None else token, timeout=timeout)

    def log_text(self) -> str:
        return (self.dir / "gateway.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode


TEST_TOKEN = "test-token-holding-every-role-0001"
ALL_ROLES = ["orders", "radiographer", "reporter", "admin", "viewer", "metrics"]
TEST_IDENTITY = {"name": "test", "token": TEST_TOKEN, "roles": ALL_ROLES, "display_name": "Dr Test Reporter", "registration": "GMC 0000001"}


def auth_headers(daemon: "Daemon") -> dict[str, str]:
    """``Authorization`` for the daemon's test identity."""
    return daemon.headers


def http_request(url: str, method: str = "GET", body: object = None, *, raw: bytes | None = None, content_type: str = "application/json", headers: dict | None = None, token: str = "", timeout: float = 10):
    """(status, parsed JSON or text, headers) of one HTTP call; 4xx/5xx do not raise."""
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    if method in ("POST", "PUT", "PATCH") or data is not None:
        hdrs["Content-Type"] = content_type
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data if data is not None else (b"" if method in ("POST", "PUT", "PATCH") else None), method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as rsp:
            status, text, rh = rsp.status, rsp.read(), rsp.headers
    except urllib.error.HTTPError as exc:
        status, text, rh = exc.code, exc.read(), exc.headers
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = text.decode("utf-8", "replace")
    return status, parsed, rh


DATABASE_ENV = "DXA_TEST_DATABASE_URL"


def folder_database(tmp: Path, server_url: str) -> str:
    """The PostgreSQL database of a daemon folder: made on first use, then the same."""
    from tests.postgres import fresh_database

    marker = tmp / "database-url"
    if not marker.exists():
        marker.write_text(fresh_database(server_url))
    return marker.read_text()


def start_daemon(tmp: Path, overrides: dict | None = None, *, test_token: bool = True) -> Daemon:
    """Start ``dxa-gateway run`` with a config in ``tmp`` on free ports,
    with the test identity (``TEST_TOKEN``, every role) unless ``test_token=False``."""
    tmp.mkdir(parents=True, exist_ok=True)
    ports = {"dicom": free_port(), "hl7": free_port(), "http": free_port()}
    config = {
        "dicom": {"ae_title": "DXAGW", "host": "127.0.0.1", "port": ports["dicom"]},
        "hl7": {"host": "127.0.0.1", "port": ports["hl7"]},
        "http": {"host": "127.0.0.1", "port": ports["http"]},
        "storage": {"path": str(tmp / "data")},
        # A study's objects arrive at once in tests: draft its report soon
        # (README "BMD results"; a test of the window sets its own).
        "reports": {"settle_seconds": 0.3},
    }
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    if os.environ.get(DATABASE_ENV) and "database" not in config["storage"]:
        config["storage"]["database"] = folder_database(tmp, os.environ[DATABASE_ENV])
        # A daemon restarted on its folder is the same replica: it resumes its own
        # rows in flight at once instead of waiting for their leases to run out.
        config["storage"].setdefault("replica_id", tmp.name)
    if test_token:
        security = config.setdefault("security", {})
        security["tokens"] = [TEST_IDENTITY, *security.get("tokens", [])]
    for section in ports:  # an override may fix a port (e.g. one a PACS was told of)
        ports[section] = config[section]["port"]
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp / "gateway.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    daemon = Daemon(proc, tmp, path, ports["dicom"], ports["hl7"], ports["http"], token=TEST_TOKEN if test_token else "", database=config["storage"].get("database", ""))
    try:
        for port in ports.values():
            wait_port(port)
    except TimeoutError:
        proc.kill()
        raise RuntimeError("daemon did not start:\n" + daemon.log_text())
    return daemon


class MllpClient(mllp.MllpClient):
    """A real MLLP client (hl7v2.mllp) with the tests' text API: one connection, many messages."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        super().__init__(host, port, timeout=timeout)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: str | bytes, encoding: str = "utf-8") -> str:
        """Send one message, return its ACK's text."""
        super().send(message.encode(encoding) if isinstance(message, str) else message)
        return self.read_ack(encoding)

    def read_ack(self, encoding: str = "utf-8") -> str:
        return self.receive().decode(encoding)


def ack_fields(ack: str) -> dict[str, list[str]]:
    """Segments of an ACK by id: {"MSA": [...fields], "ERR": [...]}."""
    out = {}
    for seg in ack.strip("\r").split("\r"):
        parts = seg.split("|")
        out[parts[0]] = parts
    return out


def findscu(port: int, keys: list[str], *, aet: str = "DXA1", aec: str = "DXAGW", extra: list[str] | None = None, out_dir: Path | None = None, timeout: float = 30):
    """Run dcmtk findscu -W; return (returncode, stdout+stderr, result files)."""
    args = [dcmtk("findscu"), "-W", "-aet", aet, "-aec", aec, "-to", "10"]
    for k in keys:
        args += ["-k", k]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        args += ["-X", "-od", str(out_dir)]
    args += extra or []
    args += ["127.0.0.1", str(port)]
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, errors="replace")
    files = sorted(out_dir.glob("*")) if out_dir is not None else []
    return proc.returncode, proc.stdout + proc.stderr, files


def storescu(port: int, datasets, folder: Path, *, aet: str = "DXA1", aec: str = "DXAGW") -> str:
    """Save ``datasets`` under ``folder`` and send them in one association with
    dcmtk storescu; every one must be answered Success.  Returns its output."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    env = dict(os.environ, TCP_NODELAY="1")
    r = subprocess.run([dcmtk("storescu"), "-v", "-aet", aet, "-aec", aec, "127.0.0.1", str(port), *files], capture_output=True, text=True, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert out.count("Received Store Response (Success)") == len(files), out
    return out


def have_dcmtk() -> bool:
    return shutil.which(str(DCMTK / "findscu")) is not None


class _PostgresConnection:
    """psycopg with sqlite3's ``?`` placeholders, so a test's query reads either store."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=5)

    def execute(self, sql: str, params: tuple | list = ()):
        return self.conn.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self.conn.close()


def store_connection(daemon: "Daemon"):
    """A connection to the daemon's store (SQLite file or PostgreSQL database), read-side for tests."""
    if daemon.database:
        return _PostgresConnection(daemon.database)
    import sqlite3

    return sqlite3.connect(daemon.dir / "data" / "gateway.sqlite3", timeout=5)
