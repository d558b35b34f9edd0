"""The filesystem core: POSIX operations on paths and open handles.

Owns the meaning of every operation the FUSE adapter forwards (except the virtual ``.link``
files and ``user.mega.*`` attributes, which ``vfs/links.py`` layers on top): attributes,
listings, mkdir/rmdir/unlink/rename and utimens here; the data operations of open files
(create/open/read/write/truncate/flush/fsync/release) in ``vfs/io.py`` (``FileSystem.io``);
statfs in ``vfs/quota.py``; other clients' changes in ``vfs/follow.py``; modes and user xattrs
in ``vfs/meta.py`` (``FileSystem.meta``).  A folder's mtime and ctime move when an entry in it
is added, removed or renamed here (``Namespace.changed``, kept in the mount's local state
across remounts: ``vfs/foldertimes.py``).  It returns plain
data and raises ``FsError`` (or another ``MegafsError``) carrying the errno the caller must
see; it never imports FUSE.

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
import time
from typing import TYPE_CHECKING, Callable

from ..errors import ApiCode, FsError, MegaError
from ..tree import remote
from ..tree.meta import LINK_MAX, MODE_ATTR, mode_value
from ..tree.nodes import Node, time_attrs
from ..tree.tree import is_inside
from ..tree.tree import Tree
from ..writeback import record as R
from ..writeback.queue import WriteBack
from ..writeback.staged import StagedFile
from .follow import RemoteChanges
from .handles import DirHandle, FileHandle, HandleTable, NodeHandle
from .io import FileIO
from .meta import Metadata
from .namespace import DIR, FILE, HIDDEN_NAME, Entry, Namespace
from .quota import QuotaCache
from .readcache import ReadCache

if TYPE_CHECKING:
    from ..api.interface import MegaApi

log = logging.getLogger(__name__)

BLOCK_SIZE = 131072


class FileSystem:
    """The core used by the ``.link`` layer (and directly by the core tests)."""

    def __init__(self, client: "MegaApi", tree: Tree, wb: WriteBack, *,
                 readcache: ReadCache | None = None) -> None:
        self.client = client
        self.tree = tree
        self.wb = wb
        self.ns = Namespace(tree, wb)
        self.reads = readcache or ReadCache(client)
        self.handles = HandleTable()
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self.io = FileIO(self.ns, wb, tree, self.reads, self.handles)
        self.quota = QuotaCache(client)
        self.changes = RemoteChanges(self.ns, wb, tree, self.mkdir)
        self.meta = Metadata(self)
        wb.on_settled = self.ns.retire
        wb.on_remote_change = self.changes.remote_change

    def close(self) -> None:
        """Write what the mount keeps locally (folder times) at unmount."""
        self.ns.dir_times.close()

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
            # an entry added, removed or renamed here since (``Namespace.changed``) wins
            mtime = self.ns.dir_times.get(node.handle, node.mtime_ns)
            if mtime is None:
                mtime = node.mtime_ns if node.ts else self.started_ns
            return self._stat(stat.S_IFDIR | self.meta.mode(entry), 0, mtime, 2)
        if entry.sf is not None:
            return self.stat_file(entry.sf)
        assert entry.node is not None
        return self._stat(self.meta.file_type(entry) | self.meta.mode(entry), entry.node.size,
                          entry.node.mtime_ns)

    def stat_file(self, sf: StagedFile) -> dict[str, int]:
        with self.wb.lock:
            size, mtime = sf.rec.size, sf.rec.mtime_ns
            mode = self.meta.staged_type(sf) | self.meta.file_mode(sf)
        return self._stat(mode, size, mtime)

    # --- symbolic links (a file node whose content is the target: tree/meta.py) ------------
    def symlink(self, path: str, target: str,
                on_create: Callable[[StagedFile], None] | None = None) -> None:
        """``symlink(target, path)``: EEXIST if ``path`` exists, ENAMETOOLONG for a target
        over ``LINK_MAX`` bytes; durable (like a closed file) when it returns.  ``on_create``
        sees the new staged file before its first flush."""
        data = target.encode("utf-8", "surrogateescape")
        if not data or len(data) > LINK_MAX:
            raise FsError(errno.ENAMETOOLONG if data else errno.ENOENT,
                          "a symlink target is 1 to %d bytes" % LINK_MAX)
        fh = self.io.create(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777)
        try:
            if on_create is not None:
                on_create(self.io.file_handle(fh).sf)
            self.meta.mark_link(self.io.file_handle(fh).sf)
            self.io.write(fh, data, 0)
            self.io.flush(fh)
        finally:
            self.io.release(fh)

    def readlink(self, path: str) -> str:
        """The target of the symbolic link at ``path``; EINVAL if it is not one."""
        entry = self.ns.resolve(path)
        if entry.kind == DIR or self.meta.file_type(entry) != stat.S_IFLNK:
            raise FsError(errno.EINVAL, "not a symbolic link")
        fh = self.io.open(path, os.O_RDONLY)
        try:
            data = self.io.read(fh, LINK_MAX + 1, 0)
        finally:
            self.io.release(fh)
        if len(data) > LINK_MAX:
            raise FsError(errno.EIO, "a symlink's target is longer than %d bytes" % LINK_MAX)
        return data.decode("utf-8", "surrogateescape")

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        """Attributes of ``path``, or of the open file ``fh`` (also after it was unlinked)."""
        if fh:
            handle = self.io.handle_of(fh)
            if isinstance(handle, FileHandle):
                return self.stat_file(handle.sf)
            if isinstance(handle, NodeHandle):     # the node it opened, wherever the name is
                node = handle.node
                return self.stat_entry(Entry(FILE, node.parent, node.name or "", node=node))
        if path is None:
            raise FsError(errno.EBADF, "no path and no open file")
        return self.stat_entry(self.ns.resolve_or_origin(path))

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

    # --- namespace --------------------------------------------------------------------------
    def mkdir(self, path: str, mode: int | None = None) -> None:
        """A new folder; ``mode`` (permission bits, the umask already applied by the
        kernel) is stored in its attributes (``mfs-mode``)."""
        with self.ns.lock:
            parent, name = self.ns.parent_of(path)
            if self.ns.lookup(parent.handle, name) is not None:
                raise FsError(errno.EEXIST, "the name exists")
            attrs: dict[str, object] = {"n": name, "t": int(time.time())}
            if mode is not None:
                attrs[MODE_ATTR] = mode_value(mode)
            remote.mkdir(self.client, self.tree, parent.handle, name, attrs)
            self.ns.changed(parent.handle)

    def rmdir(self, path: str) -> None:
        with self.ns.lock:
            entry = self.ns.resolve(path)
            folder = entry.folder
            if folder.handle == self.tree.root:
                raise FsError(errno.EBUSY, "the mount root")
            if self.ns.listing(folder.handle):
                raise FsError(errno.ENOTEMPTY, "the folder is not empty")
            self._delete_folder(folder)
            self.ns.dir_times.drop(folder.handle)
            self.ns.changed(entry.parent)

    def _delete_folder(self, folder: Node) -> None:
        """Delete an (apparently) empty folder remotely.  Nodes in it that staged files shown
        elsewhere still need are moved to where those files are first (under the namespace
        lock).  Nodes of removed files that are still open and read from MEGA (a reader's
        node, or a removed file's handles without a staged copy) go to the Rubbish Bin: the
        handles read them there, and the queue deletes them after the last close."""
        for handle in self.tree.subtree(folder.handle)[1:]:
            sf = self.wb.holder(handle)
            if sf is None:
                continue
            if not sf.rec.unlinked and sf.rec.committed == handle:
                target = sf.rec.parent
            elif self.tree.rubbish and self._still_read(sf, handle):
                target = self.tree.rubbish
            else:
                continue
            node = self.tree.get(handle)
            if node is not None and node.parent != target:
                try:
                    remote.move(self.client, self.tree, handle, target)
                except MegaError as exc:
                    if exc.code != ApiCode.ENOENT or target != self.tree.rubbish:
                        raise           # else its last reader left and the node was deleted
        remote.delete(self.client, self.tree, folder.handle)
        self.reads.forget(folder.handle)

    def _still_read(self, sf: StagedFile, handle: str) -> bool:
        """Whether node ``handle`` of ``sf`` (removed or replaced) is still read by a handle."""
        if self.wb.state.being_read(handle):
            return True
        with self.wb.lock:
            return (sf.rec.unlinked and sf.rec.committed == handle and sf.handles > 0
                    and not sf.rec.has_copy)

    def unlink(self, path: str) -> None:
        with self.ns.lock:
            entry = self.ns.resolve(path)
            if entry.kind == DIR:
                raise FsError(errno.EISDIR, "use rmdir for folders")
            if self.ns.hidden.forget(entry.parent, entry.name):
                return                 # the last close of a file removed while open
            self.ns.remove(self.ns.staged_for(entry))
            self.ns.changed(entry.parent)

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
                self.ns.changed(src.parent, parent.handle)
                return
            if dst is None and HIDDEN_NAME.fullmatch(name):
                # libfuse hides a file removed while it thinks it open (its release may still
                # be on the way): to us that is the removal
                self.ns.hide(self.ns.staged_for(src), parent.handle, name)
                self.ns.changed(src.parent)
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
            self.ns.changed(src.parent, parent.handle)
            self.wb.save(sf)

    def _rename_folder(self, folder: Node, parent: Node, name: str, dst: Entry | None) -> None:
        if is_inside(self.tree, parent.handle, folder.handle):
            raise FsError(errno.EINVAL, "cannot move a folder into itself")
        if dst is not None:
            if dst.kind != DIR:
                raise FsError(errno.ENOTDIR, "a file has the new name")
            if self.ns.listing(dst.folder.handle):
                raise FsError(errno.ENOTEMPTY, "the target folder is not empty")
            self._delete_folder(dst.folder)
        if folder.parent != parent.handle:
            remote.move(self.client, self.tree, folder.handle, parent.handle)
        if folder.name != name:
            if folder.key is None or folder.name is None:
                raise FsError(errno.EPERM, "the folder cannot be decrypted")
            attrs = dict(folder.attrs)
            attrs["n"] = name
            remote.set_attrs(self.client, self.tree, folder.handle, folder.key, attrs)

    def utimens(self, path: str | None, mtime_ns: int | None, fh: int | None = None) -> None:
        """Set the mtime (nanoseconds; None leaves it, as ``UTIME_OMIT`` does).  The adapter
        resolves ``UTIME_NOW``; atime is not stored."""
        if mtime_ns is None:
            return
        mtime = mtime_ns
        if fh:
            handle = self.handles.get(fh)
            if isinstance(handle, FileHandle):
                self.wb.change(handle.sf, lambda rec: R.touched(rec, mtime))
                return
        if path is None:
            raise FsError(errno.EBADF, "no path and no open file")
        with self.ns.lock:
            entry = self.ns.resolve(path)
            if entry.kind == DIR:
                node = entry.folder
                if node.handle == self.tree.root or node.key is None:
                    # no attributes on MEGA: kept in the mount's local state only
                    self.ns.dir_times.set(node.handle, mtime, node.mtime_ns)
                    return
                attrs = time_attrs(mtime, node.attrs)       # t and mfs-mt (nanoseconds)
                remote.set_attrs(self.client, self.tree, node.handle, node.key, attrs)
                self.ns.dir_times.drop(node.handle)         # the time set now wins
                return
            sf = self.ns.staged_for(entry)
        self.wb.change(sf, lambda rec: R.touched(rec, mtime))

    # --- state for the .link layer ----------------------------------------------------------
    def wait_uploaded(self, entry: Entry, timeout: float | None,
                      cancelled: Callable[[], bool] | None = None) -> Node:
        """The node holding ``entry``'s current content, once it is on MEGA."""
        if entry.sf is None:
            assert entry.node is not None
            return self.tree.get(entry.node.handle) or entry.node
        handle = self.wb.control.wait(entry.sf, timeout, cancelled)
        node = self.tree.get(handle)
        if node is None:
            raise FsError(errno.EIO, "the uploaded node is gone from MEGA")
        return node

    def file_state(self, entry: Entry) -> tuple[str, str | None, str | None]:
        """(``pending`` | ``uploading`` | ``uploaded`` | ``failed``, handle, error)."""
        if entry.sf is None:
            assert entry.node is not None
            return "uploaded", entry.node.handle, None
        return self.wb.control.state(entry.sf)

    def remote_node(self, entry: Entry) -> Node | None:
        """The node currently holding a file entry's bytes, if it is on MEGA."""
        if entry.sf is None:
            return entry.node
        committed = entry.sf.rec.committed
        return self.tree.get(committed) if committed else None
