"""The server's data directory made private, and the control token kept in it (issue 20).

``prepare(DIR)`` creates DIR (and missing parents), ``blobs/`` and ``uploads/`` with mode 0700
and the database file with 0600, whatever the umask.  A DIR that already exists keeps its mode
(megafs never changes the mode of a folder it did not create); if other users can open it, a
warning says so: what is inside stays private by its own modes.  A database file left
readable by an older server is tightened to 0600 (a file the server made).

The control token (``DIR/control-token``, 0600, 32 random bytes base64url, new at every start)
is what the control endpoints ask for in the ``X-Megafs-Token`` header: only a process that can
read the data dir can change faults, policies or quotas or read the kept mail.
"""
from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from .. import config
from .db import DB_NAME

log = logging.getLogger(__name__)

TOKEN_NAME = "control-token"
TOKEN_HEADER = "X-Megafs-Token"
TOKEN_BYTES = 32
PRIVATE_FILE = 0o600


def prepare(data_dir: str | os.PathLike[str]) -> Path:
    """Make ``data_dir`` ready (see the module docstring); returns it as a Path.  OSError if a
    folder cannot be made."""
    path = Path(data_dir)
    existed = path.is_dir()
    config.private_dir(str(path))
    if existed:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("data directory %s: other users can open it (mode %04o); the server "
                        "keeps its files private inside (0700/0600), `chmod 700 %s` hides "
                        "their names too", path, mode, path)
    for sub in ("blobs", "uploads"):
        config.private_dir(str(path / sub))
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        _private_file(path / name, create=name == DB_NAME)
    return path


def _private_file(path: Path, create: bool) -> None:
    """Create ``path`` empty with 0600, or tighten an existing one of ours to 0600."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0),
                     PRIVATE_FILE)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != PRIVATE_FILE and st.st_uid == os.getuid():
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def new_token(data_dir: str | os.PathLike[str]) -> str:
    """A fresh control token, written (atomically, 0600) to ``data_dir/control-token``."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    config.atomic_write(str(Path(data_dir) / TOKEN_NAME), token + "\n", PRIVATE_FILE)
    return token


def read_token(data_dir: str | os.PathLike[str]) -> str:
    """The running server's control token, for its clients (tests, scripts, users' tools).
    Raises OSError (PermissionError for another user: the file is 0600)."""
    with open(Path(data_dir) / TOKEN_NAME, encoding="ascii") as fh:
        return fh.read().strip()
