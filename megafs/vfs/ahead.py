"""Files ahead: a reader that goes through a folder file by file (``cp -r``, ``tar``, ``grep
-r``, ``cat DIR/*``) gets the next small files of that folder fetched while it reads.

Without it each small file read from MEGA costs a ``g`` and a GET, two round trips, one file
after the other: ``scripts/bench --wan`` read 100 x 4 KiB files with ``cat DIR/*`` in 9.1-9.7 s
at home (RTT 40 ms) and 31.5-31.8 s far (RTT 150 ms), in 100 ``g`` requests, as rclone mount
does (10.3 / 32.8 s).  ``FilesAhead`` starts when a small file is read from its start right after
the file before it in the listing, or when the reader reaches a file fetched ahead; a single
``cat`` fetches nothing more.  Then the ``FILES_AHEAD`` small files after it are fetched on
their own threads (a reader's own blocks never queue behind them), and the download URLs of up
to twice as many are asked in one ``g`` request whenever half of them are missing (or one the
fetches need now is): each GET then takes one round trip, all at once.  Measured the same way:
0.87-1.12 s at home and 2.5-3.3 s far, in 14-20 requests.  At most ``FILES_AHEAD`` files of
at most ``AHEAD_SIZE`` bytes are fetched that nobody reads (MEGA counts them in the transfer
quota); every one is checked against its MAC like any read (``vfs.readcache``).

``FolderOrder``: ``readdir`` lists a folder's names sorted (``FileSystem.readdir``,
``LinkFileSystem.readdir``), so the files a traversal opens next are the node's successors in
that order.  The sorted order of a folder is computed once per version of its name map: the
tree replaces a folder's map when the folder changes and never changes one it handed out
(``Tree.children_view``), so the map's identity says whether the order is still current.
``FolderOrder`` never touches the network.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from cachetools import LRUCache

from .. import crypto
from ..tree.nodes import FILE
from ..tree.tree import Tree

if TYPE_CHECKING:
    from ..api.interface import NodeReader

log = logging.getLogger(__name__)

File = tuple[str, crypto.FileKey, int]                  # (handle, file key, size)
Around = tuple[Optional[str], list[File]]    # (the previous file's handle, the files after)

FILES_AHEAD = 16          # small files of a folder fetched ahead of a reader going through it
AHEAD_SIZE = 1 << 20      # bytes: the largest file fetched ahead (the read cache's block)
RECENT = 64               # files read from their start that a next file's start may follow
FOLDERS = 32              # folders whose sorted order is kept
URL_WAIT = 60.0           # seconds a fetch waits for the `g` of its file asked with others


class Blocks(Protocol):
    """What ``FilesAhead`` asks of the read cache (``vfs.readcache.ReadCache``)."""

    client: "NodeReader"      # ``open_downloads`` too when it has it (``MegaApi``)

    def fetched(self, handle: str) -> tuple[bool, bool, bool]:
        """(refused by its MAC, its download URL known, its first block cached or coming)."""

    def known_url(self, handle: str, url: str) -> None:
        """A download URL that a ``g`` of several files gave."""

    def start_file(self, handle: str, key: crypto.FileKey, size: int,
                   pool: ThreadPoolExecutor) -> None:
        """Start every block of a file on ``pool``."""


class FolderOrder:
    """``around(handle)``: the file before a node and up to ``count`` files after it in its
    folder's listing order (files only, with usable keys; folders and undecryptable nodes are
    passed over).  Thread-safe."""

    def __init__(self, tree: Tree, count: int) -> None:
        self.tree = tree
        self.count = count
        self._lock = threading.Lock()
        # folder handle -> (its name map, the names sorted, name -> position)
        self._orders: LRUCache = LRUCache(maxsize=FOLDERS)

    def around(self, handle: str) -> Around:
        node = self.tree.get(handle)
        if node is None:
            return None, []
        names = self.tree.children_view(node.parent)
        name = self.tree.name_of(handle)
        with self._lock:
            known = self._orders.get(node.parent)
            if known is None or known[0] is not names:
                order = sorted(names)
                known = (names, order, {n: i for i, n in enumerate(order)})
                self._orders[node.parent] = known
        _names, order, position = known
        at = position.get(name) if name is not None else None
        if at is None:
            return None, []
        before = names[order[at - 1]] if at > 0 else None
        after: list[File] = []
        for next_name in order[at + 1:]:
            if len(after) >= self.count:
                break
            child = names[next_name]
            if child.type == FILE and child.ok and child.key is not None \
                    and len(child.key) == 32:
                after.append((child.handle, child.file_key, child.size))
        return (before.handle if before is not None and before.type == FILE else None), after


class FilesAhead:
    """The files ahead of the readers of one ``ReadCache`` (see the module docstring).
    Thread-safe; its own lock, never held while the cache's is asked for."""

    def __init__(self, cache: Blocks) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(FILES_AHEAD, thread_name_prefix="megafs-ahead")
        self._recent: LRUCache = LRUCache(maxsize=RECENT)             # handle -> True
        self._ahead: LRUCache = LRUCache(maxsize=4 * FILES_AHEAD)     # handle -> True
        # files whose `g` is in flight -> the event set once it answered
        self._asking: dict[str, threading.Event] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def busy(self) -> bool:
        """Some ``g`` of files ahead is in flight (for tests)."""
        with self._lock:
            return bool(self._asking)

    def wait_url(self, handle: str) -> None:
        """If ``handle``'s URL is being asked with other files', wait for that answer (at most
        ``URL_WAIT`` seconds) instead of asking again: a reader that catches up with the
        files ahead uses their request."""
        with self._lock:
            answered = self._asking.get(handle)
        if answered is not None:
            answered.wait(URL_WAIT)

    def seen(self, handle: str, around: Callable[[], Around]) -> None:
        """A small file is read from its start: if a reader goes through its folder (the file
        before it was read so, or this one was fetched ahead), start the files after it."""
        with self._lock:
            going = self._ahead.pop(handle, None) is not None
            self._recent[handle] = True
        before, after = around()
        with self._lock:
            going = going or (before is not None and before in self._recent)
        if not going:
            return
        small = []
        for f in after:
            if 0 < f[2] <= AHEAD_SIZE:
                bad, has_url, started = self.cache.fetched(f[0])
                if not bad:
                    small.append((f, has_url, started))
        batch = getattr(self.cache.client, "open_downloads", None)
        start: list[File] = []
        ask: list[File] = []
        with self._lock:
            if batch is not None:
                # not a file already coming: its fetch asks its own `g` (never waits for one)
                ask = [f for f, has_url, started in small
                       if not has_url and not started and f[0] not in self._asking]
                near = {f[0] for f, _u, _s in small[:FILES_AHEAD]}
                if len(ask) < FILES_AHEAD // 2 and not any(f[0] in near for f in ask):
                    ask = []                # asked by halves: one request for many
                answered = threading.Event()
                self._asking.update((f[0], answered) for f in ask)
            for f, _has_url, started in small[:FILES_AHEAD]:
                if f[0] in self._ahead or started:
                    continue
                self._ahead[f[0]] = True
                if f[0] not in self._asking:       # else started once its URL is here
                    start.append(f)
        if ask and batch is not None:
            # a thread of its own: never queued behind the GETs of the pool, which a reader
            # waiting for this answer (``wait_url``) would then wait for too
            threading.Thread(target=self._urls, args=(batch, ask), daemon=True,
                             name="megafs-ahead-g").start()
        self._start(start)

    def _urls(self, batch: Callable[[list[str]], list], files: list[File]) -> None:
        """One ``g`` request for files ahead, then the blocks of those a reader is near
        (``_ahead``).  A file whose ``g`` failed (or the whole request) asks on its own when
        fetched."""
        infos: list = []
        try:
            infos = batch([f[0] for f in files])
        except Exception as exc:         # noqa: B902 - speculative: the fetches ask again
            log.debug("the files ahead's g failed: %s", type(exc).__name__)
        finally:
            for (handle, _key, _size), info in zip(files, infos):
                if not isinstance(info, Exception):
                    self.cache.known_url(handle, info.url)
            start = self._answered(files)
        self._start(start)

    def _answered(self, files: list[File]) -> list[File]:
        """The ``g`` of ``files`` answered (or failed): wake the fetches waiting for it;
        returns those of them a reader is near."""
        with self._lock:
            start = [f for f in files if f[0] in self._ahead]
            for handle, _key, _size in files:
                answered = self._asking.pop(handle, None)
                if answered is not None:
                    answered.set()
        return start

    def _start(self, files: list[File]) -> None:
        for handle, key, size in files:
            self.cache.start_file(handle, key, size, self._pool)
