"""A public folder link mounted read-only (``megafs mount MNT --link FOLDERLINK``, issue 25
item 4): the operations the FUSE adapter calls, over the link's node tree
(``tree/linkfeed.py``) and the mount's read path (``ReadCache``: ranged, cached, MAC-checked
blocks; ``g`` in the link's ``n=`` session through ``LinkReader``).

There is no write path at all: no write-back queue, no staged files, no change on MEGA.
Every operation that would write (create, write, truncate, mkdir, rmdir, unlink, rename,
symlink, chmod, chown, utimens, setxattr, removexattr, an open for writing) answers EROFS and
logs one INFO line naming it; the kernel mount is ``ro`` too, so most writes are refused by
the kernel before they get here.

What is shown: the link's folder is the mount's root; names as an account's mount shows them
(``tree/names.py``: duplicates and invalid names escaped, undecryptable nodes as
``undecryptable-HANDLE``); files ``r--r--r--`` and folders ``r-xr-xr-x`` (a mode kept in
``mfs-mode`` without its write bits), symbolic links made by megafs as links.  ``X.link``
beside an entry (listed with ``show_links``) holds the entry's own link inside the folder
link, ``FOLDERLINK/file/H`` (``/folder/H`` for a folder; the root's is the folder link
itself), which the web client and ``megafs get`` open; ``user.mega.link`` and
``user.mega.handle`` answer the same.  These links carry the folder link's key, which the
user of the mount already has.  Once the owner revokes the link the tree is emptied and reads
of files still open fail with ENOENT.  Never logs a key or a link.
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..api.folderlink import FolderLink
from ..api.publicfolder import FILE, Entry as LinkEntry, PublicFolder, item_link
from ..crypto import FileKey
from ..errors import ApiCode, FsError, MegaError
from ..tree.linkfeed import ChangeGate
from ..tree.meta import LINK_MAX, is_link as is_symlink, mode_of, xattrs_of
from ..tree.nodes import Node
from ..tree.tree import Tree, lookup
from .ahead import FILES_AHEAD, FolderOrder
from .readcache import ReadCache, ReadState

log = logging.getLogger(__name__)

LINK_SUFFIX = ".link"
BLOCK_SIZE = 131072
NO_WRITE = 0o7555          # the write bits are dropped from every mode
XA_LINK, XA_HANDLE = "user.mega.link", "user.mega.handle"
XA_STATUS, XA_PID, XA_MOUNTDIR = "user.megafs.status", "user.megafs.pid", "user.megafs.mountdir"


class LinkReader:
    """What ``ReadCache`` asks of a client, answered in the link's session: ``g`` of a file
    inside the link (``PublicFolder.open_download``, the size checked against the tree's),
    ranged reads and the transfer-quota gate."""

    def __init__(self, public: PublicFolder, tree: Tree) -> None:
        self.public = public
        self.tree = tree
        self.transfer_quota = public.client.transfer_quota
        self._opened: dict[str, Node] = {}     # files opened, kept after the owner removes them
        self._lock = threading.Lock()

    def remember(self, node: Node) -> None:
        with self._lock:
            self._opened[node.handle] = node

    def open_download(self, handle: str | None = None, **_: Any) -> Any:
        with self._lock:
            node = self._opened.get(handle or "") or self.tree.get(handle or "")
        if node is None or node.key is None:
            raise MegaError(ApiCode.ENOENT, "the file is no longer in the folder link")
        entry = LinkEntry(node.handle, node.parent, FILE, node.name, size=node.size,
                          key=node.key)
        return self.public.open_download(entry)

    def read_range(self, url: str, key: FileKey, offset: int, length: int) -> bytes:
        return self.public.client.read_range(url, key, offset, length)


@dataclass
class _Open:
    node: Node
    state: ReadState = field(default_factory=ReadState)
    content: bytes | None = None          # an X.link file's text


class LinkFileSystem:
    """The read-only file system of one folder link (see the module docstring).  Thread-safe:
    the tree locks itself, the open files are under ``self._lock``."""

    def __init__(self, tree: Tree, reads: ReadCache, reader: LinkReader, link: FolderLink, *,
                 show_links: bool = False, link_site: str | None = None) -> None:
        self.tree = tree
        self.reads = reads
        self.order = FolderOrder(tree, 2 * FILES_AHEAD)    # the files a traversal reads next
        self.reader = reader
        self.link = link if link_site is None else FolderLink(link.handle, link.key,
                                                              api=link_site)
        self.show_links = show_links
        self.gone = False                   # the owner revoked the link
        self.gate: ChangeGate | None = None  # the watcher's (tree/linkfeed.py), set by the runtime
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self.interrupted: Callable[[], bool] = lambda: False   # set by the FUSE adapter
        self._open: dict[int, _Open] = {}
        self._dirs: dict[int, str] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    # --- names ------------------------------------------------------------------------------
    def _node(self, path: str | None) -> Node:
        if path is None:
            raise FsError(errno.EBADF, "no path and no open file")
        node = lookup(self.tree, path)
        if node is None:
            raise FsError(errno.ENOENT, "no such file or folder in the folder link")
        return node

    def _virtual(self, path: str | None) -> Node | None:
        """The entry whose ``.link`` file ``path`` names, if it names one."""
        if path is None or not path.endswith(LINK_SUFFIX) or lookup(self.tree, path) is not None:
            return None
        return lookup(self.tree, path[:-len(LINK_SUFFIX)] or "/")

    def _link_of(self, node: Node) -> str:
        if node.handle == self.tree.root:
            return self.link.url()
        return item_link(self.link, node.handle, node.is_dir)

    # --- attributes -------------------------------------------------------------------------
    def _stat(self, mode: int, size: int, mtime_ns: int, nlink: int = 1) -> dict[str, int]:
        return {"st_mode": mode, "st_nlink": nlink, "st_size": size, "st_uid": self.uid,
                "st_gid": self.gid, "st_mtime": mtime_ns, "st_atime": mtime_ns,
                "st_ctime": mtime_ns, "st_blocks": (size + 511) // 512,
                "st_blksize": BLOCK_SIZE}

    def stat_node(self, node: Node) -> dict[str, int]:
        mtime = node.mtime_ns or self.started_ns
        if node.is_dir:
            return self._stat(stat.S_IFDIR | mode_of(node.attrs, 0o755) & NO_WRITE, 0, mtime, 2)
        if is_symlink(node.attrs):
            return self._stat(stat.S_IFLNK | 0o777, node.size, mtime)
        return self._stat(stat.S_IFREG | mode_of(node.attrs, 0o644) & NO_WRITE, node.size,
                          mtime)

    def _link_stat(self, node: Node) -> dict[str, int]:
        return self._stat(stat.S_IFREG | 0o444, len(self._link_of(node)) + 1,
                          node.mtime_ns or self.started_ns)

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        with self._lock:
            opened = self._open.get(fh or 0)
        if opened is not None and opened.content is None:
            return self.stat_node(opened.node)
        virtual = self._virtual(path)
        if virtual is not None:
            return self._link_stat(virtual)
        return self.stat_node(self._node(path))

    def statfs(self) -> dict[str, int]:
        return {"f_bsize": BLOCK_SIZE, "f_frsize": BLOCK_SIZE, "f_blocks": 1, "f_bfree": 0,
                "f_bavail": 0, "f_files": len(self.tree), "f_ffree": 0, "f_favail": 0,
                "f_namemax": 255}

    # --- folders ----------------------------------------------------------------------------
    def opendir(self, path: str) -> int:
        node = self._node(path)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR, "not a folder")
        with self._lock:
            number = next(self._numbers)
            self._dirs[number] = node.handle
        return number

    def releasedir(self, fh: int) -> None:
        with self._lock:
            self._dirs.pop(fh, None)

    def _folder(self, path: str | None, fh: int | None) -> str:
        """The handle of the folder open as ``fh``, else named by ``path``."""
        with self._lock:
            folder = self._dirs.get(fh or 0)
        return self._node(path).handle if folder is None else folder

    def _listing(self, path: str | None, fh: int | None) -> dict[str, Node]:
        if self.gate is not None:
            self.gate.passes()          # an owner's change shows here once fully published
        folder = self._folder(path, fh)
        if self.tree.get(folder) is None:
            raise FsError(errno.ENOENT, "the folder was removed from the folder link")
        return self.tree.children_view(folder)

    def _with_links(self, listing: dict[str, Node]) -> list[str]:
        if not self.show_links:
            return []
        return [name + LINK_SUFFIX for name in listing if name + LINK_SUFFIX not in listing
                and len((name + LINK_SUFFIX).encode()) <= 255]

    def listing_stamp(self, path: str | None, fh: int | None = None
                      ) -> tuple[str, tuple] | None:
        """(folder handle, stamp) of a folder: its name map in the link's tree, replaced on
        every change (``Namespace.stamp``, ``fuse/dircache.py``)."""
        folder = self._folder(path, fh)
        if self.tree.get(folder) is None:
            return None
        return folder, (self.tree.children_view(folder),)

    def readdir(self, path: str | None, fh: int | None = None) -> list[str]:
        listing = self._listing(path, fh)
        return sorted(list(listing) + self._with_links(listing))

    def readdir_attrs(self, path: str | None, fh: int | None = None
                      ) -> list[tuple[str, dict[str, int]]]:
        listing = self._listing(path, fh)
        out = [(name, self.stat_node(node)) for name, node in listing.items()]
        out += [(name, self._link_stat(listing[name[:-len(LINK_SUFFIX)]]))
                for name in self._with_links(listing)]
        return sorted(out)

    # --- files ------------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            self._refuse("open for writing", path)
        virtual = self._virtual(path)
        if virtual is not None:
            opened = _Open(virtual, content=(self._link_of(virtual) + "\n").encode())
        else:
            node = self._node(path)
            if node.is_dir:
                raise FsError(errno.EISDIR, "a folder")
            node.file_key          # a node without a usable key: EIO now, not at the read
            self.reader.remember(node)
            opened = _Open(node)
        with self._lock:
            number = next(self._numbers)
            self._open[number] = opened
        return number

    def is_link(self, fh: int) -> bool:
        with self._lock:
            opened = self._open.get(fh)
        return opened is not None and opened.content is not None

    def read(self, fh: int, size: int, offset: int) -> bytes:
        with self._lock:
            opened = self._open.get(fh)
        if opened is None:
            raise FsError(errno.EBADF, "not an open file")
        if opened.content is not None:
            return opened.content[offset:offset + size]
        if self.gone:
            raise FsError(errno.ENOENT, "the folder link was revoked by its owner")
        node = opened.node
        return self.reads.read(node.handle, node.file_key, node.size, offset, size,
                               opened.state, self.interrupted,
                               lambda: self.order.around(node.handle))

    def release(self, fh: int) -> None:
        with self._lock:
            self._open.pop(fh, None)

    def flush(self, fh: int) -> None:
        """Nothing to write back."""

    def fsync(self, fh: int) -> None:
        """Nothing to write back."""

    def readlink(self, path: str) -> str:
        node = self._node(path)
        if node.is_dir or not is_symlink(node.attrs):
            raise FsError(errno.EINVAL, "not a symbolic link")
        if node.size > LINK_MAX:
            raise FsError(errno.EIO, "a symlink's target is longer than %d bytes" % LINK_MAX)
        self.reader.remember(node)
        data = self.reads.read(node.handle, node.file_key, node.size, 0, node.size, None,
                               self.interrupted)
        return data.decode("utf-8", "surrogateescape")

    # --- xattrs -----------------------------------------------------------------------------
    def listxattr(self, path: str) -> list[str]:
        if self._virtual(path) is not None:
            return []
        return sorted(xattrs_of(self._node(path).attrs))

    def getxattr(self, path: str, name: str) -> bytes:
        virtual = self._virtual(path)
        node = virtual or self._node(path)
        if not name.startswith("user."):
            raise FsError(errno.ENOTSUP, "megafs stores only user.* attributes")
        if virtual is not None:
            raise FsError(errno.ENODATA, "a .link file has no attributes")
        if name == XA_LINK:
            return self._link_of(node).encode()
        if name == XA_HANDLE:
            return node.handle.encode()
        if node.handle == self.tree.root and name == XA_STATUS:
            note = "read-only folder link" + (" (revoked by its owner)" if self.gone else "")
            return json.dumps({"counts": {"pending": 0, "uploading": 0, "failed": 0},
                               "total": 0, "files": [], "notes": [note]}).encode()
        if node.handle == self.tree.root and name == XA_PID:
            return str(os.getpid()).encode()
        if node.handle == self.tree.root and name == XA_MOUNTDIR:
            return b""               # a megafs mount (`megafs umount` asks), without a queue
        value = xattrs_of(node.attrs).get(name)
        if value is None:
            raise FsError(errno.ENODATA, "no such attribute")
        return value

    # --- every write: EROFS -----------------------------------------------------------------
    def _refuse(self, what: str, path: str | None) -> None:
        log.info("read-only folder link mount: %s of %s refused (EROFS)", what,
                 path if path is not None else "an open file")
        raise FsError(errno.EROFS, "a folder link is mounted read-only")

    def create(self, path: str, flags: int = os.O_WRONLY, mode: int | None = None) -> int:
        self._refuse("create", path)
        return 0

    def write(self, fh: int, data: bytes, offset: int) -> int:
        self._refuse("write", None)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self._refuse("truncate", path)

    def mkdir(self, path: str, mode: int | None = None) -> None:
        self._refuse("mkdir", path)

    def rmdir(self, path: str) -> None:
        self._refuse("rmdir", path)

    def unlink(self, path: str) -> None:
        self._refuse("unlink", path)

    def rename(self, old: str, new: str) -> None:
        self._refuse("rename", old)

    def symlink(self, path: str, target: str) -> None:
        self._refuse("symlink", path)

    def utimens(self, path: str | None, mtime_ns: int | None = None,
                fh: int | None = None) -> None:
        self._refuse("utimens", path)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        self._refuse("chmod", path)

    def chown(self, path: str | None) -> None:
        self._refuse("chown", path)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        self._refuse("setxattr", path)

    def removexattr(self, path: str, name: str) -> None:
        self._refuse("removexattr", path)
