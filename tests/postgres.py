"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's binaries).

``start_cluster()`` runs ``initdb`` and ``pg_ctl`` from /usr/lib/postgresql/*/bin
in a fresh temporary folder, trust authentication on its own unix socket and
on 127.0.0.1 at a free port, and returns a ``Cluster``; ``cluster.stop()``
ends it and removes the folder.  PostgreSQL refuses to run as root: as root,
the cluster runs as the system user ``dxa-pg`` (created with ``useradd`` if
missing) through ``runuser``.  Nothing here depends on a packaged cluster or
service (Debian's postgresql package may or may not start one).

``fresh_database(server_url)`` creates an empty database on a server and
returns its URL; the test daemon (tests/support.py ``start_daemon``) takes one
per daemon folder when ``DXA_TEST_DATABASE_URL`` names a server.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.ports import free_port

RUN_AS = "dxa-pg"  # the system user the cluster runs as when we are root
SUPERUSER = "dxa"  # the cluster's superuser role; trust authentication, no password

# A throwaway cluster need not survive a power cut: tests run faster without
# fsync.  The benchmarks pass durable=True (crash-safe commits, as in production).
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass
class Cluster:
    bin: Path
    dir: Path  # holds data/, the socket and the log
    port: int
    user: str | None  # the OS user it runs as, None: ourselves

    @property
    def url(self) -> str:
        """The server's maintenance database, as the superuser over TCP."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new empty database's URL."""
        return fresh_database(self.url)

    def log_text(self) -> str:
        try:
            return (self.dir / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            _run(self, [str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _run(cluster: Cluster, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if cluster.user is not None:
        cmd = ["runuser", "-u", cluster.user, "--", *cmd]
    # cwd: the cluster's folder, which its user can enter (a root checkout may not be)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=cluster.dir)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def _os_user() -> str | None:
    """None when we may run PostgreSQL ourselves; as root, the ``dxa-pg`` user (made if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", RUN_AS], check=True, capture_output=True)
    return RUN_AS


def start_cluster(*, durable: bool = False, settings: dict[str, str] | None = None) -> Cluster:
    """initdb + pg_ctl start in a new temporary folder; raises RuntimeError if PostgreSQL is absent."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)")
    user = _os_user()
    folder = Path(tempfile.mkdtemp(prefix="dxa-pg-"))  # short: the socket path must fit 107 bytes
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    cluster = Cluster(bindir, folder, free_port(), user)
    try:
        _run(cluster, [str(bindir / "initdb"), "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(cluster.port),
            "unix_socket_directories": f"'{folder}'",
            "max_connections": "300",  # a daemon's pool per test module, two replicas, the benchmarks
            "shared_buffers": "64MB",
            **({} if durable else FAST),
            **(settings or {}),
        }
        with open(folder / "data" / "postgresql.conf", "a") as f:
            f.write("\n# tests/postgres.py\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        _run(cluster, [str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "postgres.log"), "-w", "-t", "60", "start"])
    except BaseException:
        cluster.stop()
        raise
    return cluster


def fresh_database(server_url: str) -> str:
    """Create an empty database on the server ``server_url`` connects to; its URL."""
    import psycopg

    name = "dxa_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))
