"""The namespace: which entry a path names, and the only place that changes that.

A folder's entries are its remote children from the node tree, minus nodes held by a staged
file (``WriteBack.hides``), plus the staged files shown in it (the *overlay*).  A staged file
is shown at its record's ``parent``/``name``; the remote node it came from or committed is
hidden wherever it is, so a name never shows two things and a renamed or removed file never
shows at its old place.  The write-back queue never changes any of this: when a staged file has
nothing left to send and nothing open, the queue offers it back (``retire``) and the namespace
drops it from the overlay in one step under its lock, once the tree shows the committed node
at the same place with the same name (so the name keeps its size, mtime and bytes).

Concurrency contract: ``self.lock`` (an RLock, the *namespace lock*) serialises every change of
the overlay and of a staged file's place: create, open of a remote file for writing (which
gives it a staged file), rename, unlink, mkdir, rmdir, retire; it is held across the network
requests of folder operations.  Lookups take no lock: the overlay maps are replaced, never
mutated, so a reader always sees a consistent snapshot.  A lookup may return a staged file that
is retired a moment later; every later use counts a handle on it with ``WriteBack.opened``
(which refuses a retired file) or re-resolves.  Lock order: ``self.lock`` -> ``WriteBack.lock``
-> ``tree.lock``.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass

from ..errors import FsError
from ..tree.names import base_display_name
from ..tree.nodes import Node
from ..tree.tree import Tree
from ..writeback.queue import WriteBack
from ..writeback.staged import StagedFile
from .foldertimes import FILE_NAME as FOLDER_TIMES, FolderTimes
from .hidden import HIDDEN_NAME, HiddenNames

log = logging.getLogger(__name__)

NAME_MAX = 255
DIR, FILE = "dir", "file"


@dataclass(frozen=True, eq=False)
class Entry:
    """What one path names: a folder node, a remote file node, or a staged file."""

    kind: str                     # DIR | FILE
    parent: str                   # folder handle holding the entry ("" for the root)
    name: str
    node: Node | None = None      # DIR: the folder; FILE without a staged file: the node
    sf: StagedFile | None = None  # FILE with local state

    @property
    def folder(self) -> Node:
        if self.kind != DIR or self.node is None:
            raise FsError(errno.ENOTDIR, "not a folder")
        return self.node


def split(path: str) -> list[str]:
    """Path components; ENAMETOOLONG for a component over 255 bytes, EILSEQ for one that is
    not valid UTF-8 (MEGA stores names as UTF-8 JSON; the kernel's bytes arrive here with
    ``surrogateescape``, so invalid bytes show as lone surrogates)."""
    parts = [p for p in path.split("/") if p]
    for part in parts:
        raw = part.encode("utf-8", "surrogateescape")
        if len(raw) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG, "a name is longer than 255 bytes")
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            raise FsError(errno.EILSEQ, "a name is not valid UTF-8 (MEGA stores UTF-8 names)") \
                from None
    return parts


class Namespace:
    """Path resolution over the tree and the overlay; see the module docstring."""

    def __init__(self, tree: Tree, wb: WriteBack) -> None:
        self.tree = tree
        self.wb = wb
        self.lock = threading.RLock()
        self._overlay: dict[str, dict[str, StagedFile]] = {}
        self.hidden = HiddenNames(self.lock)    # files libfuse hid (vfs/hidden.py)
        # folder handle -> time (ns) an entry in it was last added, removed or renamed here
        # (issue 22; kept in the mount dir across remounts, see ``changed``)
        self.dir_times = FolderTimes(os.path.join(wb.mount_dir, FOLDER_TIMES))

    # --- lookups (lock-free) ----------------------------------------------------------------
    def lookup(self, folder: str, name: str) -> Entry | None:
        """The entry ``name`` in folder ``folder``, or None."""
        shown = self._overlay.get(folder)
        if shown is not None:
            sf = shown.get(name)
            if sf is not None:
                return Entry(FILE, folder, name, sf=sf)
        sf = self.hidden.file(folder, name)
        if sf is not None:
            return Entry(FILE, folder, name, sf=sf)
        node = self.tree.child(folder, name)
        if node is None:
            return None
        if node.type == 0 and self.wb.hides(node):
            # A staged file holds the node.  It is shown before it holds it, so if it was
            # shown under this name after the overlay was read above, it is there now.
            sf = self._overlay.get(folder, {}).get(name)
            if sf is not None:
                return Entry(FILE, folder, name, sf=sf)
            node = self._heir(folder, name)
            if node is None:
                return None
        return Entry(DIR if node.is_dir else FILE, folder, name, node=node)

    def _heir(self, folder: str, name: str) -> Node | None:
        """The node shown as ``name`` when the node that holds that name in the tree is
        hidden (a removed file whose delete is still on its way): the newest visible node of
        the same name, which the tree shows under an alias until the hidden one is gone.  So
        `rm f; mkdir f` always lists the folder as ``f`` (issue 22: 5-6 % of them showed
        ``f (HANDLE)`` when both nodes had the same creation second)."""
        if name not in self.tree.dup_names(folder):
            return None
        visible = [n for n in self.tree.children_view(folder).values()
                   if base_display_name(n) == name and not (n.type == 0 and self.wb.hides(n))]
        return max(visible, key=lambda n: (n.ts, n.handle)) if visible else None

    def listing(self, folder: str) -> dict[str, Entry]:
        """Every entry of a folder by name."""
        out: dict[str, Entry] = {}
        taken: list[str] = []           # names held by hidden nodes
        for name, node in self.tree.children_view(folder).items():
            if node.type == 0 and self.wb.hides(node):
                taken.append(name)
                continue
            out[name] = Entry(DIR if node.is_dir else FILE, folder, name, node=node)
        shown = self._overlay.get(folder, {})
        for name in taken:
            heir = None if name in shown else self._heir(folder, name)
            if heir is not None:
                for alias in [a for a, e in out.items() if e.node is heir]:
                    del out[alias]
                out[name] = Entry(DIR if heir.is_dir else FILE, folder, name, node=heir)
        for name, sf in shown.items():
            out[name] = Entry(FILE, folder, name, sf=sf)
        return out

    def stamp(self, folder: str) -> tuple | None:
        """What ``listing(folder)`` is made of: the tree's name map of the folder and the
        overlay shown in it (None if none), each replaced, never changed, by any change of
        them, so an equal stamp (every part the same object) is an unchanged listing.  For the
        kernel's readdir cache (``fuse/dircache.py``); None for a folder not in the tree."""
        if self.tree.get(folder) is None:
            return None
        return (self.tree.children_view(folder), self._overlay.get(folder))

    def root(self) -> Entry:
        node = self.tree.get(self.tree.root)
        if node is None:
            raise FsError(errno.EIO, "the Cloud Drive root is missing")
        return Entry(DIR, "", "", node=node)

    def resolve(self, path: str) -> Entry:
        """The entry at ``path``: ENOENT, ENOTDIR or ENAMETOOLONG otherwise."""
        entry = self.root()
        for part in split(path):
            if entry.kind != DIR:
                raise FsError(errno.ENOTDIR, "a path component is a file")
            found = self.lookup(entry.folder.handle, part)
            if found is None:
                raise FsError(errno.ENOENT, "no such file or folder")
            entry = found
        return entry

    def resolve_or_origin(self, path: str) -> Entry:
        """``resolve``, except that a hidden name whose file is gone gives the entry of the
        name it was hidden from (``hidden_origin``).  For ``getattr``: libfuse names an inode
        by its path, so the fstat (a GETATTR without the open file) of a reader whose open of
        a replaced file got the name's new content (``FileIO.open``) comes by the hidden name,
        and must see that same file, not ENOENT (issue 22)."""
        try:
            return self.resolve(path)
        except FsError as exc:
            origin = self.hidden_origin(path) if exc.errno == errno.ENOENT else None
            if origin is None:
                raise
            return self.resolve(origin)

    def parent_of(self, path: str) -> tuple[Node, str]:
        """The folder that holds ``path`` and the last name; EBUSY for the mount root."""
        parts = split(path)
        if not parts:
            raise FsError(errno.EBUSY, "the mount root")
        parent = self.resolve("/" + "/".join(parts[:-1]))
        return parent.folder, parts[-1]

    def path_of(self, sf: StagedFile) -> str:
        """The mount path where ``sf`` is shown ("?/name" if its folder is unknown)."""
        folder = self.tree.path_of(sf.rec.parent)
        if folder is None:
            return "?/" + sf.rec.name
        return folder.rstrip("/") + "/" + sf.rec.name

    # --- changes (under self.lock) ----------------------------------------------------------
    def changed(self, *folders: str) -> None:
        """Entries of ``folders`` were added, removed or renamed: their mtime and ctime are
        now.  Kept in the mount's local state (``vfs/foldertimes.py``), not on MEGA: sending
        each change there would cost one ``a`` request per create/unlink/rename (see README,
        Semantics)."""
        now = time.time_ns()
        for folder in folders:
            node = self.tree.get(folder)
            if node is not None:
                self.dir_times.set(folder, now, node.mtime_ns)

    def staged_for(self, entry: Entry) -> StagedFile:
        """The staged file of a file entry, giving a remote file one (shown at its place)."""
        if entry.sf is not None:
            return entry.sf
        assert entry.node is not None and entry.kind == FILE
        with self.lock:
            held = self.wb.holder(entry.node.handle)
            if held is not None and not held.retired:
                return held
            # Shown before it holds (hides) the node, so the name never resolves to nothing.
            sf = self.wb.add(entry.parent, entry.name, node=entry.node, own=False)
            self._show(sf)
            self.wb.own(sf, entry.node.handle)
            return sf

    def add(self, parent: str, name: str, *, node: Node | None = None,
            content: bool = False, mtime_ns: int | None = None) -> StagedFile:
        """A new staged file shown at (parent, name) (call under ``self.lock``)."""
        sf = self.wb.add(parent, name, node=node, content=content, mtime_ns=mtime_ns, own=False)
        self._show(sf)
        if node is not None:
            self.wb.own(sf, node.handle)
        return sf

    def move(self, sf: StagedFile, parent: str, name: str) -> None:
        """Show ``sf`` at a new place (rename; call under ``self.lock``).  Whatever the new
        place showed is replaced in the same step, so it never resolves to nothing."""
        self._relocate(sf, parent, name, chosen=True)

    def follow(self, sf: StagedFile, parent: str, name: str) -> None:
        """Show ``sf`` where another client moved its node (call under ``self.lock``); its
        place stays the node's, not a choice made here."""
        self._relocate(sf, parent, name, chosen=False)

    def unshow(self, sf: StagedFile) -> None:
        """Stop showing ``sf``: its node was removed by another client (call under
        ``self.lock``); open handles keep it until they are released."""
        self._hide(sf)

    def remove(self, sf: StagedFile) -> None:
        """Stop showing ``sf`` (unlink, or replaced by a rename; call under ``self.lock``)."""
        self._hide(sf)
        self.wb.unlink(sf)

    def hide(self, sf: StagedFile, folder: str, name: str) -> None:
        """Remove ``sf`` from the namespace but keep it reachable as the hidden name libfuse
        gave it (call under ``self.lock``)."""
        self.hidden.add(sf, folder, name)
        self.remove(sf)

    def hidden_origin(self, path: str) -> str | None:
        """For a hidden name whose file is gone or going, the path it was hidden from.

        libfuse hides a file replaced by ``rename`` while it is open; a reader whose path walk
        found the old file just before the rename then opens the hidden name, maybe after the
        file's last close removed it.  rename(2) is atomic: that open must get the old or the
        new content, never ENOENT (issue 22), so it opens the name's new content.

        libfuse's rename is two calls: the old file to its hidden name, then the new file to
        the name; a reader in between found neither (3 ENOENT in ~2,500 reads at load 4), so
        an origin still empty is waited for (``HiddenNames.wait_shown``).  None for any other
        path; takes ``self.lock`` only to wait."""
        parts = split(path)
        if not parts or not HIDDEN_NAME.fullmatch(parts[-1]):
            return None
        try:
            folder = self.resolve("/" + "/".join(parts[:-1])) if len(parts) > 1 else self.root()
        except FsError:
            return None
        origin = self.hidden.origin(folder.node.handle if folder.node else "", parts[-1])
        if origin is None:
            return None
        folder_path = self.tree.path_of(origin[0])
        if folder_path is None:
            return None
        self.hidden.wait_shown(lambda: self.lookup(origin[0], origin[1]) is not None, origin[2])
        return folder_path.rstrip("/") + "/" + origin[1]

    def retire(self, sf: StagedFile) -> None:
        """``WriteBack.on_settled``: drop a settled file from the overlay if the tree now
        shows its committed node at the same place under the same name."""
        with self.lock:
            if sf.retired:
                return
            shown = self._overlay.get(sf.rec.parent, {}).get(sf.rec.name)
            if shown is sf and sf.rec.committed:
                node = self.tree.child(sf.rec.parent, sf.rec.name)
                if node is None or node.handle != sf.rec.committed:
                    # e.g. another node shows under the same name: keep presenting ours
                    log.debug("keeping %s: the tree shows another node under its name",
                              sf.rec.name)
                    return
            if self.wb.retire(sf) and not sf.rec.unlinked:
                self._hide(sf)

    def _show(self, sf: StagedFile) -> None:
        if not sf.rec.path:
            # kept in the row: what `megafs status` shows while the mount is not running
            sf.placed(sf.rec.parent, sf.rec.name, chosen=False, path=self.path_of(sf))
        folder = dict(self._overlay.get(sf.rec.parent, {}))
        folder[sf.rec.name] = sf
        self._overlay[sf.rec.parent] = folder
        self.hidden.shown.notify_all()

    def _relocate(self, sf: StagedFile, parent: str, name: str, *, chosen: bool) -> None:
        """Show ``sf`` at (parent, name) instead of its old place: the new place first (one
        replacement, taking over whatever was shown there), then the old one goes.
        ``chosen``: a rename made here (see ``StagedFile.placed``)."""
        old_parent, old_name = sf.rec.parent, sf.rec.name
        folder_path = self.tree.path_of(parent)
        path = ("?" if folder_path is None else folder_path.rstrip("/")) + "/" + name
        if old_parent == parent:
            folder = dict(self._overlay.get(parent, {}))
            if folder.get(old_name) is sf:
                del folder[old_name]
            folder[name] = sf
            sf.placed(parent, name, chosen=chosen, path=path)
            self._overlay[parent] = folder
            self.hidden.shown.notify_all()
            return
        target = dict(self._overlay.get(parent, {}))
        target[name] = sf
        self._overlay[parent] = target
        sf.placed(parent, name, chosen=chosen, path=path)
        self.hidden.shown.notify_all()
        source = self._overlay.get(old_parent)
        if source is not None and source.get(old_name) is sf:
            fresh = dict(source)
            del fresh[old_name]
            if fresh:
                self._overlay[old_parent] = fresh
            else:
                del self._overlay[old_parent]

    def _hide(self, sf: StagedFile) -> None:
        folder = self._overlay.get(sf.rec.parent)
        if folder is None or folder.get(sf.rec.name) is not sf:
            return
        fresh = dict(folder)
        del fresh[sf.rec.name]
        if fresh:
            self._overlay[sf.rec.parent] = fresh
        else:
            del self._overlay[sf.rec.parent]

    def recovered(self, files: list[StagedFile]) -> None:
        """Show the files the queue recovered at mount time (unlinked ones stay hidden)."""
        with self.lock:
            for sf in files:
                if not sf.rec.unlinked:
                    current = self._overlay.get(sf.rec.parent, {}).get(sf.rec.name)
                    if current is not None and current is not sf:
                        log.warning("two queued files claim %s; keeping both, the later one is"
                                    " shown", self.path_of(sf))
                    self._show(sf)
