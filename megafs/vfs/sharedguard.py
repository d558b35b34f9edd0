"""An account's mount with its incoming shares (issue 25): ``LinkLayer`` that lets writes under
``/Shared with me`` (``tree/inshares.py``) through as far as the share's access level allows,
and refuses the rest with one errno and one log line.

Folders shared with this account show under ``/Shared with me/OWNER - FOLDER/``.  What a
sharee may do follows the SDK's access levels (meganz/sdk include/mega/types.h
``accesslevel_t``: "RDONLY - cannot add, rename or delete", "RDWR - cannot rename or delete";
src/megaclient.cpp ``checkaccess``, ``checkmove``, ``setattr``, ``unlink``), which the local
server enforces the same way (``server/commands/inshares.py``):

* read-only (0): ``ls -l`` shows no write bits (the kernel then refuses a non-root user's
  writes itself, EACCES: ``default_permissions``); every write that reaches here is EROFS;
* read/write (1): new files and folders may be added (a new file may be written, its mode set
  and removed again until its upload made it a node); changing, renaming or removing a node
  that exists on MEGA is EACCES;
* full access (2): everything inside the share.

The folder of shares and the shared folders themselves are their owners' (EROFS).  A rename
between a share and the account's own folders (or another share) is EXDEV: MEGA's clients move
no node across a share boundary (``checkmove`` condition 7: the keys would have to change; it
allows one between two shares of the same owner, which the mount does not try), so ``mv``
copies and deletes, as between two disks.  Links of shared nodes (``X.link``,
``user.mega.link``) are the owner's to make (meganz/sdk ``exportnode`` needs ``OWNER``):
EROFS in read-only shares, EPERM in the others; new files inside a share never ask for one.
New nodes are keyed under the share key by ``tree/remote.py`` (``cr``).
"""
from __future__ import annotations

import errno
import logging
import os

from ..errors import FsError
from ..tree.inshares import SHARED, SHARED_NAME
from ..writeback.record import link_wish
from ..writeback.staged import StagedFile
from .links import XA_LINK, LinkLayer
from .namespace import DIR, split

log = logging.getLogger(__name__)

PREFIX = "/" + SHARED_NAME
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
READ_ONLY, READ_WRITE, FULL = 0, 1, 2
MAX_DEPTH = 10_000          # folders walked up looking for a share root (cycles are cut)
NOT_SHARED = (None, FULL)


def _no_link(sf: StagedFile) -> None:
    """A new file inside a share asks for no link: the owner's to make (saved with the file's
    first flush, before any upload)."""
    sf.change(lambda rec: link_wish(rec, False))


def in_shares(path: str | None) -> bool:
    """Whether a mount path is the folder of incoming shares or inside it."""
    return path is not None and (path == PREFIX or path.startswith(PREFIX + "/"))


