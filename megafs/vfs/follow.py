"""Other clients' changes to files the mount has staged files for.

``WriteBack.on_remote_change`` lands here: a file whose place was not chosen on this mount
follows its node (moved, renamed, touched by another client), or leaves the namespace when the
node was removed and nothing was written here; a file with local state whose folder another
client removed is kept in ``/megafs-recovered`` (never an orphan in the Rubbish Bin), with a
WARNING.  Runs on the committer's thread, taking the namespace lock.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..errors import MegafsError, describe
from ..tree.names import base_display_name
from ..tree.tree import Tree
from ..writeback.queue import WriteBack
from ..writeback.staged import StagedFile
from .namespace import DIR, Namespace

log = logging.getLogger(__name__)

RECOVERY_FOLDER = "megafs-recovered"   # files whose folder another client removed


class RemoteChanges:
    """See the module docstring; ``mkdir(path)`` makes a folder (the core's)."""

    def __init__(self, ns: Namespace, wb: WriteBack, tree: Tree,
                 mkdir: Callable[[str], None]) -> None:
        self.ns = ns
        self.wb = wb
        self.tree = tree
        self.mkdir = mkdir

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
                    sf.followed(node.mtime_ns)
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
        sf.retry()
        self.wb.save(sf)
        log.warning("the folder of %s was removed by another client; the file is kept as "
                    "/%s/%s", old, RECOVERY_FOLDER, name)
