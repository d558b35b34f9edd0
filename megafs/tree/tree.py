"""The decrypted node tree of one account: indexes by handle and by parent, display names,
updates from ``sc`` action packets.

What it must not do: network I/O, FUSE, or logging of keys.  Thread safety: every public method
takes ``self.lock`` (an RLock), so callers may use the tree from any thread; callers that need
several calls to be atomic hold ``tree.lock`` themselves.  Name maps handed out are snapshots
(replaced on change, never mutated).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Iterable

from ..api.sharekeys import share_keys_from
from ..errors import ProtocolError
from .names import base_display_name, display_names
from .inshares import SHARED, SHARED_NAME, Incoming, place_share_root
from .nodes import FILE, FOLDER, INBOX, ROOT, RUBBISH, Node, decrypt_node, own_copy  # noqa: F401
from .shares import ShareKeys, sharees_from
from . import walks

log = logging.getLogger(__name__)

REMOVED_KEPT = 100_000
PROGRESS_STEP = 50_000          # nodes between progress calls of ``load``


class Tree:
    """Decrypted nodes of one account, indexed by handle and by parent."""

    def __init__(self, master_key: bytes, user_handle: str) -> None:
        self.master_key = master_key
        self.user_handle = user_handle
        self.lock = threading.RLock()
        self._nodes: dict[str, Node] = {}
        self._kids: dict[str, set[str]] = {}
        # parent -> display name -> node, and parent -> handle -> display name; computed on
        # first use after a change in that folder (a 10,000-entry folder takes ~30 ms), never
        # mutated once built, so readers may iterate a returned map without the lock.
        self._names: dict[str, dict[str, Node]] = {}
        self._rnames: dict[str, dict[str, str]] = {}
        self._dups: dict[str, set[str]] = {}    # parent -> base names shared by several nodes
        self.root = ""
        self.rubbish = ""
        # upload id (the ``mfs`` attribute megafs puts on the nodes it commits) -> handles;
        # two nodes with one id are the same commit applied twice (see ``same_upload``)
        self._uploads: dict[str, set[str]] = {}
        # handles removed from the tree, most recent last (bounded): our own change feed
        # packets that would bring one back are stale (``was_removed``)
        self._removed: OrderedDict[str, None] = OrderedDict()
        self._cycles: set[str] = set()     # nodes left out for a cycle (each logged once)
        self.shares = ShareKeys()          # the account's share keys (``shares.py``)
        self.incoming: Incoming | None = None   # a full account's incoming shares (inshares.py)

    # --- loading ----------------------------------------------------------------------------
    def load(self, raw_nodes: Iterable[Any], public: dict[str, str] | None = None,
             progress: Callable[[int], None] | None = None, ok: Any = None,
             shares: Any = None, users: Any = None) -> None:
        """Replace the tree with an ``f`` listing's nodes (decrypting each), ``progress(n)``
        every ``PROGRESS_STEP`` nodes.  ``ok``, ``shares``, ``users``: its share keys (those
        ``ha`` does not authenticate left out), sharees and ``u`` (owners of incoming shares)."""
        with self.lock:
            self._clear()
            if ok is not None:
                self.shares.replace(share_keys_from(ok, self.master_key), sharees_from(shares))
            if self.incoming is not None:
                raw_nodes = self.incoming.scan(list(raw_nodes), users)
            for i, raw in enumerate(raw_nodes, 1):
                self._add(raw)
                if progress is not None and i % PROGRESS_STEP == 0:
                    progress(i)
            for handle, ph in (public or {}).items():
                node = self._nodes.get(handle)
                if node is not None and isinstance(ph, str):
                    node.public = own_copy(ph)
            if not self.root:
                raise ProtocolError("the node listing has no Cloud Drive root")
            shared_folder(self)

    def _clear(self) -> None:
        self._nodes.clear()
        self._kids.clear()
        self._names.clear()
        self._rnames.clear()
        self._dups.clear()
        self._uploads.clear()

    def restore(self, nodes: Iterable[Node]) -> None:
        """Replace the tree with already decrypted nodes (the state cache); no crypto."""
        with self.lock:
            self._clear()
            kids = self._kids
            table = self._nodes
            for node in nodes:
                table[node.handle] = node
                siblings = kids.get(node.parent)
                if siblings is None:
                    kids[node.parent] = {node.handle}
                else:
                    siblings.add(node.handle)
                if node.type == FILE:
                    self._track_upload(node, True)
                elif node.type == ROOT:
                    self.root = node.handle
                elif node.type == RUBBISH:
                    self.rubbish = node.handle
            if not self.root:
                raise ProtocolError("the cached tree has no Cloud Drive root")

    def nodes(self) -> list[Node]:
        """Every node (a copy of the list; the nodes themselves are shared)."""
        with self.lock:
            return list(self._nodes.values())

    def _add(self, raw: Any) -> Node | None:
        incoming = self.incoming
        keys = self.shares.with_incoming(incoming.keys if incoming is not None else None)
        try:
            node = decrypt_node(raw, self.master_key, self.user_handle, keys)
        except ProtocolError as exc:
            log.warning("ignoring a malformed node from the server: %s", exc)
            return None
        if isinstance(raw, dict) and "su" in raw and not place_share_root(incoming, node):
            return None
        if walks.refuse_cycle(self._cycles, self._nodes, self._kids, node.handle, node.parent):
            return None
        old = self._nodes.get(node.handle)
        if old is not None:
            self._unlink(old)
            self._track_upload(old, False)
            if old.public and not node.public:
                node.public = old.public
        self._nodes[node.handle] = node
        self._track_upload(node, True)
        self._kids.setdefault(node.parent, set()).add(node.handle)
        self._names_insert(node)
        if node.type == ROOT:
            self.root = node.handle
        elif node.type == RUBBISH:
            self.rubbish = node.handle
        return node

    def _track_upload(self, node: Node, present: bool) -> None:
        mfs = node.attrs.get("mfs") if node.attrs else None
        if not isinstance(mfs, str):
            return
        if present:
            self._uploads.setdefault(mfs, set()).add(node.handle)
            return
        handles = self._uploads.get(mfs)
        if handles is not None:
            handles.discard(node.handle)
            if not handles:
                del self._uploads[mfs]

    def same_upload(self, handle: str) -> list[Node]:
        """Other nodes carrying the same upload id (``mfs``) as ``handle``: repeats of one
        commit, e.g. a ``p`` from before a crash that the server applied late."""
        with self.lock:
            node = self._nodes.get(handle)
            mfs = node.attrs.get("mfs") if node is not None and node.attrs else None
            if not isinstance(mfs, str):
                return []
            return [self._nodes[h] for h in self._uploads.get(mfs, ()) if h != handle]

    def _unlink(self, node: Node) -> None:
        siblings = self._kids.get(node.parent)
        if siblings is not None:
            siblings.discard(node.handle)
        self._names_remove(node)

    def _forget_names(self, parent: str) -> None:
        self._names.pop(parent, None)
        self._rnames.pop(parent, None)
        self._dups.pop(parent, None)

    # A folder's name maps are updated in place of a full recompute when no duplicate names
    # are involved: our own uploads add nodes one batch at a time, and recomputing the names of
    # a 1,000-file folder per added node made copying many small files quadratic.  The maps
    # are replaced (copy on write), never mutated, so a map handed out stays a snapshot.
    def _names_insert(self, node: Node) -> None:
        names = self._names.get(node.parent)
        if names is None:
            return
        base = base_display_name(node)
        if base in names or self._dups.get(node.parent):
            self._forget_names(node.parent)   # duplicates: the policy decides, recompute
            return
        fresh = dict(names)
        fresh[base] = node
        rnames = dict(self._rnames[node.parent])
        rnames[node.handle] = base
        self._names[node.parent], self._rnames[node.parent] = fresh, rnames

    def _names_remove(self, node: Node) -> None:
        names = self._names.get(node.parent)
        if names is None:
            return
        rnames = self._rnames[node.parent]
        shown = rnames.get(node.handle)
        base = base_display_name(node)
        if shown is None or shown != base or self._dups.get(node.parent):
            self._forget_names(node.parent)
            return
        fresh = dict(names)
        del fresh[shown]
        fresh_r = dict(rnames)
        del fresh_r[node.handle]
        self._names[node.parent], self._rnames[node.parent] = fresh, fresh_r

    # --- queries ----------------------------------------------------------------------------
    def get(self, handle: str) -> Node | None:
        with self.lock:
            return self._nodes.get(handle)

    def __len__(self) -> int:
        with self.lock:
            return len(self._nodes)

    def children(self, handle: str) -> dict[str, Node]:
        """Display name -> node for the children of folder ``handle`` (a copy)."""
        return dict(self.children_view(handle))

    def children_view(self, handle: str) -> dict[str, Node]:
        """Like ``children`` but the cached map itself (no copy): read it, never change it.
        A change in the folder replaces the map, so the one returned here is a snapshot."""
        with self.lock:
            names = self._names.get(handle)
            if names is None:
                names, dups = display_names(self._nodes[h] for h in self._kids.get(handle, ()))
                self._names[handle] = names
                self._rnames[handle] = {n.handle: name for name, n in names.items()}
                self._dups[handle] = dups
            return names

    def child(self, handle: str, name: str) -> Node | None:
        """The child of folder ``handle`` shown as ``name`` (O(1) once the folder's names are
        computed; path lookups must not copy a 10,000-entry map per component)."""
        return self.children_view(handle).get(name)

    def dup_names(self, handle: str) -> set[str]:
        """The base names several children of folder ``handle`` share (read, never change)."""
        with self.lock:
            self.children_view(handle)
            return self._dups.get(handle, set())

    def name_of(self, handle: str) -> str | None:
        with self.lock:
            node = self._nodes.get(handle)
            if node is None:
                return None
            if node.type in (ROOT, INBOX, RUBBISH):
                return ""
            self.children_view(node.parent)
            return self._rnames[node.parent].get(handle)

    def path_of(self, handle: str) -> str | None:
        with self.lock:
            parts = walks.path_names(self._nodes, handle, self.root, self.name_of)
            return None if parts is None else "/" + "/".join(parts)

    def subtree(self, handle: str) -> list[str]:
        """``handle`` and every handle below it (each once, even if the tree had a cycle)."""
        with self.lock:
            return walks.subtree(self._kids, handle)

    # --- changes ----------------------------------------------------------------------------
    def add_raw(self, raw: dict) -> Node | None:
        with self.lock:
            return self._add(raw)

    def remove(self, handle: str) -> set[str]:
        """Remove a node and its subtree; return the affected parent handles."""
        with self.lock:
            node = self._nodes.get(handle)
            if node is None:
                return set()
            affected = {node.parent}
            handles = self.subtree(handle)
            self.shares.forget(handles)            # a removed folder shares nothing
            for h in handles:
                gone = self._nodes.pop(h, None)
                if gone is not None:
                    self._unlink(gone)
                    self._track_upload(gone, False)
                    self._removed[h] = None
                    if len(self._removed) > REMOVED_KEPT:
                        self._removed.popitem(last=False)
                self._kids.pop(h, None)
                self._forget_names(h)
            return affected

    def was_removed(self, handle: str) -> bool:
        """Whether ``handle`` was in the tree and removed (among the last 100,000 removals)."""
        with self.lock:
            return handle in self._removed

    def set_attrs(self, handle: str, attrs: dict[str, Any]) -> None:
        with self.lock:
            node = self._nodes.get(handle)
            if node is None:
                return
            self._names_remove(node)
            self._track_upload(node, False)
            node.set_attrs(dict(attrs))
            self._track_upload(node, True)
            name = attrs.get("n")
            node.name = name if isinstance(name, str) else node.name
            self._names_insert(node)

    def move(self, handle: str, parent: str) -> None:
        with self.lock:
            node = self._nodes.get(handle)
            if node is None:
                return
            if walks.refuse_cycle(self._cycles, self._nodes, self._kids, handle, parent):
                return
            self._unlink(node)
            node.parent = parent
            self._kids.setdefault(parent, set()).add(handle)
            self._names_insert(node)

    def set_public(self, handle: str, ph: str | None) -> None:
        with self.lock:
            node = self._nodes.get(handle)
            if node is not None:
                node.public = ph


def lookup(tree: Tree, path: str) -> Node | None:
    """The node at an absolute mount path ('/' is the Cloud Drive root), by display names."""
    with tree.lock:
        node = tree.get(tree.root)
        for part in (p for p in path.split("/") if p):
            if node is None or not node.is_dir:
                return None
            node = tree.child(node.handle, part)
        return node


def is_inside(tree: Tree, handle: str, folder: str) -> bool:
    """Whether ``handle`` is ``folder`` or somewhere below it (a cycle-safe walk up)."""
    with tree.lock:
        return walks.is_inside(tree._nodes, handle, folder)


def shared_folder(tree: Tree) -> set[str]:
    """Show the folder of incoming shares (``tree/inshares.py``) while there is a share, else
    drop it; returns the folders whose listing changed."""
    with tree.lock:
        present = SHARED in tree._nodes
        wanted = bool(tree.incoming and tree.incoming.shares) and bool(tree.root)
        if wanted and not present:
            node = Node(SHARED, tree.root, FOLDER, SHARED_NAME)
            tree._nodes[SHARED] = node
            tree._kids.setdefault(tree.root, set()).add(SHARED)
            tree._names_insert(node)
            return {tree.root}
        if present and not wanted:
            return tree.remove(SHARED)
        return set()
