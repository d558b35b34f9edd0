"""The filesystem core: POSIX semantics on paths over the node tree and the write-back queue.

Owns path resolution (remote folders and files from ``nodes.Tree`` merged with staged files from
``writeback.WriteBack``, plus the virtual ``X.link`` files), open handles, every namespace
operation (mkdir, rmdir, unlink, rename, truncate, utimens, statfs), reads (staged copy or
``readcache``), the ``user.mega.*`` xattrs and the remote-change poller.  Returns plain data and
raises ``FsError`` (or other ``MegafsError``) with the errno the caller must see; it never
imports FUSE (``fuse_ops.py`` is the adapter).

Naming rules:
* ``X.link`` exists beside every file ``X`` (remote or staged) unless a real entry named
  ``X.link`` exists, in which case the real one wins (the link stays readable through
  ``user.mega.link`` on ``X``).  Virtual ``.link`` files are read-only: opening one for writing,
  truncating, renaming, removing or creating over one fails with EPERM.
* Names longer than 255 bytes fail with ENAMETOOLONG; symlinks, hard links and device nodes
  with EPERM; chmod/chown are accepted and not stored.

Concurrency contract: ``self._lock`` guards ``self._handles``; ``self._ns`` (an RLock) serialises
namespace changes (create, rename, unlink, mkdir, rmdir), including the network calls they
make, so two changes never interleave; it also guards ``self._staging`` (paths whose old
contents are being downloaded for writing: that download runs outside ``_ns``, and the path is
re-checked before the staged copy is registered).  Reads, writes and getattr take neither for
long.  Lock order: _ns -> _lock -> WriteBack.lock -> tree.lock.
"""
from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .api import links
from .errors import FsError, IntegrityError, MegafsError, describe
from .tree.nodes import FILE, Node
from .tree.tree import Tree
from .vfs.readcache import ReadCache, ReadState
from .writeback import FAILED, UPLOADED, Record, WriteBack, delete_node

log = logging.getLogger(__name__)

NAME_MAX = 255
LINK_SUFFIX = ".link"
XATTRS_FILE = ("user.mega.state", "user.mega.handle", "user.mega.link")
XA_LINK, XA_HANDLE, XA_STATE, XA_ERROR = ("user.mega.link", "user.mega.handle",
                                          "user.mega.state", "user.mega.error")
XA_CTL_STATUS, XA_CTL_DIR, XA_CTL_RETRY = ("user.megafs.status", "user.megafs.mountdir",
                                           "user.megafs.retry")


WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2
try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
    _libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                      ctypes.c_uint]
