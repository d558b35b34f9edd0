"""Open files: create/open, read, write, truncate, flush, release and fsync.

Owns what happens between ``open`` and ``release``.  A read-only open of a remote file with
no local state makes no staged file (issue 21): its ``NodeHandle`` holds the node (content is
immutable per node) and reads it through the read cache, counted in ``Readers`` so the
committer deletes no node being read; a rename over it, a new version uploaded here or another
client's change leave the reader with the bytes it opened.  Opening for writing gives the file
a staged file, but downloads nothing: the first write (or a truncate that keeps bytes) brings
its old content into the staged copy (``_materialize``, under the file's own lock, outside the
namespace lock); reads come from the staged copy when there is one, else from the remote node.
``close`` (FUSE flush) makes the data and the file's row durable before it returns.  A
``FileHandle`` keeps its ``StagedFile`` (counted with ``WriteBack.opened``), so a file is never
retired while open.  Never imports FUSE; raises ``FsError`` with the errno the caller must see.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from typing import Callable

from ..api.download import start_writeback
from ..errors import ApiCode, FsError, MegaError
from ..tree.meta import MODE_ATTR, mode_value
from ..tree.nodes import Node
from ..tree.tree import Tree
from ..writeback.queue import WriteBack
from ..writeback.record import with_attrs
from ..writeback.staged import StagedFile
from ..writeback.diskerrors import disk_full
from .ahead import FILES_AHEAD, FolderOrder
from .handles import FileHandle, HandleTable, NodeHandle, Readers
from .namespace import DIR, Namespace
from .readcache import ReadCache

log = logging.getLogger(__name__)

WRITEBACK_STEP = 8 << 20         # start disk writeback of a sequential writer every 8 MiB


class FileIO:
    """The data operations of the filesystem core (see the module docstring)."""

    def __init__(self, ns: Namespace, wb: WriteBack, tree: Tree, reads: ReadCache,
                 handles: HandleTable) -> None:
        self.ns = ns
        self.wb = wb
        self.tree = tree
        self.reads = reads
        self.handles = handles
        self.readers = Readers()           # NodeHandles per node: kept from the committer
        self.order = FolderOrder(tree, 2 * FILES_AHEAD)    # the files a traversal reads next
        wb.state.being_read = self.readers.__contains__
        # ``-o fsync=local``: fsync makes the data durable on the local disk only; the upload
        # follows as after a close (issue 22)
        self.fsync_local = False

    def create(self, path: str, flags: int = os.O_WRONLY, mode: int | None = None) -> int:
        """``open(O_CREAT)``: a new empty file, or an existing one opened (and emptied with
        ``O_TRUNC``); EEXIST with ``O_EXCL`` if the name exists.  ``mode``: the new file's
        permission bits (the umask already applied by the kernel), uploaded with it."""
        with self.ns.lock:
            parent, name = self.ns.parent_of(path)
            entry = self.ns.lookup(parent.handle, name)
            if entry is None:
                sf = self.ns.add(parent.handle, name, content=True, mtime_ns=time.time_ns())
                if mode is not None:
                    sf.change(lambda rec: with_attrs(rec, {MODE_ATTR: mode_value(mode)}))
                self.ns.changed(parent.handle)
                return self._open_file(sf, True)
            if entry.kind == DIR:
                raise FsError(errno.EISDIR, "a folder has that name")
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST, "the file exists")
            sf = self.ns.staged_for(entry)
            fh = self._open_file(sf, True)
        if flags & os.O_TRUNC:
            self._truncate_file(sf, 0)
        return fh

    def open(self, path: str, flags: int) -> int:
        """``open`` without ``O_CREAT``: nothing is downloaded until data is read or written;
        a read-only open of a file without local state holds its node (``NodeHandle``)."""
        write = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        for _attempt in range(100):
            try:
                entry = self.ns.resolve(path)
            except FsError as exc:
                # a file replaced by rename while open, gone by now: its name's new content
                origin = self.ns.hidden_origin(path) if exc.errno == errno.ENOENT else None
                if origin is None:
                    raise
                path = origin
                continue
            if entry.kind == DIR:
                if write:
                    raise FsError(errno.EISDIR, "a folder cannot be opened for writing")
                return 0
            if entry.sf is None and not write:
                opened = self.readers.hold(entry.node, self.wb)
                if opened is None:
                    continue      # a staged file took the node meanwhile: it shows the file
                self.reads.reset_bad(opened.handle)          # a new open downloads afresh
                return self.handles.add(opened)
            sf = self.ns.staged_for(entry)
            if self.wb.opened(sf, write):
                if sf.rec.committed and not sf.rec.has_copy:
                    self.reads.reset_bad(sf.rec.committed)   # a new open downloads afresh
                fh = self.handles.add(FileHandle(sf, write))
                if flags & os.O_TRUNC:
                    try:
                        self._truncate_file(sf, 0)
                    except BaseException:
                        self.release(fh)
                        raise
                return fh
            # Retired between the lookup and the open: the retirement holds the namespace
            # lock until the name shows the remote node; wait for it, then resolve again.
            # A hidden name (a file replaced by rename while open) that can no longer be
            # opened gives way to its name's new content.
            origin = self.ns.hidden_origin(path)
            if origin is not None:
                path = origin
                continue
            with self.ns.lock:
                pass
        raise FsError(errno.EAGAIN, "the file kept changing while being opened")

    def handle_of(self, fh: int) -> object:
        """The handle numbered ``fh`` (EBADF if none).  A ``NodeHandle`` whose file was
        written through the mount since it was opened (a staged file holding its node has a
        staged copy: the same file, maybe renamed or removed since) becomes a read-only
        ``FileHandle`` of that staged file first, so it reads what was written."""
        opened = self.handles.get(fh)
        if not isinstance(opened, NodeHandle):
            return opened
        sf = self.wb.holder(opened.handle)
        if sf is None or not sf.rec.has_copy:
            return opened
        with opened.lock:
            if self.handles.get(fh) is not opened:
                return self.handles.get(fh)        # switched by another read meanwhile
            if not self.wb.opened(sf, False):
                return opened                      # retired: its node is current again
            switched = FileHandle(sf, False)
            current = self.handles.replace(fh, opened, switched)
        if current is switched:
            self.readers.release(opened.handle, self.wb)
        else:
            self.wb.closed(sf, False)              # released meanwhile (release counted it)
        return current

    def _open_file(self, sf: StagedFile, write: bool) -> int:
        if not self.wb.opened(sf, write):      # cannot happen under the namespace lock
            raise FsError(errno.EAGAIN, "the file was retired while being opened")
        return self.handles.add(FileHandle(sf, write))

    def file_handle(self, fh: int) -> FileHandle:
        handle = self.handles.get(fh)
        if not isinstance(handle, FileHandle):
            raise FsError(errno.EBADF, "not an open file")
        return handle

    def read(self, fh: int, size: int, offset: int,
             cancelled: Callable[[], bool] | None = None) -> bytes:
        """Bytes of an open file; a read from MEGA that waits (the transfer quota) gives up
        with EINTR once ``cancelled()`` is true."""
        opened = self.handle_of(fh)
        if isinstance(opened, NodeHandle):
            try:
                return self.reads.read(opened.handle, opened.key, opened.size, offset, size,
                                       opened.read_state, cancelled,
                                       lambda: self.order.around(opened.handle))
            except MegaError as exc:
                if exc.code != ApiCode.ENOENT:
                    raise
                raise FsError(errno.EIO, "the file was removed from MEGA while open: only "
                              "bytes fetched before can be read") from None
        handle = self.file_handle(fh)
        sf = handle.sf
        with self.wb.lock:
            has_copy, committed, length = sf.rec.has_copy, sf.rec.committed, sf.rec.size
        if has_copy:
            return os.pread(handle.staged_fd(), size, offset)
        node = self.tree.get(committed) if committed else None
        if node is None:
            if length == 0:
                return b""
            raise FsError(errno.EIO, "the file's node is gone from MEGA")
        return self.reads.read(node.handle, node.file_key, node.size, offset, size,
                               handle.read_state, cancelled,
                               lambda: self.order.around(node.handle))

    def write(self, fh: int, data: bytes, offset: int,
              cancelled: Callable[[], bool] | None = None) -> int:
        handle = self.file_handle(fh)
        if not handle.write:
            raise FsError(errno.EBADF, "not open for writing")
        sf = handle.sf
        self._materialize(sf, cancelled=cancelled)
        if self.wb.staging_max and offset + len(data) > sf.rec.size:
            self.wb.control.make_room(sf, offset + len(data), cancelled)    # --staging-max
        fd = handle.staged_fd()
        sf.premac.before_write(offset)
        try:
            n = os.pwrite(fd, data, offset)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise FsError(exc.errno, disk_full(self.wb.staging)) from None
            raise
        sf.premac.after_write(offset, n)
        end = offset + n
        sf.written(end=end)
        if end - handle.flushed_to >= WRITEBACK_STEP and offset >= handle.flushed_to:
            # Sequential writer: start the disk writeback of what it wrote so far, so the
            # fsync that close() must do finds little left (it was ~0.3 s of a 2.8 s dd of
            # 512 MiB).  Asynchronous: it does not wait for the disk.
            start_writeback(fd, handle.flushed_to, end - handle.flushed_to)
            handle.flushed_to = end
        return n

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if length < 0:
            raise FsError(errno.EINVAL, "negative length")
        if fh:
            handle = self.handles.get(fh)
            if isinstance(handle, FileHandle):
                self._truncate_file(handle.sf, length)
                return
        if path is None:
            raise FsError(errno.EBADF, "no path and no open file")
        entry = self.ns.resolve(path)
        if entry.kind == DIR:
            raise FsError(errno.EISDIR, "a folder cannot be truncated")
        sf = self.ns.staged_for(entry)
        if not self.wb.opened(sf, True):
            with self.ns.lock:        # retired meanwhile: wait for the retirement, retry
                pass
            return self.truncate(path, length)
        try:
            self._truncate_file(sf, length)
            self.wb.flush(sf)      # truncate(2) by path: nothing will close this file
        finally:
            self.wb.closed(sf, True)

    def _truncate_file(self, sf: StagedFile, length: int) -> None:
        with self.wb.lock:
            if sf.rec.size == length:
                return            # no change: nothing to download, mtime stays (POSIX)
        self._materialize(sf, keep=length)
        if self.wb.staging_max and length > sf.rec.size:
            self.wb.control.make_room(sf, length)                            # --staging-max
        if length == 0:
            sf.premac.start(sf.path)     # empty again: MACs can be made while it is rewritten
        else:
            sf.premac.invalidate()
        os.truncate(sf.path, length)
        self.wb.wrote(sf, length)

    def _materialize(self, sf: StagedFile, keep: int | None = None,
                     cancelled: Callable[[], bool] | None = None) -> None:
        """Give ``sf`` a staged copy holding its committed node's bytes (only the first
        ``keep`` bytes are needed: none at all for a truncate to 0).  EINTR, and no copy,
        when ``cancelled()`` turns true while the download waits (the transfer quota)."""
        if sf.rec.has_copy:
            return
        node = copy_node(self.wb, self.tree, self.reads, sf, keep, cancelled)
        if node is not None:
            self._switch_readers(node.handle)

    def _switch_readers(self, handle: str) -> None:
        """Every ``NodeHandle`` of node ``handle`` becomes a handle of the staged file that
        now has a copy of it, at once rather than at its next read: an idle reader must not
        keep the old version in its folder for other clients (``a`` and ``a (HANDLE)``; found
        by tests/core/test_core_model.py)."""
        for fh in self.handles.numbers(lambda h: isinstance(h, NodeHandle)
                                       and h.handle == handle):
            try:
                self.handle_of(fh)
            except FsError:
                pass                    # released meanwhile

    def flush(self, fh: int) -> None:
        """``close``: the staged data and the file's row are durable before this returns."""
        handle = self.handles.get(fh)
        if isinstance(handle, FileHandle) and handle.write:
            try:
                self.wb.flush(handle.sf, handle.fd if handle.fd >= 0 else None)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise FsError(exc.errno, disk_full(self.wb.staging)) from None
                raise

    def release(self, fh: int) -> None:
        """The last close of ``fh`` (files and folders)."""
        handle = self.handles.pop(fh)
        if isinstance(handle, NodeHandle):
            self.readers.release(handle.handle, self.wb)
        if not isinstance(handle, FileHandle):
            return
        try:
            if handle.write:
                # mmap'd pages can be written back after the last flush
                self.wb.flush(handle.sf, handle.fd if handle.fd >= 0 else None)
        finally:
            handle.close()
            self.wb.closed(handle.sf, handle.write)

    def fsync(self, fh: int, cancelled: Callable[[], bool] | None = None) -> None:
        """Returns once the file's current data is on MEGA (EIO with the reason if its upload
        failed for good); with ``fsync_local`` once it is durable in the staging area (the
        upload follows once no writer has the file open)."""
        handle = self.file_handle(fh)
        sf = handle.sf
        self.wb.flush(sf, handle.fd if handle.fd >= 0 else None)
        if self.fsync_local:
            return
        with self.wb.lock:
            if sf.rec.unlinked:
                return
        self.wb.force(sf)
        self.wb.control.wait(sf, None, cancelled)


def copy_node(wb: WriteBack, tree: Tree, reads: ReadCache, sf: StagedFile, keep: int | None,
              cancelled: Callable[[], bool] | None) -> Node | None:
    """Make ``sf``'s staged copy from its committed node (see ``FileIO._materialize``); the
    node copied, if this call made the copy (None if another call had made it)."""
    with sf.materialize:
        with wb.lock:
            if sf.rec.has_copy:
                return None
            committed = sf.rec.committed
        node = tree.get(committed) if committed else None
        if wb.staging_max and node is not None and keep != 0:
            wb.control.make_room(sf, node.size)                              # --staging-max
        fd = os.open(sf.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            size = 0
            if node is not None and node.size and keep != 0:
                reads.fetch_to_file(node.handle, node.file_key, node.size, fd, cancelled)
                size = node.size
            elif node is None and committed is not None:
                raise FsError(errno.EIO, "the file's node is gone from MEGA")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(sf.path)
            except OSError:
                pass
            raise
        os.close(fd)
        wb.materialized(sf, size)
        return node
