"""The virtual layer over the filesystem core: ``X.link`` files and ``user.mega.*`` xattrs.

``DIR.link`` beside every folder is the same for a folder link (issue 25): reading it exports
the folder (``https://mega.nz/folder/H#K``, every ``DIR.link`` of a mount the same length) and
``rm DIR.link`` revokes it; ``user.mega.link`` on the folder gives the link too.  A folder's
link wish is MEGA's own state (``vfs/public.py``): it survives a remount.

``X.link`` is reachable by name beside every file ``X`` (``cat``, ``stat``, ``ls X.link``) and
holds ``X``'s public link and a newline (``https://mega.nz/file/H#K``, or the local server's
``http://127.0.0.1:PORT/file/H#K`` on a ``--local`` mount, of the same length for every file
of a mount); it is not listed by ``readdir`` (so ``rsync --delete``, ``cp -a`` and ``git add
-A`` see only real files) unless the mount option ``show_links`` asks for it.  A real entry
named ``X.link`` always wins over the virtual one (creating or renaming a real file onto the
name is allowed); listed, ``X.link`` comes right before ``X``.  Reading ``X.link`` waits for
``X``'s upload (``--link-timeout``, interruptible), exporting the link if the node has none;
removing ``X.link`` revokes the public link (``l`` with ``d:1``) and it stays revoked (also
while the file is open, uploading or rewritten: ``Record.link_wanted`` is the one owner of that
wish), until reading ``X.link`` or ``user.mega.link`` asks for a fresh one.  Other changes
to a virtual ``.link`` (writing, truncating, touching, renaming it)
fail with EPERM.

xattrs on files: ``user.mega.state``, ``user.mega.link`` (waits like ``X.link``),
``user.mega.handle`` (once uploaded), ``user.mega.error`` (once failed); on folders
``user.mega.handle`` and ``user.mega.link`` (the folder link); on the mount root the control
attributes ``user.megafs.status``, ``user.megafs.mountdir``, ``user.megafs.pid`` (the mount
process, for ``megafs umount`` run without the mount's ``--state-dir``) and the write-only
``user.megafs.retry``. All are read by name and none is listed (``listxattr`` lists only the
user xattrs programs stored), so copy tools never carry a link's key into a copy; setting or
removing them fails with ENOTSUP. Other ``user.*`` names are stored with the node
(``vfs/meta.py``); names outside ``user.*`` give ENOTSUP (so ``ls -l`` stops asking) and unknown
``user.*`` names ENODATA. Never imports FUSE.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
from typing import Callable

from ..api.folderlink import format_folder_link
from ..api.links import format_link
from ..api.xferquota import wait_text
from ..errors import FsError
from .core import FileSystem
from .handles import FileHandle, LinkHandle
from .meta import stored_name
from .namespace import DIR, Entry
from .public import PublicLinks

log = logging.getLogger(__name__)

LINK_SUFFIX = ".link"
STATUS_FILES = 200            # files listed in the status xattr (its value is <= 64 KiB)
LINK_SIZE = len(format_link("A" * 8, bytes(32))) + 1      # the link and a newline


def link_size(site: str | None = None, folder: bool = False) -> int:
    """The exact size of every file's (``folder``: folder's) ``X.link`` of a mount whose links
    start with ``site``."""
    if folder:
        return len(format_folder_link("A" * 8, bytes(16), site=site)) + 1
    return len(format_link("A" * 8, bytes(32), site=site)) + 1


def _link_names(listing: dict[str, Entry]) -> set[str]:
    """The virtual ``X.link`` names a folder listing shows (``show_links``): one per entry
    without a real namesake, within the 255-byte name limit."""
    return {name + LINK_SUFFIX for name in listing if name + LINK_SUFFIX not in listing
            and len((name + LINK_SUFFIX).encode()) <= 255}


XA_STATE, XA_LINK, XA_HANDLE, XA_ERROR = ("user.mega.state", "user.mega.link",
                                          "user.mega.handle", "user.mega.error")
XA_STATUS, XA_MOUNTDIR, XA_PID, XA_RETRY = ("user.megafs.status", "user.megafs.mountdir",
                                            "user.megafs.pid", "user.megafs.retry")


def _order(name: str, links: set[str]) -> tuple[str, int]:
    """Listing order with each virtual X.link right before its X: `rm -r` and `mv DIR
    /elsewhere` remove entries in listing order, and X.link vanishes with X (removing it
    first only revokes the link)."""
    if name in links:
        return name[:-len(LINK_SUFFIX)], 0
    return name, 1


def _readonly() -> FsError:
    return FsError(errno.EPERM, "a .link file is read-only")


def _listing_stamp(layer: "LinkLayer", path: str | None, fh: int | None = None
                   ) -> tuple[str, tuple] | None:
    """``LinkLayer.listing_stamp``: (folder handle, ``Namespace.stamp``) of a folder, for the
    kernel's readdir cache (``fuse/dircache.py``); the ``.link`` names it shows follow from
    its other names."""
    folder = layer.core.folder_of(path, fh)
    stamp = layer.ns.stamp(folder)
    return None if stamp is None else (folder, stamp)


class LinkLayer:
    """What the FUSE adapter talks to: the core plus the virtual ``.link`` files and xattrs."""
    listing_stamp = _listing_stamp      # a function outside: the class is at the size limit

    def __init__(self, core: FileSystem, *, link_timeout: float = 600.0,
                 show_links: bool = False, mount_dir: str = "",
                 link_site: str | None = None, links: PublicLinks | None = None) -> None:
        """``core``: the POSIX operations; ``links``: links and queue status (by default
        over the core's client, tree and queue)."""
        self.core = core
        # the parts of the core this layer uses, named once
        self.ns, self.io, self.handles, self.meta = core.ns, core.io, core.handles, core.meta
        self.quota = core.quota
        self.links = links or PublicLinks(core.client, core.tree, core.wb, core.ns.path_of)
        # links of a --local mount point at the local server (its /file/H page)
        self.link_site = link_site
        self.link_size = link_size(link_site)
        self.folder_link_size = link_size(link_site, folder=True)
        self.link_timeout = link_timeout
        self.show_links = show_links
        self.mount_dir = mount_dir
        # set by the FUSE adapter: whether the request being served was interrupted
        self.interrupted: Callable[[], bool] = lambda: False

    # --- resolution -------------------------------------------------------------------------
    def _virtual(self, path: str) -> Entry | None:
        """The file or folder a virtual ``X.link`` path describes, or None if ``path`` is not
        one."""
        base, _, last = path.rstrip("/").rpartition("/")
        if not last.endswith(LINK_SUFFIX) or len(last) <= len(LINK_SUFFIX):
            return None
        try:
            self.ns.resolve(path)
            return None                       # a real entry: it wins
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                return None
        try:
            return self.ns.resolve(base + "/" + last[:-len(LINK_SUFFIX)])
        except FsError:
            return None

    def notes(self) -> list[str]:
        """Lines ``megafs status`` shows about the mount as a whole (a transfer-quota wait)."""
        left = self.links.quota_wait()
        if left <= 0:
            return []
        return ["reads wait for MEGA's transfer quota: continuing in %s" % wait_text(left)]

    def wait_link(self, target: Entry) -> str:
        """``target``'s public link, waiting for its upload and exporting if needed (a
        folder's: exported now; its files still uploading show through it once uploaded)."""
        if target.kind == DIR:
            public, key = self.links.folder_link(target.folder)
            return format_folder_link(public, key, site=self.link_site)
        # an explicit read asks again; set first, so the committer exports it as part of
        # the upload this waits for
        self.links.wish(target.sf, True)
        node = self.core.wait_uploaded(target, self.link_timeout, self.interrupted)
        if not node.ok or node.key is None or len(node.key) != 32:
            raise FsError(errno.EIO, "node %s cannot be decrypted" % node.handle)
        return format_link(self.links.public_handle(node), node.key, site=self.link_site)

    # --- attributes and listings ------------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        if fh:
            handle = self.handles.get(fh)
            if isinstance(handle, LinkHandle):
                return self._link_stat(handle.target)
        if path is not None and not fh:
            target = self._virtual(path)
            if target is not None:
                return self._link_stat(target)
        return self.core.getattr(path, fh)

    def _link_stat(self, target: Entry) -> dict[str, int]:
        st = self.core.stat_entry(target)
        st["st_mode"] = stat.S_IFREG | 0o444
        # Every link has the same length (8-character handle, 43-character key), so the size
        # is right before the link exists and no cached attribute goes stale.
        st["st_size"] = self.folder_link_size if target.kind == DIR else self.link_size
        st["st_nlink"] = 1
        st["st_blocks"] = (st["st_size"] + 511) // 512
        return st

    def readdir(self, path: str | None, fh: int | None = None) -> list[str]:
        names = self.core.readdir(path, fh)
        if not self.show_links:
            return names
        extra = _link_names(self.ns.listing(self.core.folder_of(path, fh)))
        return sorted(names + list(extra), key=lambda name: _order(name, extra))

    def readdir_attrs(self, path: str | None, fh: int | None = None
                      ) -> list[tuple[str, dict[str, int]]]:
        """(name, stat fields) of every entry of a folder (for ``readdirplus``: the kernel
        then needs no lookup per entry for ``ls -l``)."""
        folder = self.core.folder_of(path, fh)
        listing = self.ns.listing(folder)
        out = [(name, self.core.stat_entry(entry)) for name, entry in sorted(listing.items())]
        if self.show_links:
            links = _link_names(listing)
            out += [(name, self._link_stat(listing[name[:-len(LINK_SUFFIX)]]))
                    for name in links]
            out.sort(key=lambda item: _order(item[0], links))
        return out

    def statfs(self) -> dict[str, int]:
        return self.quota.statfs()

    def opendir(self, path: str) -> int:
        return self.core.opendir(path)

    def releasedir(self, fh: int) -> None:
        self.io.release(fh)

    # --- files ------------------------------------------------------------------------------
    def create(self, path: str, flags: int = os.O_WRONLY, mode: int | None = None) -> int:
        return self.io.create(path, flags, mode)

    def open(self, path: str, flags: int) -> int:
        target = self._virtual(path)
        if target is None:
            return self.io.open(path, flags)
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            raise _readonly()
        return self.handles.add(LinkHandle(target))

    def is_link(self, fh: int) -> bool:
        """Whether ``fh`` is a ``.link`` file (opened with direct I/O: its size changes)."""
        return isinstance(self.handles.get(fh), LinkHandle)

    def read(self, fh: int, size: int, offset: int) -> bytes:
        handle = self.handles.get(fh)
        if isinstance(handle, LinkHandle):
            if handle.content is None:
                handle.content = (self.wait_link(handle.target) + "\n").encode()
            return handle.content[offset:offset + size]
        return self.io.read(fh, size, offset, self.interrupted)

    def write(self, fh: int, data: bytes, offset: int) -> int:
        return self.io.write(fh, data, offset, self.interrupted)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if fh and isinstance(self.handles.get(fh), LinkHandle):
            raise _readonly()
        if path is not None and not fh and self._virtual(path) is not None:
            raise _readonly()
        self.io.truncate(path, length, fh)

    def flush(self, fh: int) -> None:
        self.io.flush(fh)

    def release(self, fh: int) -> None:
        self.io.release(fh)

    def fsync(self, fh: int) -> None:
        if isinstance(self.handles.get(fh), FileHandle):
            self.io.fsync(fh, self.interrupted)

    def utimens(self, path: str | None, mtime_ns: int | None, fh: int | None = None) -> None:
        if path is not None and not fh and self._virtual(path) is not None:
            raise _readonly()
        self.core.utimens(path, mtime_ns, fh)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        """Store the permission bits (``vfs/meta.py``); a ``.link`` file is read-only."""
        if fh and isinstance(self.handles.get(fh), LinkHandle):
            raise _readonly()
        if path is not None and not fh and self._virtual(path) is not None:
            raise _readonly()
        self.meta.chmod(path, mode, fh)

    def chown(self, path: str | None) -> None:
        """Accepted and not stored: every file is the mounting user's."""
        if path is not None and self._virtual(path) is None:
            self.ns.resolve(path)

    # --- namespace --------------------------------------------------------------------------
    def mkdir(self, path: str, mode: int | None = None) -> None:
        self.core.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        self.core.rmdir(path)

    def symlink(self, path: str, target: str) -> None:
        if self._virtual(path) is not None:
            raise FsError(errno.EEXIST, "the name is a file's .link")
        self.core.symlink(path, target)

    def readlink(self, path: str) -> str:
        if self._virtual(path) is not None:
            raise FsError(errno.EINVAL, "a .link file is not a symbolic link")
        return self.core.readlink(path)

    def unlink(self, path: str) -> None:
        target = self._virtual(path)
        if target is None:
            self.core.unlink(path)
            return
        if target.kind == DIR:
            self.links.revoke_folder(target.folder)
            return
        # first, so the committer plans no export from now on (and undoes one in flight)
        self.links.wish(target.sf, False)
        node = self.core.remote_node(target)
        if node is not None:
            self.links.revoke(node)

    def rename(self, old: str, new: str) -> None:
        if self._virtual(old) is not None:
            raise _readonly()
        self.core.rename(old, new)

    # --- xattrs -----------------------------------------------------------------------------
    def listxattr(self, path: str) -> list[str]:
        """The user xattrs programs stored (``vfs/meta.py``).  megafs's own ``user.mega.*``
        attributes are readable by name but never listed (issue 22): copy and backup tools
        (`cp -a`, `rsync -aX`, `tar --xattrs`) copy every listed attribute, so listing
        ``user.mega.link`` put the file's key into every copy, and `rsync -aX` into the mount
        failed (exit 23) trying to remove the read-only ones.  ENOENT for a name that does
        not exist, as for any operation."""
        if self._virtual(path) is not None:
            return []
        return sorted(self.meta.xattrs(self.ns.resolve(path)))

    def getxattr(self, path: str, name: str) -> bytes:
        virtual = self._virtual(path)
        entry = virtual or self.ns.resolve(path)
        if not name.startswith("user."):
            # No security labels or POSIX ACLs here.  ENOTSUP (not ENODATA) lets `ls -l` learn
            # that once per file system instead of asking twice per entry: with ENODATA an
            # `ls -l` of 10,000 files made 40,000 getxattr round trips.
            raise FsError(errno.ENOTSUP, "megafs stores only user.mega.* attributes")
        if virtual is not None:
            raise FsError(errno.ENODATA, "a .link file has no attributes")
        if stored_name(name):
            value = self.meta.xattrs(entry).get(name)
            if value is None:
                raise FsError(errno.ENODATA, "no such attribute")
            return value
        if entry.kind == DIR:
            return self._dir_xattr(entry, name)
        state, handle, error = self.core.file_state(entry)
        if name == XA_STATE:
            return state.encode()
        if name == XA_HANDLE and handle:
            return handle.encode()
        if name == XA_ERROR and error:
            return error.encode()
        if name == XA_LINK:
            return self.wait_link(entry).encode()
        raise FsError(errno.ENODATA, "no such attribute")

    def _dir_xattr(self, entry: Entry, name: str) -> bytes:
        folder = entry.folder
        if name == XA_HANDLE:
            return folder.handle.encode()
        if name == XA_LINK and not self.links.is_root(folder.handle):
            return self.wait_link(entry).encode()      # (MEGA shares no root folder)
        if self.links.is_root(folder.handle):
            if name == XA_STATUS:
                # An xattr value is at most 64 KiB: uploading and failed files first, then
                # pending ones, up to STATUS_FILES; `megafs status` reads the rest from the
                # queue file.
                files = self.links.status()
                order = {"uploading": 0, "failed": 1}
                files.sort(key=lambda f: order.get(f["state"], 2))
                counts: dict[str, int] = {"pending": 0, "uploading": 0, "failed": 0}
                for f in files:
                    counts[f["state"]] = counts.get(f["state"], 0) + 1
                return json.dumps({"counts": counts, "total": len(files),
                                   "files": files[:STATUS_FILES],
                                   "notes": self.notes()}).encode()
            if name == XA_MOUNTDIR:
                return self.mount_dir.encode()
            if name == XA_PID:
                return str(os.getpid()).encode()
        raise FsError(errno.ENODATA, "no such attribute")

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        virtual = self._virtual(path)
        entry = virtual or self.ns.resolve(path)
        if entry.kind == DIR and self.links.is_root(entry.folder.handle) and name == XA_RETRY:
            n = self.links.retry_failed()
            log.info("retry requested: %d failed upload(s) re-queued", n)
            return
        if virtual is None and stored_name(name):
            self.meta.setxattr(path, name, value, flags)
            return
        raise FsError(errno.ENOTSUP, "megafs stores user.* attributes only; user.mega.* "
                      "are its own, read-only")

    def removexattr(self, path: str, name: str) -> None:
        if self._virtual(path) is None:
            self.ns.resolve(path)
            if stored_name(name):
                self.meta.removexattr(path, name)
                return
        raise FsError(errno.ENOTSUP, "megafs stores user.* attributes only; user.mega.* "
                      "are its own, read-only")
