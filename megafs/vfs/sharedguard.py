"""An account's mount with its incoming shares read-only (issue 25): ``LinkLayer`` with every
write under ``/Shared with me`` (``tree/inshares.py``) refused with EROFS and one log line.

Folders shared with this account show under ``/Shared with me/OWNER - FOLDER/`` and read like
any other folder (the nodes' keys come from the share key).  Writing into them is refused for
every share, also read/write ones (level 1 or 2): a write there would need the ``cr`` keys of
the share and the owner's folder as target, which the write-back queue does not send yet.
Links of shared nodes (``X.link``, ``user.mega.link``) are the owner's to make: refused too.
"""
from __future__ import annotations

import errno
import logging
import os

from ..errors import FsError
from ..tree.inshares import SHARED_NAME
from .links import LinkLayer

log = logging.getLogger(__name__)

PREFIX = "/" + SHARED_NAME
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def in_shares(path: str | None) -> bool:
    """Whether a mount path is the folder of incoming shares or inside it."""
    return path is not None and (path == PREFIX or path.startswith(PREFIX + "/"))


class SharedLinkLayer(LinkLayer):
    """``LinkLayer`` whose writes under ``PREFIX`` answer EROFS."""

    def _refuse(self, what: str, *paths: str | None) -> None:
        if any(in_shares(p) for p in paths):
            log.info("%s %s refused: folders shared with this account are read-only here",
                     what, next(p for p in paths if in_shares(p)))
            raise FsError(errno.EROFS, "folders shared with this account are read-only")

    def create(self, path: str, flags: int = os.O_WRONLY, mode: int | None = None) -> int:
        self._refuse("create", path)
        return super().create(path, flags, mode)

    def open(self, path: str, flags: int) -> int:
        if flags & WRITE_FLAGS or path.endswith(".link"):
            self._refuse("open for writing" if flags & WRITE_FLAGS else "link", path)
        return super().open(path, flags)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self._refuse("truncate", path)
        super().truncate(path, length, fh)

    def utimens(self, path: str | None, mtime_ns: int | None, fh: int | None = None) -> None:
        self._refuse("utimens", path)
        super().utimens(path, mtime_ns, fh)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        self._refuse("chmod", path)
        super().chmod(path, mode, fh)

    def mkdir(self, path: str, mode: int | None = None) -> None:
        self._refuse("mkdir", path)
        super().mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        self._refuse("rmdir", path)
        super().rmdir(path)

    def symlink(self, path: str, target: str) -> None:
        self._refuse("symlink", path)
        super().symlink(path, target)

    def unlink(self, path: str) -> None:
        self._refuse("unlink", path)
        super().unlink(path)

    def rename(self, old: str, new: str) -> None:
        self._refuse("rename", old, new)
        super().rename(old, new)

    def getxattr(self, path: str, name: str) -> bytes:
        if name == "user.mega.link":
            self._refuse("link", path)
        return super().getxattr(path, name)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        self._refuse("setxattr", path)
        super().setxattr(path, name, value, flags)

    def removexattr(self, path: str, name: str) -> None:
        self._refuse("removexattr", path)
        super().removexattr(path, name)
