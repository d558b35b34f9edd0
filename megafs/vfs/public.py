"""What the ``.link`` layer needs beyond POSIX: a file's link wish, its public handle (exported
when missing), revoking it, a folder's link (exported when missing) and revoking it, and the
queue's status rows and retry for the control xattrs.

The one place above the tree that exports and revokes (through ``tree/remote.py``), and the
only part of the ``.link`` layer that sees the client, the node tree or the write-back queue.
The wish itself is the record's (``Record.link_wanted``): the committer plans an export only
while it is set, so a revoked link stays revoked until it is asked for again.  A folder has
no record: its link wish is MEGA's own state (the folder is exported iff it has a public handle
and a share key, as ``f``, the change feed and the tree cache tell; ``tree/shares.py``).
"""
from __future__ import annotations

import errno
import logging
from typing import Any, Callable

from ..api.interface import MegaApi
from ..errors import FsError
from ..tree import remote
from ..tree.nodes import Node
from ..tree.tree import Tree
from ..writeback.queue import WriteBack
from ..writeback.record import link_wish
from ..writeback.staged import StagedFile

log = logging.getLogger(__name__)


class PublicLinks:
    """See the module docstring.  ``path_of(file)``: a staged file's mount path now."""

    def __init__(self, client: MegaApi, tree: Tree, wb: WriteBack,
                 path_of: Callable[[StagedFile], str]) -> None:
        self.client = client
        self.tree = tree
        self.wb = wb
        self.path_of = path_of

    def is_root(self, handle: str) -> bool:
        """Whether folder ``handle`` is the mount root (it carries the control xattrs)."""
        return handle == self.tree.root

    def wish(self, sf: StagedFile | None, wanted: bool) -> None:
        """The user asked for the file's link (``wanted``) or revoked it; durable when this
        returns.  A file without local state keeps the wish its node shows."""
        if sf is not None:
            self.wb.change(sf, lambda rec: link_wish(rec, wanted))

    def public_handle(self, node: Node) -> str:
        """``node``'s public handle, exporting it (``l``) if it has none.  MegaError as the
        server refused it."""
        if node.public:
            return node.public
        ph = remote.export(self.client, self.tree, [node.handle])[0]
        if isinstance(ph, BaseException):
            raise ph
        if ph is None:             # only with a ``keep`` callback; none is given here
            raise FsError(errno.EIO, "the link of node %s was not kept" % node.handle)
        return ph

    def revoke(self, node: Node) -> None:
        """Remove ``node``'s public link (``l`` with ``d:1``); nothing if it has none."""
        if not node.public:
            return
        remote.unexport(self.client, self.tree, node.handle)
        log.info("revoked the public link of node %s", node.handle)

    def folder_link(self, folder: Node) -> tuple[str, bytes]:
        """Folder ``folder``'s (public handle, share key), exporting it if it has no link
        (``remote.export_folder``).  MegaError as the server refused it."""
        had = folder.public
        public, key = remote.export_folder(self.client, self.tree, folder.handle)
        if public != had:
            log.info("exported folder %s as a folder link", folder.handle)
        return public, key

    def revoke_folder(self, folder: Node) -> None:
        """Remove folder ``folder``'s link and its share with ``EXP``; nothing if it has
        none."""
        if not folder.public and self.tree.shares.get(folder.handle) is None:
            return
        remote.unexport_folder(self.client, self.tree, folder.handle)
        log.info("revoked the folder link of folder %s", folder.handle)

    def status(self) -> list[dict[str, Any]]:
        """``megafs status`` rows of unfinished files, paths as they are now."""
        return self.wb.control.snapshot(self.path_of)

    def retry_failed(self) -> int:
        """``megafs retry``: failed files are tried again now; returns how many."""
        return self.wb.control.retry_failed()

    def quota_wait(self) -> float:
        """Seconds reads still wait for MEGA's transfer quota (0: none)."""
        return float(self.client.transfer_quota.left())
