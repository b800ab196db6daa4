"""A folder destination: files written durably (temp, fsync, rename)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import orjson

from routes.base import Delivery, PathOutsideRoot, Refused, path_inside


def _write(target: Path, data: bytes | None, source: Path | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    if source is not None:
        shutil.copyfile(source, temp)
    else:
        temp.write_bytes(data or b"")
    with open(temp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temp, target)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FolderSender:
    def __init__(self, path: str) -> None:
        self.root = Path(path)

    async def close(self) -> None:
        return None

    async def send(self, delivery: Delivery) -> None:
        if delivery.path is not None:
            name, data, source = delivery.path.name, None, delivery.path
        elif delivery.message is not None:
            name, data, source = f"{delivery.control_id or delivery.outbox_id}.hl7", delivery.message, None
        elif delivery.resource_json:
            name, data, source = f"{delivery.outbox_id}.json", delivery.resource_json, None
        elif delivery.resource is not None:
            name, data, source = f"{delivery.outbox_id}.json", orjson.dumps(delivery.resource), None
        elif delivery.mpps_attributes:
            name, data, source = f"{delivery.mpps_uid}.{delivery.outbox_id}.json", delivery.mpps_attributes, None
        else:
            raise Refused("nothing to write")
        # Names come from received values (MSH-10, an MPPS SOP Instance UID):
        # never a path outside the folder.
        try:
            target = path_inside(self.root, name)
        except PathOutsideRoot as exc:
            raise Refused(f"file name {exc}") from None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _write, target, data, source)
