"""Modes and user xattrs of files and folders (issue 22), kept in the nodes' encrypted
attributes (``mfs-mode``, ``mfs-x``: see ``tree/meta.py`` for the format and why).

Files are local first, as for renames and touches: ``chmod``, ``setxattr`` and
``removexattr`` change the file's record (``Record.own_attrs``, durable before the call
returns) and the committer sends them with the upload or, for a file already on MEGA, as one
``a`` (FIX).  A new version of a file carries its old version's mode and xattrs.  Folders are
remote first: the folder's ``a`` is sent before the call returns.  The mount root has no
attributes on MEGA (it is the account's root or a folder megafs does not own): its mode and
xattrs live in memory until unmount, said in the log.

``chown`` is accepted and not stored (every file is owned by the mounting user).  Names
outside ``user.*`` answer ENOTSUP; megafs's own ``user.mega.*`` (and reserved
``user.megafs.*``) names are read-only and never stored here.  Errors are ``FsError`` with
the errno the caller sees and a reason.
"""
from __future__ import annotations

import errno
import logging
import stat
import os
from typing import TYPE_CHECKING, Any

from ..errors import FsError
from ..tree import remote
from ..tree.meta import (DIR_MODE, FILE_MODE, KEPT_BITS, LINK_ATTR, MODE_ATTR, XATTR_ATTR,
                         XATTR_LIMIT, carried, is_link, mode_of, mode_value, xattrs_of,
                         xattrs_size, xattrs_value)
from ..tree.nodes import ROOT, Node
from ..writeback import record as R
from ..writeback.staged import StagedFile
from .handles import DirHandle, FileHandle
from .namespace import DIR, Entry

if TYPE_CHECKING:
    from .core import FileSystem

log = logging.getLogger(__name__)

OWN_PREFIXES = ("user.mega.", "user.megafs.")


def stored_name(name: str) -> bool:
    """Whether ``name`` is a user xattr megafs stores (``user.*`` but not its own)."""
    return name.startswith("user.") and not name.startswith(OWN_PREFIXES) and len(name) > 5


