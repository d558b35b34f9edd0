"""The queue's disk problems in words (issue 24): a damaged or unreadable ``queue.sqlite``
and a full disk under the state dir become one line saying what is wrong and what to do,
never a raw ``sqlite3`` exception.  No locks of the write-back; logs only ``disk_full``."""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time

from .. import config
from ..errors import MegafsError

log = logging.getLogger(__name__)


class QueueUnusable(MegafsError):
    """``queue.sqlite`` cannot be read or written: damaged, unreadable, or its disk is full
    (``errno`` ENOSPC, else EIO).  The message says which, and what to do (issue 24: it was
    ``DatabaseError: file is not a database`` or a traceback)."""

    def __init__(self, message: str, err: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = err  # type: ignore[misc]


FULL_NOTE_EVERY = 30.0    # seconds between two log lines about the same full disk
_full_lock = threading.Lock()
_full_said: dict[str, float] = {}


def disk_full(folder: str) -> str:
    """``the disk holding FOLDER is full (N free)``; logged at WARNING at most once every
    ``FULL_NOTE_EVERY`` seconds per folder (a full staging disk must not fill the log)."""
    text = "the disk holding %s is full (%s free)" % (folder, _free(folder))
    now = time.monotonic()
    with _full_lock:
        said = _full_said.get(folder)
        if said is not None and now - said < FULL_NOTE_EVERY:
            return text
        _full_said[folder] = now
    log.warning("%s: writes there fail with ENOSPC until space is freed; what was queued "
                "before is kept", text)
    return text


def queue_error(path: str, exc: sqlite3.Error) -> QueueUnusable:
    """The one-line error for a failed use of the queue database at ``path``: a full disk is
    named with its free bytes; otherwise the way to start over while keeping the staged
    files (the unsent contents) is given."""
    mount_dir = os.path.dirname(path)
    text = str(exc) or type(exc).__name__
    if "full" in text.lower() or getattr(exc, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
        return QueueUnusable("%s: the upload queue cannot save changes; free space there"
                             % disk_full(mount_dir), errno.ENOSPC)
    return QueueUnusable(
        "the upload queue %s is unusable (%s): to start over and keep its staged files "
        "(the unsent contents, in %s), move its folder aside with `mv %s %s.broken`, then "
        "mount again" % (path, text, os.path.join(mount_dir, "staging"), mount_dir,
                         mount_dir))


def _free(folder: str) -> str:
    try:
        st = os.statvfs(folder)
    except OSError:
        return "unknown"
    return config.format_size(st.f_bavail * st.f_frsize)
