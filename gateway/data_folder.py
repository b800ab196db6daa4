"""The data folder is private: files 0600, folders 0700 (README "Security").

The SQLite store holds raw HL7 with patient data and the spool holds the
images; nobody but the gateway's own user may read them.  The process
umask is set to 077 before anything is created, so every file and folder
the gateway makes afterwards (the database and its -wal/-shm, spool files
and folders, folder destinations) is private to its user.  What an older
version left readable at the top of the data folder is tightened at start;
files deeper in an existing spool are not walked (that could take long on
a big spool): ``chmod -R go-rwx`` the folder once after upgrading.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_private(data: Path) -> None:
    """Set umask 077, create ``data`` and tighten it and what is directly in it."""
    os.umask(0o077)
    data.mkdir(parents=True, exist_ok=True)
    _tighten(data)
    for child in data.iterdir():
        _tighten(child)


def _tighten(path: Path) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    want = FOLDER_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
    if stat.S_IMODE(st.st_mode) & ~want:
        os.chmod(path, stat.S_IMODE(st.st_mode) & want)