class SharedLinkLayer(LinkLayer):
    """``LinkLayer`` whose writes under ``PREFIX`` follow the share's access level."""

    # --- which share, at which level --------------------------------------------------------
    def _share(self, path: str | None) -> tuple[str | None, int]:
        """(share root handle, access level) of the share ``path`` is in: ``NOT_SHARED``
        outside ``/Shared with me``, ("", 0) for that folder itself and a share root."""
        if not in_shares(path):
            return NOT_SHARED
        assert path is not None
        parts = split(path)
        return self._root_named(parts[1]) if len(parts) >= 3 else ("", READ_ONLY)

    def _root_named(self, name: str) -> tuple[str, int]:
        """(handle, level) of the share shown as ``/Shared with me/NAME``; ("", 0) if none."""
        try:
            root = self.ns.resolve(PREFIX + "/" + name).folder.handle
        except FsError:
            return "", READ_ONLY
        return root, self._level(root)

    def _level(self, root: str) -> int:
        incoming = self.core.tree.incoming
        share = incoming.shares.get(root) if incoming is not None else None
        return share.level if share is not None else READ_ONLY

    def _root_of(self, folder: str) -> str | None:
        """The share root a folder handle is (or is inside of), None outside every share."""
        tree, handle = self.core.tree, folder
        for _ in range(MAX_DEPTH):
            node = tree.get(handle)
            if node is None or not node.parent:
                return None
            if node.parent == SHARED:
                return node.handle
            handle = node.parent
        return None

    def _uncommitted(self, path: str) -> bool:
        """Whether ``path`` is a file only this mount has (staged, never made a node)."""
        try:
            entry = self.ns.resolve(path)
        except FsError:
            return False
        return entry.kind != DIR and entry.node is None and entry.sf is not None \
            and entry.sf.rec.committed is None and not entry.sf.rec.replaces

    def _refuse(self, what: str, path: str | None, change: bool = True) -> None:
        """Raise unless ``what`` may be done to ``path``: ``change`` for an existing node
        (needs full access unless the file is only staged here), else adding one (read/write
        suffices)."""
        root, level = self._share(path)
        if root is None:
            return
        if level == READ_ONLY:
            log.info("%s %s refused: folders shared with this account are read-only (a "
                     "read-only share, or the shared folders themselves)", what, path)
            raise FsError(errno.EROFS, "folders shared with this account are read-only")
        if level == READ_WRITE and change and not (path and self._uncommitted(path)):
            log.info("%s %s refused: the folder is shared with this account read/write, which "
                     "adds files and folders; changing, renaming or removing them needs full "
                     "access", what, path)
            raise FsError(errno.EACCES, "a read/write share adds only; changes need full "
                                        "access")

    def _refuse_link(self, path: str) -> None:
        root, level = self._share(path)
        if root is None:
            return
        log.info("link of %s refused: links of shared nodes are their owner's to make", path)
        if level == READ_ONLY:
            raise FsError(errno.EROFS, "folders shared with this account are read-only")
        raise FsError(errno.EPERM, "links of shared nodes are their owner's to make")

    # --- attributes: no write bits in read-only shares --------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        st = super().getattr(path, fh)
        if in_shares(path):
            assert path is not None
            parts = split(path)
            if len(parts) < 2 or self._root_named(parts[1])[1] == READ_ONLY:
                st["st_mode"] &= ~0o222
        return st

    def readdir_attrs(self, path: str | None, fh: int | None = None
                      ) -> list[tuple[str, dict[str, int]]]:
        out = super().readdir_attrs(path, fh)
        incoming = self.core.tree.incoming
        if incoming is None or not incoming.shares:
            return out
        folder = self.core.folder_of(path, fh)
        if folder == SHARED:
            listing = self.ns.listing(SHARED)
            for name, st in out:
                entry = listing.get(name)
                if entry is None or entry.node is None \
                        or self._level(entry.node.handle) == READ_ONLY:
                    st["st_mode"] &= ~0o222
            return out
        root = self._root_of(folder)
        if root is not None and self._level(root) == READ_ONLY:
            for _name, st in out:
                st["st_mode"] &= ~0o222
        return out

    # --- writes -----------------------------------------------------------------------------
    def create(self, path: str, flags: int = os.O_WRONLY, mode: int | None = None) -> int:
        exists = self._exists(path)
        self._refuse("create", path, change=exists)
        fh = super().create(path, flags, mode)
        if in_shares(path) and not exists:
            sf = self.ns.resolve(path).sf
            if sf is not None:
                _no_link(sf)
        return fh

    def _exists(self, path: str) -> bool:
        try:
            self.ns.resolve(path)
            return True
        except FsError:
            return False

    def open(self, path: str, flags: int) -> int:
        if self._virtual(path) is not None:
            self._refuse_link(path)
        elif flags & WRITE_FLAGS:
            self._refuse("open for writing", path)
        return super().open(path, flags)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if not fh:
            self._refuse("truncate", path)
        super().truncate(path, length, fh)

    def utimens(self, path: str | None, mtime_ns: int | None, fh: int | None = None) -> None:
        self._refuse("utimens", path)
        super().utimens(path, mtime_ns, fh)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        self._refuse("chmod", path)
        super().chmod(path, mode, fh)

    def mkdir(self, path: str, mode: int | None = None) -> None:
        self._refuse("mkdir", path, change=False)
        super().mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        self._refuse("rmdir", path)
        super().rmdir(path)

    def symlink(self, path: str, target: str) -> None:
        self._refuse("symlink", path, change=False)
        if not in_shares(path):
            super().symlink(path, target)
            return
        if self._virtual(path) is not None:
            raise FsError(errno.EEXIST, "the name is a file's .link")
        self.core.symlink(path, target, on_create=_no_link)

    def unlink(self, path: str) -> None:
        if self._virtual(path) is not None:
            self._refuse_link(path)
        self._refuse("unlink", path)
        super().unlink(path)

    def rename(self, old: str, new: str) -> None:
        (src, _), (dst, dst_level) = self._share(old), self._share(new)
        self._refuse("rename", old)          # a move takes the node away from where it is
        if src != dst or dst == "":
            if dst is not None and dst_level == READ_ONLY:
                self._refuse("rename", new)
            log.info("rename %s -> %s: across a share boundary (EXDEV: copied and deleted "
                     "instead)", old, new)
            raise FsError(errno.EXDEV, "MEGA moves no node across a share boundary")
        if self._exists(new):
            self._refuse("rename over", new)
        super().rename(old, new)

    def getxattr(self, path: str, name: str) -> bytes:
        if name == XA_LINK:
            self._refuse_link(path)
        return super().getxattr(path, name)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        self._refuse("setxattr", path)
        super().setxattr(path, name, value, flags)

    def removexattr(self, path: str, name: str) -> None:
        self._refuse("removexattr", path)
        super().removexattr(path, name)
