"""The data directory and the secret files in it: only their owner may read them.

Every voicemix process that keeps secrets on disk (the controller's `secrets.json` and TLS key,
the engine's control certificate key, the controller's pinned engine certificates) creates its
data directory with mode 0700 and each secret file with mode 0600, written through a temporary
file and renamed, so a crash never leaves half a key and no other user can read one even for a
moment (the mode is set when the file is created, not after).
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("voicemix")

DIRECTORY_MODE = 0o700
SECRET_FILE_MODE = 0o600


def private_directory(path: Path) -> Path:
    """`path` created (with its parents) as 0700; an existing directory of ours that others can
    read is narrowed to 0700 (one that is not ours is left alone, with a warning)."""
    path = Path(path)
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & 0o077:
        if info.st_uid == os.getuid():
            os.chmod(path, DIRECTORY_MODE)
        else:
            log.warning("data directory %s is readable by others and not ours to narrow", path)
    return path


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 (atomically: a temporary file renamed over it)."""
    path = Path(path)
    private_directory(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    try:
        os.fchmod(fd, SECRET_FILE_MODE)  # an old temporary file keeps its mode through O_CREAT
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(tmp, path)


def narrow_secret_file(path: Path) -> None:
    """An existing secret file (written by an older version, or by hand) made 0600."""
    path = Path(path)
    if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077 and path.stat().st_uid == os.getuid():
        os.chmod(path, SECRET_FILE_MODE)
