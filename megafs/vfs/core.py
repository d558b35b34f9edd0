"""The filesystem core: POSIX operations on paths and open handles.

Owns the meaning of every operation the FUSE adapter forwards (except the virtual ``.link``
files and ``user.mega.*`` attributes, which ``vfs/links.py`` layers on top): attributes,
listings, create/open/read/write/truncate/flush/fsync/release, mkdir/rmdir/unlink/rename,
utimens and statfs.  It returns plain data and raises ``FsError`` (or another
``MegafsError``) carrying the errno the caller must see; it never imports FUSE.

Files are local first.  Creating, writing, renaming, touching or removing a file changes its
``StagedFile`` and the namespace at once (durably where the operation promises it) and the
write-back queue applies the change to MEGA in the background.  Opening a remote file does not
download it: the first write (or a truncate that keeps bytes) brings its old content into the
staged copy; reads come from the staged copy when there is one, else from the remote node.
Folders are remote first: mkdir, rmdir and folder renames are MEGA requests made before the
call returns.  Removing a folder first moves out any node that a staged file shown elsewhere
still needs.  Open handles outlive unlink and rename-over: a handle keeps its staged file, and
the remote node of a removed file is deleted only after the last handle is released.

Concurrency contract: see ``vfs/namespace.py`` (the namespace lock) and
``writeback/queue.py`` (``WriteBack.lock``).  Data calls (read, write, getattr) take no
namespace lock.  Lock order: namespace lock -> ``StagedFile.materialize`` -> ``WriteBack.lock``
-> ``tree.lock``.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Callable

from ..api.download import start_writeback
from ..errors import FsError, MegaError, MegafsError, describe
from ..tree.names import base_display_name
from ..tree.nodes import NS, Node
from ..tree.tree import Tree
from ..writeback import record as R
from ..writeback.queue import WriteBack
from ..writeback.staged import StagedFile
from .handles import DirHandle, FileHandle, HandleTable
from .namespace import DIR, HIDDEN_NAME, Entry, Namespace
from .readcache import ReadCache

if TYPE_CHECKING:
    from ..api.client import MegaClient

log = logging.getLogger(__name__)

WRITEBACK_STEP = 8 << 20         # start disk writeback of a sequential writer every 8 MiB
BLOCK_SIZE = 131072
RECOVERY_FOLDER = "megafs-recovered"   # files whose folder another client removed


class FileSystem:
    """The core used by the ``.link`` layer (and directly by the core tests)."""

    def __init__(self, client: "MegaClient", tree: Tree, wb: WriteBack, *,
                 readcache: ReadCache | None = None) -> None:
        self.client = client
        self.tree = tree
        self.wb = wb
        self.ns = Namespace(tree, wb)
        self.reads = readcache or ReadCache(client)
        self.handles = HandleTable()
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self._quota: tuple[float, tuple[int, int]] | None = None
        self._quota_busy = threading.Event()
        wb.on_settled = self.ns.retire
        wb.on_remote_change = self.remote_change
        wb.path_of = self.ns.path_of

    def recover(self) -> None:
        """Load the write-back queue and show its files (at mount time)."""
        self.ns.recovered(self.wb.recover())

    # --- attributes -------------------------------------------------------------------------
    def _stat(self, mode: int, size: int, mtime_ns: int, nlink: int = 1) -> dict[str, int]:
        return {"st_mode": mode, "st_nlink": nlink, "st_size": size, "st_uid": self.uid,
                "st_gid": self.gid, "st_mtime": mtime_ns, "st_atime": mtime_ns,
                "st_ctime": mtime_ns, "st_blocks": (size + 511) // 512,
                "st_blksize": BLOCK_SIZE}

    def stat_entry(self, entry: Entry) -> dict[str, int]:
        """``stat`` fields of an entry (times in nanoseconds)."""
        if entry.kind == DIR:
            node = entry.folder
            mtime = node.mtime_ns if node.ts else self.started_ns
            return self._stat(stat.S_IFDIR | 0o755, 0, mtime, 2)
        if entry.sf is not None:
            return self.stat_file(entry.sf)
        assert entry.node is not None
        return self._stat(stat.S_IFREG | 0o644, entry.node.size, entry.node.mtime_ns)

    def stat_file(self, sf: StagedFile) -> dict[str, int]:
        with self.wb.lock:
            size, mtime = sf.rec.size, sf.rec.mtime_ns
        return self._stat(stat.S_IFREG | 0o644, size, mtime)

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        """Attributes of ``path``, or of the open file ``fh`` (also after it was unlinked)."""
        if fh:
            handle = self.handles.get(fh)
            if isinstance(handle, FileHandle):
                return self.stat_file(handle.sf)
        if path is None:
            raise FsError(errno.EBADF, "no path and no open file")
        return self.stat_entry(self.ns.resolve(path))

    def opendir(self, path: str) -> int:
        """Open a folder for listing; ENOTDIR for a file."""
        return self.handles.add(DirHandle(self.ns.resolve(path).folder.handle))

    def folder_of(self, path: str | None, fh: int | None) -> str:
        """The folder handle named by an open folder ``fh`` or else by ``path``."""
        if fh:
            handle = self.handles.get(fh)
            if isinstance(handle, DirHandle):
                return handle.folder
        if path is None:
            raise FsError(errno.EBADF, "no path and no open folder")
        return self.ns.resolve(path).folder.handle

    def readdir(self, path: str | None, fh: int | None = None) -> list[str]:
        """Names in a folder (sorted); the folder must still exist."""
        folder = self.folder_of(path, fh)
        if self.tree.get(folder) is None:
            raise FsError(errno.ENOENT, "the folder was removed")
        return sorted(self.ns.listing(folder))

    def statfs(self) -> dict[str, int]:
        """Sizes from ``uq``; served from a cache refreshed in the background after 5 s, so
        ``df`` never waits on a slow or unreachable server once one answer is known."""
        cached = self._quota
        if cached is None:
            self._refresh_quota()
            cached = self._quota
            assert cached is not None
        elif time.monotonic() - cached[0] > 5.0 and not self._quota_busy.is_set():
            self._quota_busy.set()
            threading.Thread(target=self._refresh_quota, name="megafs-quota",
                             daemon=True).start()
        used, total = cached[1]
        bs = 4096
        free = max(0, total - used) // bs
        return {"f_bsize": bs, "f_frsize": bs, "f_blocks": max(1, total // bs), "f_bfree": free,
                "f_bavail": free, "f_files": 1 << 20, "f_ffree": 1 << 20, "f_favail": 1 << 20,
                "f_namemax": 255}

    def _refresh_quota(self) -> None:
        try:
            used, total = self.client.quota()
            self._quota = (time.monotonic(), (int(used), int(total)))
        except MegafsError as exc:
            if self._quota is None:
                raise
            log.info("quota refresh failed (%s); using the cached value", describe(exc))
        finally:
            self._quota_busy.clear()

    # --- opening ----------------------------------------------------------------------------
    def create(self, path: str, flags: int = os.O_WRONLY) -> int:
        """``open(O_CREAT)``: a new empty file, or an existing one opened (and emptied with
        ``O_TRUNC``); EEXIST with ``O_EXCL`` if the name exists."""
        with self.ns.lock:
            parent, name = self.ns.parent_of(path)
            entry = self.ns.lookup(parent.handle, name)
            if entry is None:
                sf = self.ns.add(parent.handle, name, content=True, mtime_ns=time.time_ns())
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
        """``open`` without ``O_CREAT``: nothing is downloaded until data is read or written."""
        write = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        for _attempt in range(100):
            entry = self.ns.resolve(path)
            if entry.kind == DIR:
                if write:
                    raise FsError(errno.EISDIR, "a folder cannot be opened for writing")
                return 0
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
            with self.ns.lock:
                pass
        raise FsError(errno.EAGAIN, "the file kept changing while being opened")

    def _open_file(self, sf: StagedFile, write: bool) -> int:
        if not self.wb.opened(sf, write):      # cannot happen under the namespace lock
            raise FsError(errno.EAGAIN, "the file was retired while being opened")
        return self.handles.add(FileHandle(sf, write))

    def file_handle(self, fh: int) -> FileHandle:
        handle = self.handles.get(fh)
        if not isinstance(handle, FileHandle):
            raise FsError(errno.EBADF, "not an open file")
        return handle

    # --- data -------------------------------------------------------------------------------
    def read(self, fh: int, size: int, offset: int) -> bytes:
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
                               handle.read_state)

    def write(self, fh: int, data: bytes, offset: int) -> int:
        handle = self.file_handle(fh)
        if not handle.write:
            raise FsError(errno.EBADF, "not open for writing")
        sf = handle.sf
        self._materialize(sf)
        fd = handle.staged_fd()
        n = os.pwrite(fd, data, offset)
        end = offset + n
        with self.wb.lock:
            size = max(sf.rec.size, end)
        self.wb.wrote(sf, size)
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
        os.truncate(sf.path, length)
        self.wb.wrote(sf, length)

    def _materialize(self, sf: StagedFile, keep: int | None = None) -> None:
        """Give ``sf`` a staged copy holding its committed node's bytes (only the first
        ``keep`` bytes are needed: none at all for a truncate to 0)."""
        if sf.rec.has_copy:
            return
        with sf.materialize:
            with self.wb.lock:
                if sf.rec.has_copy:
                    return
                committed = sf.rec.committed
            node = self.tree.get(committed) if committed else None
            fd = os.open(sf.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                size = 0
                if node is not None and node.size and keep != 0:
                    self.reads.fetch_to_file(node.handle, node.file_key, node.size, fd)
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
            self.wb.materialized(sf, size)

    def flush(self, fh: int) -> None:
        """``close``: the staged data and the file's row are durable before this returns."""
        handle = self.handles.get(fh)
        if isinstance(handle, FileHandle) and handle.write:
            self.wb.flush(handle.sf, handle.fd if handle.fd >= 0 else None)

    def release(self, fh: int) -> None:
        """The last close of ``fh`` (files and folders)."""
        handle = self.handles.pop(fh)
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
        failed for good)."""
        handle = self.file_handle(fh)
        sf = handle.sf
        self.wb.flush(sf, handle.fd if handle.fd >= 0 else None)
        with self.wb.lock:
            if sf.rec.unlinked:
                return
        self.wb.force(sf)
        self.wb.wait(sf, None, cancelled)

    # --- namespace --------------------------------------------------------------------------
    def mkdir(self, path: str) -> None:
        with self.ns.lock:
            parent, name = self.ns.parent_of(path)
            if self.ns.lookup(parent.handle, name) is not None:
                raise FsError(errno.EEXIST, "the name exists")
            raw = self.client.mkdir(parent.handle, name, {"n": name, "t": int(time.time())})
            self.tree.add_raw(raw)

    def rmdir(self, path: str) -> None:
        with self.ns.lock:
            entry = self.ns.resolve(path)
            folder = entry.folder
            if folder.handle == self.tree.root:
                raise FsError(errno.EBUSY, "the mount root")
            if self.ns.listing(folder.handle):
                raise FsError(errno.ENOTEMPTY, "the folder is not empty")
            self._delete_folder(folder)

    def _delete_folder(self, folder: Node) -> None:
        """Delete an (apparently) empty folder remotely.  Nodes in it that staged files shown
        elsewhere still need are moved to where those files are first (under the namespace
        lock)."""
        for handle in self.tree.subtree(folder.handle)[1:]:
            sf = self.wb.holder(handle)
            if sf is None or sf.rec.unlinked or sf.rec.committed != handle:
                continue
            node = self.tree.get(handle)
            if node is not None and node.parent != sf.rec.parent:
                self.client.move(handle, sf.rec.parent)
                self.tree.move(handle, sf.rec.parent)
        try:
            self.client.delete(folder.handle)
        except MegaError as exc:
            if exc.code != -9:
                raise
        self.tree.remove(folder.handle)
        self.reads.forget(folder.handle)

    def unlink(self, path: str) -> None:
        with self.ns.lock:
            entry = self.ns.resolve(path)
            if entry.kind == DIR:
                raise FsError(errno.EISDIR, "use rmdir for folders")
            if self.ns.forget_hidden(entry.parent, entry.name):
                return                 # the last close of a file removed while open
            self.ns.remove(self.ns.staged_for(entry))

    def rename(self, old: str, new: str) -> None:
        with self.ns.lock:
            src = self.ns.resolve(old)
            parent, name = self.ns.parent_of(new)
            if src.kind == DIR and src.folder.handle == self.tree.root:
                raise FsError(errno.EBUSY, "the mount root")
            dst = self.ns.lookup(parent.handle, name)
            if dst is not None and (dst.sf is not None and dst.sf is src.sf
                                    or dst.node is not None and dst.node is src.node):
                return
            if src.kind == DIR:
                self._rename_folder(src.folder, parent, name, dst)
                return
            if dst is None and HIDDEN_NAME.fullmatch(name):
                # libfuse hides a file removed while it thinks it open (its release may still
                # be on the way): to us that is the removal
                self.ns.hide(self.ns.staged_for(src), parent.handle, name)
                return
            sf = self.ns.staged_for(src)
            replaced = None
            if dst is not None:
                if dst.kind == DIR:
                    raise FsError(errno.EISDIR, "a folder has the new name")
                replaced = self.ns.staged_for(dst)
            # The new name shows the file before the old file there is removed: a reader of
            # the new name always finds one of the two (rename(2) is atomic).
            self.ns.move(sf, parent.handle, name)
            if replaced is not None:
                self.ns.remove(replaced)
            self.wb.save(sf)

    def _rename_folder(self, folder: Node, parent: Node, name: str, dst: Entry | None) -> None:
        cur: Node | None = parent
        while cur is not None and cur.handle != self.tree.root:
            if cur.handle == folder.handle:
                raise FsError(errno.EINVAL, "cannot move a folder into itself")
            cur = self.tree.get(cur.parent)
        if dst is not None:
            if dst.kind != DIR:
                raise FsError(errno.ENOTDIR, "a file has the new name")
            if self.ns.listing(dst.folder.handle):
                raise FsError(errno.ENOTEMPTY, "the target folder is not empty")
            self._delete_folder(dst.folder)
        if folder.parent != parent.handle:
            self.client.move(folder.handle, parent.handle)
            self.tree.move(folder.handle, parent.handle)
        if folder.name != name:
            if folder.key is None or folder.name is None:
                raise FsError(errno.EPERM, "the folder cannot be decrypted")
            attrs = dict(folder.attrs)
            attrs["n"] = name
            self.client.set_attrs(folder.handle, folder.key, attrs)
            self.tree.set_attrs(folder.handle, attrs)

    def utimens(self, path: str | None, mtime_ns: int | None, fh: int | None = None) -> None:
        """Set the mtime (nanoseconds; None leaves it, as ``UTIME_OMIT`` does).  The adapter
        resolves ``UTIME_NOW``; atime is not stored."""
        if mtime_ns is None:
            return
        mtime = mtime_ns
        if fh:
            handle = self.handles.get(fh)
            if isinstance(handle, FileHandle):
                self.wb.set_mtime(handle.sf, mtime)
                return
        if path is None:
            raise FsError(errno.EBADF, "no path and no open file")
        with self.ns.lock:
            entry = self.ns.resolve(path)
            if entry.kind == DIR:
                node = entry.folder
                if node.handle == self.tree.root or node.key is None:
                    return
                attrs = dict(node.attrs)
                attrs["t"] = mtime // NS
                self.client.set_attrs(node.handle, node.key, attrs)
                self.tree.set_attrs(node.handle, attrs)
                return
            sf = self.ns.staged_for(entry)
        self.wb.set_mtime(sf, mtime)

    def remote_change(self, sf: StagedFile) -> None:
        """``WriteBack.on_remote_change``: another client changed what ``sf`` shows.

        A file whose place was not chosen here follows its node (moved, renamed, touched), or
        leaves the namespace if the node was removed and nothing was written here (open
        handles keep their descriptors).  A file with local state whose folder was removed is
        kept: it moves to ``/megafs-recovered`` (never an orphan in the Rubbish Bin)."""
        with self.ns.lock:
            if sf.retired or sf.rec.unlinked:
                return
            with self.wb.lock:
                rec = sf.rec
                node = self.tree.get(rec.committed) if rec.committed else None
                ours = rec.generation > rec.committed_gen or sf.dirty
                mirror = not rec.local_meta
            if mirror and node is None and rec.committed and not rec.has_copy:
                log.info("%s was removed by another client", self.ns.path_of(sf))
                self.ns.unshow(sf)
                return
            if mirror and node is not None and node.name is not None:
                name = base_display_name(node)          # escaped; never a "(HANDLE)" alias
                if (node.parent, name) != (rec.parent, rec.name):
                    if self.ns.lookup(node.parent, name) is None:
                        self.ns.follow(sf, node.parent, name)
                if not ours and node.mtime_ns != rec.mtime_ns:
                    with self.wb.lock:
                        sf.rec.mtime_ns = node.mtime_ns
            if self.tree.get(sf.rec.parent) is None:
                self._recover(sf)

    def _recover(self, sf: StagedFile) -> None:
        """Move a file whose folder is gone to ``/megafs-recovered`` (under the namespace
        lock), under a free name, and say so."""
        root = self.tree.root
        folder = self.ns.lookup(root, RECOVERY_FOLDER)
        try:
            if folder is None:
                self.mkdir("/" + RECOVERY_FOLDER)
                folder = self.ns.lookup(root, RECOVERY_FOLDER)
        except MegafsError as exc:
            log.warning("cannot make /%s for %s: %s; trying again later", RECOVERY_FOLDER,
                        sf.rec.name, describe(exc))
            return
        if folder is None or folder.kind != DIR:
            log.warning("/%s is not a folder; %s stays queued", RECOVERY_FOLDER, sf.rec.name)
            return
        name = sf.rec.name
        if self.ns.lookup(folder.folder.handle, name) is not None:
            stem, dot, ext = name.rpartition(".")
            name = ("%s (%s).%s" % (stem, sf.rid[:8], ext) if dot and stem
                    else "%s (%s)" % (name, sf.rid[:8]))
        old = self.ns.path_of(sf)
        self.ns.move(sf, folder.folder.handle, name)
        with self.wb.lock:
            sf.rec = R.retry_now(sf.rec)
        self.wb.save(sf)
        log.warning("the folder of %s was removed by another client; the file is kept as "
                    "/%s/%s", old, RECOVERY_FOLDER, name)

    # --- state for the .link layer ----------------------------------------------------------
    def wait_uploaded(self, entry: Entry, timeout: float | None,
                      cancelled: Callable[[], bool] | None = None) -> Node:
        """The node holding ``entry``'s current content, once it is on MEGA."""
        if entry.sf is None:
            assert entry.node is not None
            return self.tree.get(entry.node.handle) or entry.node
        handle = self.wb.wait(entry.sf, timeout, cancelled)
        node = self.tree.get(handle)
        if node is None:
            raise FsError(errno.EIO, "the uploaded node is gone from MEGA")
        return node

    def file_state(self, entry: Entry) -> tuple[str, str | None, str | None]:
        """(``pending`` | ``uploading`` | ``uploaded`` | ``failed``, handle, error)."""
        if entry.sf is None:
            assert entry.node is not None
            return "uploaded", entry.node.handle, None
        return self.wb.state(entry.sf)

    def remote_node(self, entry: Entry) -> Node | None:
        """The node currently holding a file entry's bytes, if it is on MEGA."""
        if entry.sf is None:
            return entry.node
        committed = entry.sf.rec.committed
        return self.tree.get(committed) if committed else None