class Metadata:
    """Modes and user xattrs for ``FileSystem`` (its ``meta``)."""

    def __init__(self, core: "FileSystem") -> None:
        self.core = core
        self.root_mode = DIR_MODE
        self.root_xattrs: dict[str, bytes] = {}

    # --- what is shown ----------------------------------------------------------------------
    def _is_root(self, node: Node) -> bool:
        return node.handle == self.core.tree.root or node.type == ROOT

    def file_attrs(self, sf: StagedFile) -> dict[str, Any]:
        """The metadata attributes a staged file shows: its committed node's, overlaid with
        those chosen here (call under ``wb.lock`` or accept a momentary mix)."""
        node = self.core.tree.get(sf.rec.committed) if sf.rec.committed else None
        return {**carried(node.attrs if node is not None else None), **sf.rec.own_attrs}

    def mode(self, entry: Entry) -> int:
        """Permission bits of an entry (no file type bits)."""
        if entry.kind == DIR:
            node = entry.folder
            return self.root_mode if self._is_root(node) else mode_of(node.attrs, DIR_MODE)
        if entry.sf is not None:
            with self.core.wb.lock:
                return self.file_mode(entry.sf)
        assert entry.node is not None
        return mode_of(entry.node.attrs, FILE_MODE)

    def file_mode(self, sf: StagedFile) -> int:
        """Permission bits of a staged file (call under ``wb.lock``)."""
        return mode_of(self.file_attrs(sf), FILE_MODE)

    def file_type(self, entry: Entry) -> int:
        """``S_IFLNK`` for a symbolic link (``mfs-lnk``), else ``S_IFREG`` (files only)."""
        if entry.sf is not None:
            with self.core.wb.lock:
                return self.staged_type(entry.sf)
        return stat.S_IFLNK if entry.node is not None and is_link(entry.node.attrs) \
            else stat.S_IFREG

    def staged_type(self, sf: StagedFile) -> int:
        """``file_type`` of a staged file (call under ``wb.lock``)."""
        return stat.S_IFLNK if is_link(self.file_attrs(sf)) else stat.S_IFREG

    def mark_link(self, sf: StagedFile) -> None:
        """Make a new file a symbolic link (its content is the target); durable on return."""
        self._change_file(sf, lambda _old: {LINK_ATTR: "1", MODE_ATTR: "777"})

    def xattrs(self, entry: Entry) -> dict[str, bytes]:
        """The user xattrs of an entry (name -> value)."""
        if entry.kind == DIR:
            node = entry.folder
            return dict(self.root_xattrs) if self._is_root(node) else xattrs_of(node.attrs)
        if entry.sf is not None:
            with self.core.wb.lock:
                return xattrs_of(self.file_attrs(entry.sf))
        assert entry.node is not None
        return xattrs_of(entry.node.attrs)

    # --- changes ----------------------------------------------------------------------------
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> None:
        """Store the permission bits ``mode & KEPT_BITS`` of ``path`` or of the open file or
        folder ``fh`` (``fchmod``: libfuse then gives no path).  setuid/setgid are dropped,
        with a log line."""
        if mode & ~KEPT_BITS & 0o7777:
            log.info("chmod %o of %s: setuid/setgid bits are not kept (stored as %o)",
                     mode & 0o7777, path or "an open file", mode & KEPT_BITS)
        self._change(path, lambda _old: {MODE_ATTR: mode_value(mode)}, "mode", fh)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        """Store user xattr ``name``; ``flags``: ``XATTR_CREATE`` (EEXIST if it exists) or
        ``XATTR_REPLACE`` (ENODATA if not).  E2BIG for one value over ``XATTR_LIMIT``,
        ENOSPC when the file's xattrs together would exceed it."""
        if len(value) + len(name.encode()) > XATTR_LIMIT:
            log.warning("setxattr %s on %s refused: %d bytes, more than megafs keeps per file "
                        "(%d)", name, path, len(value), XATTR_LIMIT)
            raise FsError(errno.E2BIG, "an attribute value of more than %d bytes"
                          % XATTR_LIMIT)

        def update(old: dict[str, bytes]) -> dict[str, Any]:
            if flags & os.XATTR_CREATE and name in old:
                raise FsError(errno.EEXIST, "the attribute exists")
            if flags & os.XATTR_REPLACE and name not in old:
                raise FsError(errno.ENODATA, "no such attribute")
            new = dict(old)
            new[name] = bytes(value)
            if xattrs_size(new) > XATTR_LIMIT:
                log.warning("setxattr %s on %s refused: the file's user attributes would take "
                            "%d bytes, more than megafs keeps per file (%d)",
                            name, path, xattrs_size(new), XATTR_LIMIT)
                raise FsError(errno.ENOSPC, "the file's attributes would exceed %d bytes"
                              % XATTR_LIMIT)
            return {XATTR_ATTR: new}

        self._change(path, update, "xattr")

    def removexattr(self, path: str, name: str) -> None:
        """Remove user xattr ``name`` (ENODATA if the entry has none by that name)."""
        def update(old: dict[str, bytes]) -> dict[str, Any]:
            if name not in old:
                raise FsError(errno.ENODATA, "no such attribute")
            new = dict(old)
            del new[name]
            return {XATTR_ATTR: new}

        self._change(path, update, "xattr")

    def _change(self, path: str | None, update: Any, what: str, fh: int | None = None
                ) -> None:
        """Apply ``update`` (current xattrs -> attributes to set; may raise FsError) to the
        entry at ``path`` (or open as ``fh``).  An ``XATTR_ATTR`` value is a dict here,
        encoded on the way."""
        core = self.core
        handle = core.handles.get(fh) if fh else None
        if isinstance(handle, FileHandle):
            self._change_file(handle.sf, update)
            return
        if isinstance(handle, DirHandle):
            folder = core.tree.get(handle.folder)
            if folder is None:
                raise FsError(errno.ENOENT, "the folder was removed")
            path = core.tree.path_of(folder.handle)
        if path is None:
            raise FsError(errno.EBADF, "no path and no open file")

        def encoded(attrs: dict[str, Any]) -> dict[str, Any]:
            if isinstance(attrs.get(XATTR_ATTR), dict):
                attrs = dict(attrs)
                attrs[XATTR_ATTR] = xattrs_value(attrs[XATTR_ATTR])
            return attrs

        with core.ns.lock:
            entry = core.ns.resolve(path)
            if entry.kind == DIR:
                node = entry.folder
                if self._is_root(node):
                    attrs = update(dict(self.root_xattrs))
                    if MODE_ATTR in attrs:
                        self.root_mode = mode_of(attrs, DIR_MODE)
                    if XATTR_ATTR in attrs:
                        self.root_xattrs = attrs[XATTR_ATTR]
                    log.info("the mount root's %s is kept in memory until unmount (MEGA keeps "
                             "no attributes for it)", what)
                    return
                if node.key is None:
                    raise FsError(errno.EPERM, "the folder cannot be decrypted")
                new = dict(node.attrs)
                new.update(encoded(update(xattrs_of(node.attrs))))
                remote.set_attrs(core.client, core.tree, node.handle, node.key, new)
                return
            sf = core.ns.staged_for(entry)
        self._change_file(sf, update)

    def _change_file(self, sf: StagedFile, update: Any) -> None:
        def encoded(attrs: dict[str, Any]) -> dict[str, Any]:
            if isinstance(attrs.get(XATTR_ATTR), dict):
                attrs = dict(attrs)
                attrs[XATTR_ATTR] = xattrs_value(attrs[XATTR_ATTR])
            return attrs

        def transition(rec: R.Record) -> R.Record:
            # under wb.lock: the current xattrs, then the record with the change
            return R.with_attrs(rec, encoded(update(xattrs_of(self.file_attrs(sf)))))

        self.core.wb.change(sf, transition)
