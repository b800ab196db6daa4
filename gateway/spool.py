"""The durable spool: received objects as files, exactly as they came.

pynetdicom writes each incoming dataset (with its file meta) to an
:class:`IncomingFile` under ``incoming/`` on the spool's own file system,
which hashes the dataset on the way in; :meth:`Spool.keep` makes it durable
(fsync file, link into place, fsync folders) without a copy and without
reading it back.  A stored file is never overwritten or deleted: a second
copy gets its own name.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from mappings.instances import InstanceHeader, valid_uid
from routes.base import PathOutsideRoot, path_inside

CHUNK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.files = root / "spool"
        self.min_free_bytes = min_free_bytes
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.files.mkdir(parents=True, exist_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.files).free

    def has_room(self) -> bool:
        return self.free_bytes() >= self.min_free_bytes

    def clean_incoming(self) -> int:
        """Remove partial receptions left by a crash or a vanished peer.

        A reception holds an exclusive lock on its file while it is written
        (:class:`IncomingFile`); a file whose lock can be taken has no writer
        left.  Replicas sharing the spool folder (storage.database) thus
        leave each other's live receptions alone.
        """
        removed = 0
        for path in self.incoming.iterdir():
            if not path.is_file():
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # another replica removed it
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being received, by another replica
            finally:
                os.close(fd)  # (also releases the lock just taken)
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def _target(self, header: InstanceHeader) -> Path:
        # The UIDs were checked (PS3.5 9.1: digits and dots only), so they are
        # safe as path components: no traversal, no separators.
        for uid in (header.study_uid, header.series_uid, header.sop_instance_uid):
            if not valid_uid(uid):
                raise ValueError("invalid UID for a file name")
        parts = (header.study_uid, header.series_uid, header.sop_instance_uid)
        try:
            path_inside(self.files, *parts)
        except PathOutsideRoot as exc:
            raise ValueError(f"spool file name: {exc}") from None
        return self.files.joinpath(*parts)  # as the index keeps it: relative to the root

    def incoming_file(self) -> "IncomingFile":
        return IncomingFile(self.incoming)

    def keep(self, temp: Path, header: InstanceHeader, received: "IncomingFile | None" = None) -> tuple[Path, int, str]:
        """Make ``temp`` durable in the spool; returns (path, size, sha256).

        The sha256 is of the dataset as the peer sent it (the bytes after the
        file meta), so it can be compared with the sender's own copy; when
        ``received`` (the still-open file ``temp`` was written through) has
        it, the file is not read back.  The file is hard-linked under its
        final name (never replacing an existing file), then the file and the
        folders are fsynced; only then may the index row be committed.
        """
        if received is not None and received.digest_ready():
            size, sha256, fd, opened = received.size, received.sha256(), received.fileno(), None
        else:
            opened = open(temp, "rb")
            try:
                size, sha256 = _dataset_digest(opened)
            except BaseException:
                opened.close()
                raise
            fd = opened.fileno()
        try:
            base = self._target(header)
            folder = base.parent
            new_dirs = [p for p in (folder.parent, folder) if not p.exists()]
            folder.mkdir(parents=True, exist_ok=True)
            version = 0
            while True:
                final = base.with_name(f"{base.name}.dcm" if version == 0 else f"{base.name}.{version}.dcm")
                try:
                    os.link(temp, final)
                    break
                except FileExistsError:
                    version += 1
            # The link is made before the fsync: a journalling file system
            # (ext4, xfs) then commits the new names with the data, and the
            # folder fsyncs that POSIX asks for find little left to do.  Until
            # the index row is committed the file is not acknowledged.
            os.fsync(fd)
        finally:
            if opened is not None:
                opened.close()
        fsync_dir(folder)
        for created in reversed(new_dirs):
            fsync_dir(created.parent)
        return final, size, sha256

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.rglob("*.dcm"))


class IncomingFile:
    """A dataset being received, written unbuffered and hashed as it arrives.

    Stands in for the ``NamedTemporaryFile`` pynetdicom streams a C-STORE
    dataset into (it writes the preamble and file meta, then each P-DATA
    fragment, calling ``.file.flush()`` after each).  Bytes past the file
    meta (PS3.10 7.1, known once the group length is written) go into the
    sha256, so the handler need not read the file back.
    """

    def __init__(self, folder: Path) -> None:
        fd, self.name = tempfile.mkstemp(suffix=".dcm", dir=folder)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed: Spool.clean_incoming leaves a live reception
        self._raw = os.fdopen(fd, "wb", buffering=0)
        self.file = self  # pynetdicom flushes ``.file``; writes are unbuffered
        self.size = 0
        self._head = bytearray()
        self._meta_end: int | None = None
        self._broken = False
        self._digest = hashlib.sha256()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        start = self.size
        written = 0
        while written < len(view):
            written += self._raw.write(view[written:])
        self.size += written
        self._hash(view, start)
        return written

    def _hash(self, view: memoryview, start: int) -> None:
        if self._meta_end is None:
            if self._broken:
                return
            self._head += view[: max(0, 144 - start)]
            if len(self._head) < 144:
                return
            try:
                self._meta_end = meta_length(bytes(self._head))
            except ValueError:
                self._broken = True  # keep() reads the file back and says why
                return
        skip = self._meta_end - start
        if skip <= 0:
            self._digest.update(view)
        elif skip < len(view):
            self._digest.update(view[skip:])

    def digest_ready(self) -> bool:
        return self._meta_end is not None and self.size >= self._meta_end and not self._raw.closed

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()


def meta_length(head: bytes) -> int:
    """Bytes of preamble and file meta (PS3.10 7.1): 132 + the group 2 elements.

    (0002,0000) File Meta Information Group Length is the first element,
    explicit VR little endian: tag(4) VR(2) length(2) value(4).
    """
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a DICOM file with a File Meta Information Group Length")
    return 144 + int.from_bytes(head[140:144], "little")


def _dataset_digest(f) -> tuple[int, str]:
    """(file size, sha256 of the dataset after the file meta) of an open file."""
    head = f.read(144)
    f.seek(meta_length(head))
    digest = hashlib.sha256()
    while chunk := f.read(CHUNK):
        digest.update(chunk)
    return f.seek(0, os.SEEK_END), digest.hexdigest()


def sha256_of(path: Path) -> str:
    """sha256 of a DICOM file's dataset (what the peer sent), as the index keeps it."""
    with open(path, "rb") as f:
        return _dataset_digest(f)[1]
