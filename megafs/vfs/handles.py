"""Open-file handles: one type per kind of open, and the table that numbers them.

* ``FileHandle``: a file with local state opened through the mount (any mode; every open
  for writing).  It holds its ``StagedFile`` (counted with ``WriteBack.opened``, so the file
  is never retired while open) and, once the file has a staged copy, a descriptor of that copy
  opened read-only or read-write.  Reads of a file without a staged copy come from its remote
  node through the read cache.
* ``NodeHandle``: a remote file without local state opened read-only (issue 21).  It holds the
  node it opened (handle, key, size: MEGA never changes a node's bytes) and reads it through
  the read cache to the end, whatever happens to the name meanwhile; ``Readers`` counts it, so
  the committer deletes no node being read (``QueueState.being_read``).  No staged file; if
  the same file is written through the mount later (a staged file holding the node gets a
  staged copy), the number is switched to a ``FileHandle`` of that staged file, so the reader
  sees the writes as POSIX says (``FileIO.handle_of``).
* ``DirHandle``: an open folder (libfuse 3 lists folders by handle, without a path).
* ``LinkHandle``: a virtual ``X.link`` file (see ``vfs/links.py``).

The ``HandleTable`` hands out FUSE file handle numbers; its lock guards only the table.
"""
from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import crypto
from ..errors import FsError
from ..tree.nodes import Node
from ..writeback.queue import WriteBack
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
class NodeHandle:
    """A remote file opened read-only while it had no local state (see the module docstring).
    ``node`` is kept for ``fstat`` only; the bytes are those of ``handle``/``key``/``size``,
    fixed at open."""

    node: Node
    handle: str                      # the node's handle
    key: crypto.FileKey
    size: int                        # bytes
    read_state: ReadState = field(default_factory=ReadState)
    lock: threading.Lock = field(default_factory=threading.Lock)    # guards the switch


class Readers:
    """How many ``NodeHandle`` s hold each node (node handle -> count).  Thread-safe; lookups
    (``__contains__``, the committer's question) take no lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def __contains__(self, handle: object) -> bool:
        return handle in self._counts

    def add(self, handle: str) -> None:
        with self._lock:
            counts = dict(self._counts)
            counts[handle] = counts.get(handle, 0) + 1
            self._counts = counts

    def remove(self, handle: str) -> bool:
        """One reader of ``handle`` left; True if it was the last."""
        with self._lock:
            counts = dict(self._counts)
            left = counts.get(handle, 0) - 1
            if left > 0:
                counts[handle] = left
            else:
                counts.pop(handle, None)
            self._counts = counts
            return left <= 0

    def hold(self, node: Node | None, wb: WriteBack) -> NodeHandle | None:
        """A ``NodeHandle`` of ``node`` (ProtocolError, EIO, if it has no usable key), counted
        as a reader; None if a staged file holds the node by now (resolve the name again).
        Counted first, then checked: a node the committer may delete is held by a staged file
        until it is deleted, so either the committer sees this reader or this sees the
        holder."""
        assert node is not None
        opened = NodeHandle(node, node.handle, node.file_key, node.size)
        self.add(node.handle)
        if wb.hides(node):
            self.release(node.handle, wb)
            return None
        return opened

    def release(self, handle: str, wb: WriteBack) -> None:
        """A ``NodeHandle`` of node ``handle`` was closed (or switched to a staged file)."""
        if self.remove(handle) and wb.holder(handle) is not None:
            wb.touch_all()        # its last reader: a staged file may delete it now


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

    def replace(self, fh: int, old: Any, new: Any) -> Any:
        """Number ``fh`` names ``new`` from now on if it still names ``old``; the handle it
        names after the call (None once released)."""
        with self._lock:
            current = self._handles.get(fh)
            if current is old:
                self._handles[fh] = current = new
            return current

    def numbers(self, wanted: Callable[[Any], bool]) -> list[int]:
        """The numbers of the handles for which ``wanted(handle)`` is true, now."""
        with self._lock:
            return [fh for fh, handle in self._handles.items() if wanted(handle)]

    def pop(self, fh: int) -> Any:
        with self._lock:
            return self._handles.pop(fh, None)
