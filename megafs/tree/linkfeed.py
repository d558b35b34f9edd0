"""The node tree of a public folder link (issue 25 item 4) and the thread that follows the
owner's changes to it.

A folder link is read with the share key where an account uses its master key and the link's
root folder handle where an account uses its user handle: every key entry of a node inside is
``ROOT:KEY`` under the share key (meganz/sdk src/node.cpp ``applykey``: in a folder link
``me`` is the root handle).  So the account's ``Tree`` and its packet code
(``tree/packets.py``) serve the link unchanged: ``link_tree`` builds it from the checked
listing (``api/publicfolder.py``) with the exported folder as its root, and ``LinkWatcher``
long-polls the link session's ``sc`` (packets checked by ``PublicFolder.poll``), applies
them and tells the kernel which paths changed.  A link the owner revoked (``-9``) is one
WARNING line; the tree is then emptied (the folder is gone for this reader) and
``on_gone`` is called.  Falling behind (``-6``) lists the link again.  No FUSE, no keys logged.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from ..api.publicfolder import FILE, Listing, PublicFolder
from ..errors import ApiCode, MegaError, MegafsError, describe
from .nodes import ROOT, Node
from .packets import apply as apply_packet, paths_touched
from .tree import Tree

log = logging.getLogger(__name__)


def link_tree(listing: Listing, share_key: bytes) -> Tree:
    """A ``Tree`` of a folder link's checked listing; its root (``tree.root``) is the exported
    folder, shown as the mount's root."""
    tree = Tree(share_key, listing.root)
    tree.restore(_nodes(listing))
    return tree


def _nodes(listing: Listing) -> list[Node]:
    out = []
    for entry in listing.entries.values():
        root = entry.handle == listing.root
        node = Node(entry.handle, "" if root else entry.parent, ROOT if root else entry.type,
                    entry.name, size=entry.size if entry.type == FILE else 0, ts=entry.ts,
                    key=entry.key, ok=entry.ok)
        node.set_attrs(entry.attrs)
        out.append(node)
    return out


class ChangeGate:
    """An owner's change is half published between its apply to the tree and the drop of the
    kernel's cached entries for it (``on_paths``): a listing in between shows the change while
    ``stat`` still answers from the kernel's cache (a removed file gone from ``ls`` yet still
    there; seen once in a loaded run of ``test_the_owners_changes_show_and_a_revoked_link_fails
    _reads``).  The watcher holds the gate across both; a listing ``passes`` it first, waiting
    at most ``WAIT`` s, so a slow invalidation can delay a listing but never hang it."""

    WAIT = 1.0      # seconds

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> "ChangeGate":
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def passes(self) -> None:
        """Return once no change is half published (or after ``WAIT`` s)."""
        if self._lock.acquire(timeout=self.WAIT):
            self._lock.release()


class LinkWatcher:
    """Background thread: the owner's changes inside the folder link, applied to the tree.

    ``on_paths(paths)`` gets the mount paths a change touched (where things were and are);
    ``on_gone()`` is called once when the link is revoked.  ``gone`` says whether it was."""

    def __init__(self, public: PublicFolder, tree: Tree, sn: str, *,
                 poll_timeout: float = 20.0,
                 on_paths: Callable[[set[str]], None] | None = None,
                 on_gone: Callable[[], None] | None = None) -> None:
        self.public = public
        self.tree = tree
        self.sn = sn
        self.poll_timeout = poll_timeout
        self.on_paths = on_paths
        self.on_gone = on_gone
        self.gate = ChangeGate()     # held from a change's apply until on_paths returned
        self.gone = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="megafs-link-sc", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _touches_root(self, packet: dict[str, Any]) -> bool:
        root = self.tree.root
        if packet["a"] == "t":
            return any(raw["h"] == root for raw in packet["t"]["f"])
        return packet["a"] == "d" and packet["n"] == root

    def apply(self, packets: list[dict[str, Any]]) -> set[str]:
        """Apply checked packets; returns the mount paths they touched."""
        paths: set[str] = set()
        for packet in packets:
            if self._touches_root(packet):
                # the exported folder itself moved or went: the link follows it or ends,
                # which the next poll says (-9); the mount's root stays where it is
                log.info("folder link: the owner moved or removed the shared folder itself")
                continue
            paths |= paths_touched(self.tree, packet)
            apply_packet(self.tree, packet)
            paths |= paths_touched(self.tree, packet)
        return paths

    def _revoked(self) -> None:
        self.gone = True
        log.warning("the folder link was revoked or its folder removed by its owner: the "
                    "mount is now empty and reads of files still open fail with ENOENT")
        root = self.tree.root
        with self.gate:
            with self.tree.lock:
                paths = self._all_paths()
                for node in list(self.tree.children_view(root).values()):
                    self.tree.remove(node.handle)
            if self.on_paths:
                self.on_paths(paths)
        if self.on_gone:
            self.on_gone()

    def _all_paths(self) -> set[str]:
        """Every path the tree shows: what the kernel may have cached (for a minute) and must
        drop when the tree is replaced or emptied."""
        return {path for path in map(self.tree.path_of, (n.handle for n in self.tree.nodes()))
                if path is not None} | {"/"}

    def _reload(self) -> None:
        listing = self.public.listing()
        if listing.root != self.tree.root:
            raise MegaError(ApiCode.ENOENT, "the folder link names another folder now")
        with self.gate:
            paths = self._all_paths()
            self.tree.restore(_nodes(listing))
            self.sn = listing.sn
            if self.on_paths:
                self.on_paths(paths | self._all_paths())

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                packets, sn = self.public.poll(self.sn, self.poll_timeout, self._stop)
                with self.gate:
                    paths = self.apply(packets)
                    if paths and self.on_paths:
                        self.on_paths(paths)
                self.sn = sn or self.sn
                delay = 1.0
                continue
            except MegaError as exc:
                if self._stop.is_set():
                    return
                if exc.code == ApiCode.ENOENT:
                    self._revoked()
                    return
                if exc.code == ApiCode.ETOOMANY:
                    log.warning("fell behind the folder link's change feed; listing it again")
                    try:
                        self._reload()
                        continue
                    except MegaError as exc2:
                        if exc2.code == ApiCode.ENOENT:
                            self._revoked()
                            return
                        exc = exc2
                    except MegafsError as exc2:
                        log.warning("listing the folder link again failed: %s", describe(exc2))
                log.info("folder link change feed: %s; retrying in %.0f s", describe(exc),
                         delay)
            except Exception as exc:
                if self._stop.is_set():
                    return
                bug = not isinstance(exc, MegafsError)
                log.log(logging.ERROR if bug else logging.INFO,
                        "folder link change feed: %s; retrying in %.0f s", describe(exc),
                        delay, exc_info=bug)
            self._stop.wait(delay)
            delay = min(10.0, delay * 2)
