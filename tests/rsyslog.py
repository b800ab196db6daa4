"""A real rsyslog (Debian package ``rsyslog``, ``rsyslog-gnutls`` for TLS) run
unprivileged with its own config on a free port, writing what it parsed."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.support import free_port, wait_port

RSYSLOGD = "/usr/sbin/rsyslogd"


def have_rsyslog() -> bool:
    return shutil.which(RSYSLOGD) is not None


class Rsyslog:
    """``transport`` udp, tcp or tls (RFC 5425, with ``cert``/``key``/``ca``)."""

    # What rsyslog's RFC 5424 parser made of each message, one per line.
    TEMPLATE = "%syslogfacility%|%syslogseverity%|%protocol-version%|%app-name%|%msgid%|%structured-data%|%msg%\\n"

    def __init__(self, work: Path, transport: str, *, cert: Path | None = None, key: Path | None = None, ca: Path | None = None, port: int | None = None) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.transport = transport
        self.out = work / "received.log"
        lines = [
            f'global(workDirectory="{work}" maxMessageSize="256k"'
            + (f' defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}"' if transport == "tls" else "")
            + ")",
        ]
        if transport == "udp":
            lines += ['module(load="imudp")', f'input(type="imudp" address="127.0.0.1" port="{self.port}")']
        elif transport == "tcp":
            lines += ['module(load="imtcp")', f'input(type="imtcp" address="127.0.0.1" port="{self.port}")']
        else:
            lines += ['module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")', f'input(type="imtcp" address="127.0.0.1" port="{self.port}")']
        lines += [
            f'template(name="parsed" type="string" string="{self.TEMPLATE}")',
            f'action(type="omfile" file="{self.out}" template="parsed" flushOnTXEnd="on" asyncWriting="off")',
        ]
        (work / "rsyslog.conf").write_text("\n".join(lines) + "\n")
        self.log = open(work / "rsyslogd.out", "ab")
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "rsyslogd.pid")], stdout=self.log, stderr=subprocess.STDOUT)
        if transport == "udp":
            time.sleep(0.5)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None and "rsyslogd" not in (work / "rsyslogd.out").read_text(errors="replace") and not (work / "rsyslogd.pid").exists():
                time.sleep(0.05)
        else:
            wait_port(self.port)
        if self.proc.poll() is not None:
            raise RuntimeError("rsyslogd did not start:\n" + (work / "rsyslogd.out").read_text(errors="replace"))

    def lines(self) -> list[str]:
        if not self.out.exists():
            return []
        return [line for line in self.out.read_text(encoding="utf-8", errors="replace").splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