except (OSError, AttributeError):
    _libc = None


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start (not wait for) the disk writeback of a range; a hint only, errors are ignored."""
    if _libc is not None:
        _libc.sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _err(code: int, reason: str = "") -> FsError:
    return FsError(code, reason or os.strerror(code))


@dataclass
class Entry:
    """What a path resolves to."""

    kind: str                        # "dir" | "file" | "staged" | "link"
    parent: str                      # folder handle holding the entry ("" for the root)
    name: str
    node: Node | None = None         # dir/file: the remote node
    rec: Record | None = None        # staged: the queue record
    target: "Entry | None" = None    # link: the file it describes

    @property
    def n(self) -> Node:
        assert self.node is not None, self.kind
        return self.node

    @property
    def r(self) -> Record:
        assert self.rec is not None, self.kind
        return self.rec

    @property
    def t(self) -> "Entry":
        assert self.target is not None, self.kind
        return self.target


@dataclass
class Handle:
    kind: str                        # "remote" | "staged" | "link"
    write: bool = False
    node: Node | None = None
    rec: Record | None = None
    fd: int = -1
    link_of: Entry | None = None
    content: bytes | None = None
    read_state: ReadState = field(default_factory=ReadState)
    flushed_to: int = 0              # staged bytes below this were handed to disk writeback

    @property
    def r(self) -> Record:
        assert self.rec is not None, self.kind
        return self.rec


class MegaFS:
    """The filesystem core used by ``fuse_ops.MegaOps`` (and directly by core tests)."""

    def __init__(self, client: Any, tree: Tree, wb: WriteBack, *, link_timeout: float = 600.0,
                 readcache: ReadCache | None = None, mount_dir: str = "") -> None:
        self.client = client
        self.tree = tree
        self.wb = wb
        self.link_timeout = link_timeout
        self.reads = readcache or ReadCache(client)
        self.mount_dir = mount_dir
        self.uid, self.gid = os.getuid(), os.getgid()
        self._ns = threading.RLock()
        self._lock = threading.Lock()
        self._handles: dict[int, Handle] = {}
        self._staging: dict[tuple[str, str], threading.Event] = {}   # guarded by _ns
        self._next_fh = 1
        self._quota: tuple[float, tuple[int, int]] | None = None
        self._quota_busy = threading.Event()
        self._start = time.time()

    # --- resolution -------------------------------------------------------------------------
    @staticmethod
    def _split(path: str) -> list[str]:
        parts = [p for p in path.split("/") if p]
        for p in parts:
            if len(p.encode("utf-8", "surrogateescape")) > NAME_MAX:
                raise _err(errno.ENAMETOOLONG)
        return parts

    def _listing(self, folder: str) -> dict[str, Entry]:
        """Every visible entry of a folder, by display name (virtual .link files included)."""
        shadow = self.wb.shadowed()
        out: dict[str, Entry] = {}
        for name, node in self.tree.children_view(folder).items():
            if node.handle in shadow:
                continue
            out[name] = Entry("dir" if node.is_dir else "file", folder, name, node=node)
        for name, rec in self.wb.in_folder(folder).items():
            out[name] = Entry("staged", folder, name, rec=rec)
        for name, ent in list(out.items()):
            if ent.kind in ("file", "staged"):
                lname = name + LINK_SUFFIX
                if lname not in out and len(lname.encode()) <= NAME_MAX:
                    out[lname] = Entry("link", folder, lname, target=ent)
        return out

    def _lookup_in(self, folder: str, name: str) -> Entry | None:
        rec = self.wb.lookup(folder, name)
        if rec is not None:
            return Entry("staged", folder, name, rec=rec)
        node = self.tree.child(folder, name)
        if node is not None and node.handle not in self.wb.shadowed():
            return Entry("dir" if node.is_dir else "file", folder, name, node=node)
        if name.endswith(LINK_SUFFIX) and len(name) > len(LINK_SUFFIX):
            target = self._lookup_in(folder, name[:-len(LINK_SUFFIX)])
            if target is not None and target.kind in ("file", "staged"):
                return Entry("link", folder, name, target=target)
        return None

    def resolve(self, path: str) -> Entry:
        parts = self._split(path)
        root = self.tree.get(self.tree.root)
        entry = Entry("dir", "", "", node=root)
        for i, part in enumerate(parts):
            if entry.kind != "dir":
                raise _err(errno.ENOTDIR)
            found = self._lookup_in(entry.n.handle, part)
            if found is None:
                raise _err(errno.ENOENT)
            entry = found
        return entry

    def _resolve_parent(self, path: str) -> tuple[Node, str]:
        parts = self._split(path)
        if not parts:
            raise _err(errno.EBUSY, "the mount root")
        parent = self.resolve("/" + "/".join(parts[:-1]))
        if parent.kind != "dir":
            raise _err(errno.ENOTDIR)
        return parent.n, parts[-1]

    # --- attributes -------------------------------------------------------------------------
    def _base_stat(self, mode: int, size: int, mtime: float, nlink: int = 1) -> dict:
        return {"st_mode": mode, "st_nlink": nlink, "st_size": size, "st_uid": self.uid,
                "st_gid": self.gid, "st_mtime": mtime, "st_atime": mtime, "st_ctime": mtime,
                "st_blocks": (size + 511) // 512, "st_blksize": 131072}

    def _stat_entry(self, ent: Entry) -> dict:
        if ent.kind == "dir":
            mtime = ent.n.mtime if ent.n.ts else self._start
            return self._base_stat(stat.S_IFDIR | 0o755, 0, mtime, 2)
        if ent.kind == "file":
            return self._base_stat(stat.S_IFREG | 0o644, ent.n.size, ent.n.mtime)
        if ent.kind == "staged":
            rec = ent.r
            try:
                size = os.stat(rec.staged).st_size
            except FileNotFoundError:
                size = rec.size
            return self._base_stat(stat.S_IFREG | 0o644, size, rec.mtime)
        link = self._known_link(ent.t)
        size = len(link) + 1 if link else 0
        tgt = self._stat_entry(ent.t)
        return self._base_stat(stat.S_IFREG | 0o444, size, tgt["st_mtime"])

    def getattr(self, path: str, fh: int | None = None) -> dict:
        if fh:
            h = self._handle(fh)
            if h.kind == "staged":
                st = os.fstat(h.fd)
                return self._base_stat(stat.S_IFREG | 0o644, st.st_size, h.r.mtime)
            if path is None and h.node is not None:   # unlinked while open
                return self._stat_entry(Entry("dir" if h.node.is_dir else "file", "", "",
                                              node=h.node))
        if path is None:
            raise _err(errno.EBADF)
        return self._stat_entry(self.resolve(path))

    def readdir(self, path: str) -> list[str]:
        ent = self.resolve(path)
        if ent.kind != "dir":
            raise _err(errno.ENOTDIR)
        return [".", ".."] + sorted(self._listing(ent.n.handle))

    def statfs(self) -> dict:
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
                "f_bavail": free, "f_files": 1 << 20, "f_ffree": 1 << 20,
                "f_favail": 1 << 20, "f_namemax": NAME_MAX}

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

    # --- handles ----------------------------------------------------------------------------
    def _add_handle(self, h: Handle) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = h
            return fh

    def _handle(self, fh: int) -> Handle:
        with self._lock:
            h = self._handles.get(fh)
        if h is None:
            raise _err(errno.EBADF)
        return h

    def is_link_handle(self, fh: int) -> bool:
        return self._handle(fh).kind == "link"

    def _open_staged(self, rec: Record, write: bool) -> int:
        fd = os.open(rec.staged, os.O_RDWR if write else os.O_RDONLY)
        self.wb.opened(rec, write)
        return self._add_handle(Handle("staged", write=write, rec=rec, fd=fd))

    def _stage_remote(self, ent: Entry, truncate_to: int | None, *,
                      register: bool = True) -> Record:
        """Bring a remote file into staging (contents first unless truncating to 0).

        Without truncation the copy equals the remote file, so it is not dirty: closing it
        unchanged uploads nothing."""
        node = ent.n
        rec = self.wb.stage(ent.parent, ent.name, replaces=[node.handle], register=False)
        try:
            keep = node.size if truncate_to is None else min(node.size, truncate_to)
            if keep > 0:
                fd = os.open(rec.staged, os.O_RDWR)
                try:
                    self.reads.fetch_to_file(node.handle, node.file_key, node.size, fd)
                    os.ftruncate(fd, keep if truncate_to is not None else node.size)
                finally:
                    os.close(fd)
            if truncate_to is not None:
                os.truncate(rec.staged, truncate_to)
                self.wb.touch(rec, truncate_to)
            else:
                with self.wb.lock:
                    rec.dirty = False
                    rec.size = node.size
                    rec.mtime = node.mtime
        except BaseException:
            self.wb.detach(rec)
            raise
        if register:
            self.wb.register(rec)   # only now: readers never see a half-downloaded copy
        return rec

    def _writable(self, path: str, truncate_to: int | None) -> Record:
        """The registered staged record of a file, staging a remote file first.

        The download of a remote file's old contents runs outside the namespace lock, so a big
        file being opened for writing does not stall other creates, renames or removals; one
        download per path at a time, and if the path changed meanwhile it starts over."""
        while True:
            with self._ns:
                ent = self.resolve(path)
                if ent.kind == "link":
                    raise _err(errno.EPERM, "a .link file is read-only")
                if ent.kind == "dir":
                    raise _err(errno.EISDIR)
                if ent.kind == "staged":
                    rec = ent.r
                    if truncate_to is not None:
                        os.truncate(rec.staged, truncate_to)
                        self.wb.touch(rec, truncate_to)
                    return rec
                node = ent.n
                keep = node.size if truncate_to is None else min(node.size, truncate_to)
                if keep == 0:
                    return self._stage_remote(ent, truncate_to)
                key = (ent.parent, ent.name)
                busy = self._staging.get(key)
                mine = busy is None
                if busy is None:
                    busy = self._staging[key] = threading.Event()
            if not mine:
                busy.wait(600)
                continue
            try:
                rec = self._stage_remote(ent, truncate_to, register=False)
            finally:
                with self._ns:
                    self._staging.pop(key, None)
                    busy.set()
            with self._ns:
                cur = self._lookup_in(ent.parent, ent.name)
                if cur is None or cur.kind != "file" or cur.n.handle != node.handle:
                    self.wb.detach(rec)   # renamed, removed or replaced meanwhile
                    continue
                self.wb.register(rec)
                return rec

    def create(self, path: str, mode: int = 0o644) -> int:
        with self._ns:
            parent, name = self._resolve_parent(path)
            existing = self._lookup_in(parent.handle, name)
            replaces: list[str] = []
            if existing is not None:
                if existing.kind == "dir":
                    raise _err(errno.EISDIR)
                if existing.kind == "link":
                    raise _err(errno.EPERM, "a .link file is read-only")
                if existing.kind == "staged":
                    rec = existing.r
                    os.truncate(rec.staged, 0)
                    self.wb.touch(rec, 0)
                    return self._open_staged(rec, True)
                replaces = [existing.n.handle]
            rec = self.wb.stage(parent.handle, name, replaces)
            return self._open_staged(rec, True)

    def open(self, path: str, flags: int) -> int:
        write = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        ent = self.resolve(path)
        if ent.kind == "dir":
            if write:
                raise _err(errno.EISDIR)
            return self._add_handle(Handle("remote", node=ent.node))
        if ent.kind == "link":
            if write:
                raise _err(errno.EPERM, "a .link file is read-only")
            return self._add_handle(Handle("link", link_of=ent.t))
        if not write:
            if ent.kind == "staged":
                try:
                    return self._open_staged(ent.r, False)
                except FileNotFoundError:
                    # Uploaded and dropped between lookup and open: it is a remote file now.
                    ent = self.resolve(path)
                    if ent.kind == "staged":
                        raise
                    if ent.kind != "file":
                        raise _err(errno.ENOENT) from None
            self.reads.reset_bad(ent.n.handle)
            return self._add_handle(Handle("remote", node=ent.node))
        trunc = bool(flags & os.O_TRUNC)
        for _attempt in range(5):
            rec = self._writable(path, 0 if trunc else None)
            try:
                return self._open_staged(rec, True)
            except FileNotFoundError:
                continue   # uploaded and dropped meanwhile: it is a remote file again
        raise _err(errno.EAGAIN, "the file kept changing while being opened")

    def release(self, fh: int) -> None:
        with self._lock:
            h = self._handles.pop(fh, None)
        if h is None:
            return
        if h.kind != "staged":
            return
        rec = h.r
        try:
            if h.write and rec.dirty and rec.writers == 1:
                self.wb.persist(rec, h.fd)
        finally:
            os.close(h.fd)
            self.wb.closed(rec, h.write)
            if h.write:
                self._drop_clean_stage(rec)

    def _drop_clean_stage(self, rec: Record) -> None:
        """A remote file opened for writing but never changed: forget the staged copy."""
        with self.wb.lock:
            unchanged = (not rec.persisted and not rec.dirty and rec.handles == 0
                         and not rec.cancelled)
        if unchanged:
            self.wb.detach(rec)

    def flush(self, fh: int) -> None:
        h = self._handle(fh)
        if h.kind == "staged" and h.write:
            self.wb.persist(h.r, h.fd)

    def fsync(self, fh: int) -> None:
        """Returns once the file's current data is uploaded (EIO with the reason if it failed)."""
        h = self._handle(fh)
        if h.kind != "staged":
            return
        rec = h.r
        if h.write:
            self.wb.persist(rec, h.fd)
        with self.wb.lock:
            if rec.state == UPLOADED and not rec.dirty and not rec.busy:
                return
            if not rec.persisted:
                return
        self.wb.force(rec)
        self.wb.wait_uploaded(rec, None)

    # --- data -------------------------------------------------------------------------------
    def read(self, fh: int, size: int, offset: int) -> bytes:
        h = self._handle(fh)
        if h.kind == "staged":
            return os.pread(h.fd, size, offset)
        if h.kind == "link":
            if h.content is None:
                assert h.link_of is not None
                h.content = (self._wait_link(h.link_of) + "\n").encode()
            return h.content[offset:offset + size]
        node = h.node
        if node is None or node.type != FILE:
            raise _err(errno.EISDIR)
        return self.reads.read(node.handle, node.file_key, node.size, offset, size,
                               h.read_state)

    def write(self, fh: int, data: bytes, offset: int) -> int:
        h = self._handle(fh)
        if h.kind != "staged" or not h.write:
            raise _err(errno.EBADF)
        n = os.pwrite(h.fd, data, offset)
        self.wb.touch(h.r)
        end = offset + n
        if end - h.flushed_to >= WRITEBACK_STEP and offset >= h.flushed_to:
            # Sequential writer: start the disk writeback of what it wrote so far, so the
            # fsync that close() must do finds little left (it was ~0.3 s of a 2.8 s dd of
            # 512 MiB).  Asynchronous: it does not wait for the disk.
            _start_writeback(h.fd, h.flushed_to, end - h.flushed_to)
            h.flushed_to = end
        return n

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if fh:
            h = self._handle(fh)
            if h.kind == "staged" and h.write:
                os.ftruncate(h.fd, length)
                self.wb.touch(h.r, length)
                return
            if h.kind == "link":
                raise _err(errno.EPERM, "a .link file is read-only")
        if path is None:
            raise _err(errno.EBADF)
        rec = self._writable(path, length)
        with self.wb.lock:
            idle = rec.writers == 0
        if idle:
            self.wb.persist(rec)

    def utimens(self, path: str, times: tuple[float, float] | None) -> None:
        mtime = times[1] if times else time.time()
        if mtime > 1e12:  # nanoseconds (use_ns)
            mtime = mtime / 1e9
        with self._ns:
            ent = self.resolve(path)
            if ent.kind == "link":
                raise _err(errno.EPERM, "a .link file is read-only")
            if ent.kind == "staged":
                rec = ent.r
                with self.wb.lock:
                    remote = (rec.state == UPLOADED and not rec.dirty and not rec.busy
                              and rec.handle)
                self.wb.set_mtime(rec, mtime)
                if remote and rec.handle:
                    node = self.tree.get(rec.handle)
                    if node is not None:
                        self._set_remote_attr(node, "t", int(mtime))
                return
            if ent.n.type in (0, 1):
                self._set_remote_attr(ent.n, "t", int(mtime))

    def _set_remote_attr(self, node: Node, key: str, value: Any) -> None:
        if node.key is None or node.name is None:
            raise _err(errno.EPERM, "node cannot be decrypted")
        attrs = dict(node.attrs)
        attrs[key] = value
        self.client.set_attrs(node.handle, node.key, attrs)
        self.tree.set_attrs(node.handle, attrs)

    # --- namespace --------------------------------------------------------------------------
    def mkdir(self, path: str, mode: int = 0o755) -> None:
        with self._ns:
            parent, name = self._resolve_parent(path)
            if self._lookup_in(parent.handle, name) is not None:
                raise _err(errno.EEXIST)
            raw = self.client.mkdir(parent.handle, name, {"n": name, "t": int(time.time())})
            self.tree.add_raw(raw)

    def rmdir(self, path: str) -> None:
        with self._ns:
            ent = self.resolve(path)
            if ent.kind != "dir":
                raise _err(errno.ENOTDIR)
            if ent.n.handle == self.tree.root:
                raise _err(errno.EBUSY)
            if self._listing(ent.n.handle):
                raise _err(errno.ENOTEMPTY)
            self._delete_node(ent.n.handle)

    def _delete_node(self, handle: str) -> None:
        delete_node(self.client, self.tree, handle)
        self.reads.forget(handle)

    def unlink(self, path: str) -> None:
        with self._ns:
            ent = self.resolve(path)
            if ent.kind == "dir":
                raise _err(errno.EISDIR)
            if ent.kind == "link":
                raise _err(errno.EPERM, "a .link file is read-only")
            if ent.kind == "staged":
                for h in self.wb.detach(ent.r):
                    self._delete_node(h)
                return
            self._delete_node(ent.n.handle)

    def rename(self, old: str, new: str) -> None:
        with self._ns:
            src = self.resolve(old)
            if src.kind == "link":
                raise _err(errno.EPERM, "a .link file is read-only")
            if src.kind == "dir" and src.n.handle == self.tree.root:
                raise _err(errno.EBUSY)
            parent, name = self._resolve_parent(new)
            if src.kind == "dir":
                # Refuse moving a folder into itself or below.
                cur: Node | None = parent
                while cur is not None and cur.handle != self.tree.root:
                    if cur.handle == src.n.handle:
                        raise _err(errno.EINVAL, "cannot move a folder into itself")
                    cur = self.tree.get(cur.parent)
            dst = self._lookup_in(parent.handle, name)
            if dst is not None and dst.parent == src.parent and dst.name == src.name:
                return
            doomed: list[str] = []
            if dst is not None:
                if dst.kind == "link":
                    raise _err(errno.EPERM, "a .link file is read-only")
                if src.kind == "dir":
                    if dst.kind != "dir":
                        raise _err(errno.ENOTDIR)
                    if self._listing(dst.n.handle):
                        raise _err(errno.ENOTEMPTY)
                    doomed.append(dst.n.handle)
                elif dst.kind == "dir":
                    raise _err(errno.EISDIR)
                elif dst.kind == "staged":
                    doomed.extend(self.wb.detach(dst.r))
                else:
                    doomed.append(dst.n.handle)
            if src.kind == "staged":
                rec = src.r
                with self.wb.lock:
                    remote = (rec.state == UPLOADED and not rec.dirty and not rec.busy
                              and rec.handle)
                if remote and rec.handle:
                    node = self.tree.get(rec.handle)
                    if node is not None:
                        self._move_node(node, parent.handle, name)
                # Old versions at the target are deleted after our upload commits.
                self.wb.rename(rec, parent.handle, name, [] if remote else doomed)
                if remote:
                    for h in doomed:
                        self._delete_node(h)
                return
            self._move_node(src.n, parent.handle, name)
            for h in doomed:
                self._delete_node(h)

    def _move_node(self, node: Node, parent: str, name: str) -> None:
        if node.parent != parent:
            self.client.move(node.handle, parent)
            self.tree.move(node.handle, parent)
        if node.name != name:
            self._set_remote_attr(node, "n", name)

    # --- links and xattrs -------------------------------------------------------------------
    def _known_link(self, ent: Entry) -> str | None:
        if ent.kind == "staged":
            rec = ent.r
            with self.wb.lock:
                if rec.state == UPLOADED and not rec.dirty and not rec.busy:
                    return rec.link
            return None
        node = ent.node
        if node is not None and node.public and node.key is not None:
            return links.format_link(node.public, node.key)
        return None

    def _wait_link(self, ent: Entry) -> str:
        if ent.kind == "staged":
            rec = self.wb.wait_uploaded(ent.r, self.link_timeout)
            assert rec.link is not None
            return rec.link
        node = self.tree.get(ent.n.handle) or ent.n
        if not node.ok or node.key is None or len(node.key) != 32:
            raise _err(errno.EIO, "node %s cannot be decrypted" % node.handle)
        if not node.public:
            ph = self.client.export([node.handle])[0]
            if isinstance(ph, BaseException):
                raise ph
            self.tree.set_public(node.handle, ph)
            return links.format_link(ph, node.key)
        return links.format_link(node.public, node.key)

    def _state_of(self, ent: Entry) -> tuple[str, str | None, str | None]:
        """(state, handle, error) of a file entry."""
        if ent.kind == "staged":
            rec = ent.r
            with self.wb.lock:
                state = rec.shown_state
                handle = rec.handle if state == UPLOADED else None
                return state, handle, rec.error if state == FAILED else None
        return UPLOADED, ent.n.handle, None

    def listxattr(self, path: str) -> list[str]:
        ent = self.resolve(path)
        if ent.kind == "dir":
            names = [XA_HANDLE]
            if ent.n.handle == self.tree.root:
                names += [XA_CTL_STATUS, XA_CTL_DIR]
            return names
        if ent.kind == "link":
            return []
        state, handle, error = self._state_of(ent)
        names = [XA_STATE, XA_LINK]
        if handle:
            names.append(XA_HANDLE)
        if error:
            names.append(XA_ERROR)
        return names

    def getxattr(self, path: str, name: str) -> bytes:
        ent = self.resolve(path)
        if not name.startswith("user."):
            # No security labels or POSIX ACLs here.  ENOTSUP (not ENODATA) lets `ls -l` learn
            # that once per file system instead of asking twice per entry: with ENODATA an
            # `ls -l` of 10,000 files made 40,000 getxattr round trips.
            raise _err(errno.ENOTSUP, "megafs stores only user.mega.* attributes")
        if ent.kind == "dir":
            if name == XA_HANDLE:
                return ent.n.handle.encode()
            if ent.n.handle == self.tree.root:
                if name == XA_CTL_STATUS:
                    return json.dumps({"counts": self.wb.counts(),
                                       "files": self.wb.snapshot()}).encode()
                if name == XA_CTL_DIR:
                    return self.mount_dir.encode()
            raise _err(errno.ENODATA)
        if ent.kind == "link":
            raise _err(errno.ENODATA)
        state, handle, error = self._state_of(ent)
        if name == XA_STATE:
            return state.encode()
        if name == XA_HANDLE and handle:
            return handle.encode()
        if name == XA_ERROR and error:
            return error.encode()
        if name == XA_LINK:
            return self._wait_link(ent).encode()
        raise _err(errno.ENODATA)

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        ent = self.resolve(path)
        if ent.kind == "dir" and ent.n.handle == self.tree.root and name == XA_CTL_RETRY:
            n = self.wb.retry_failed()
            log.info("retry requested: %d failed upload(s) re-queued", n)
            return
        raise _err(errno.ENOTSUP, "megafs does not store extended attributes")

    def removexattr(self, path: str, name: str) -> None:
        self.resolve(path)
        raise _err(errno.ENOTSUP, "megafs does not store extended attributes")


__all__ = ["MegaFS", "Entry", "Handle", "IntegrityError"]
