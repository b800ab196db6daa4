"""Orthanc (Debian package) as a real PACS for tests: DICOM, REST and DICOMweb."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port, wait_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass
class Orthanc:
    proc: subprocess.Popen | None
    dir: Path
    dicom_port: int
    http_port: int
    aet: str = "ORTHANC"
    extra: dict | None = None  # more Orthanc settings, e.g. DicomModalities for C-MOVE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as rsp:
            return json.loads(rsp.read())

    def upload(self, data: bytes) -> dict:
        """POST one Part 10 file to /instances (Orthanc's REST API)."""
        req = urllib.request.Request(self.url + "/instances", data=data, method="POST", headers={"Content-Type": "application/dicom"})
        with urllib.request.urlopen(req, timeout=30) as rsp:
            return json.loads(rsp.read())

    def instance_uids(self) -> list[str]:
        """SOP Instance UIDs in the order Orthanc received them (its change log)."""
        out, since = [], 0
        while True:
            page = self.get(f"/changes?since={since}&limit=1000")
            for change in page["Changes"]:
                if change["ChangeType"] == "NewInstance":
                    tags = self.get(f"/instances/{change['ID']}/simplified-tags")
                    out.append(tags["SOPInstanceUID"])
            since = page["Last"]
            if page["Done"]:
                return out

    def start(self) -> None:
        config = {
            "Name": "dxagw-test",
            "StorageDirectory": str(self.dir / "storage"),
            "IndexDirectory": str(self.dir / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "SyncStorageArea": True,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **(self.extra or {}),
        }
        (self.dir / "orthanc.json").write_text(json.dumps(config))
        log = open(self.dir / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.dir / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
        wait_port(self.http_port, 30)
        wait_port(self.dicom_port, 30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def start_orthanc(folder: Path, extra: dict | None = None) -> Orthanc:
    folder.mkdir(parents=True, exist_ok=True)
    o = Orthanc(None, folder, free_port(), free_port(), extra=extra)
    o.start()
    return o


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
