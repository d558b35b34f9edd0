"""Open-file handles: one type per kind of open, and the table that numbers them.

* ``FileHandle``: a file opened through the mount (any mode).  It holds its ``StagedFile``
  (counted with ``WriteBack.opened``, so the file is never retired while open) and, once the
  file has a staged copy, a descriptor of that copy opened read-only or read-write.  Reads of a
  file without a staged copy come from its remote node through the read cache.
* ``DirHandle``: an open folder (libfuse 3 lists folders by handle, without a path).
* ``LinkHandle``: a virtual ``X.link`` file (see ``vfs/links.py``).

The ``HandleTable`` hands out FUSE file handle numbers; its lock guards only the table.
"""
from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import FsError
from ..writeback.staged import StagedFile
from .readcache import ReadState


@dataclass(eq=False)
class FileHandle:
    """A file opened for reading (``write=False``) or for writing (``write=True``)."""

    sf: StagedFile
    write: bool
    fd: int = -1                     # descriptor of the staged copy, opened when first needed
    flushed_to: int = 0              # bytes below this were handed to disk writeback
    read_state: ReadState = field(default_factory=ReadState)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def staged_fd(self) -> int:
        """The descriptor of the staged copy (which must exist), opened on first use."""
        with self.lock:
            if self.fd < 0:
                self.fd = os.open(self.sf.path, os.O_RDWR if self.write else os.O_RDONLY)
            return self.fd

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


@dataclass(eq=False)
class DirHandle:
    """An open folder (``opendir``): listings by handle work without a path."""

    folder: str                      # the folder's node handle


@dataclass(eq=False)
class LinkHandle:
    """An open virtual ``X.link`` file: its content is fixed at the first read."""

    target: Any                      # the Entry of X
    content: bytes | None = None


class HandleTable:
    """FUSE file handle numbers -> handles.  Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[int, Any] = {}
        self._next = 1

    def add(self, handle: Any) -> int:
        with self._lock:
            fh = self._next
            self._next += 1
            self._handles[fh] = handle
            return fh

    def get(self, fh: int | None) -> Any:
        """The handle numbered ``fh``; EBADF if there is none."""
        with self._lock:
            handle = self._handles.get(fh) if fh else None
        if handle is None:
            raise FsError(errno.EBADF, "no such open file")
        return handle

    def pop(self, fh: int) -> Any:
        with self._lock:
            return self._handles.pop(fh, None)
