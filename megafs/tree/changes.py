"""The change feed: a background thread that long-polls MEGA's action packets (``sc``) and
applies them to the node tree.

Owns the poll loop, its back-off, the reload after falling behind (``-6``), and the removal of
late repeats of our own commits.  No FUSE, no queue.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ApiCode, MegaError, MegafsError, describe
from . import remote
from .packets import apply as apply_packet, paths_touched
from .tree import Tree

if TYPE_CHECKING:
    from ..api.interface import MegaApi

log = logging.getLogger(__name__)


class RemoteWatcher:
    """Background thread: long-polls the ``sc`` channel and applies packets to the tree.

    Our own packets (``i`` equal to our request id) describe changes the mount already made
    to the tree when the request returned; applied again later they could undo a newer local
    change (a rename right after a commit would flip back for a moment).  So they are skipped,
    except ``t`` packets bringing nodes the tree has never had (a commit whose reply has not
    arrived yet, or the late ``p`` of a killed earlier mount); a node we created and already
    deleted again must not come back.  When the server says we fell
    too far behind (-6) the whole tree is fetched again.
    """

    def __init__(self, client: "MegaApi", tree: Tree, sn: str, *, poll_timeout: float = 20.0,
                 on_change: Any = None, on_recover: Any = None,
                 on_paths: Callable[[set[str]], None] | None = None) -> None:
        self.client = client
        self.tree = tree
        self.sn = sn
        self.poll_timeout = poll_timeout
        self.on_change = on_change
        self.on_recover = on_recover
        self.on_paths = on_paths      # mount paths another client changed (kernel caches)
        self.min_interval = 0.5
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="megafs-sc", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _relevant(self, packet: Any) -> Any:
        """The packet to apply (own ``t`` packets cut to unknown nodes), or None to skip."""
        if not isinstance(packet, dict) or packet.get("i") != getattr(self.client, "request_id",
                                                                      None):
            return packet
        if packet.get("a") != "t":
            return None
        body = packet.get("t")
        if not isinstance(body, dict) or not isinstance(body.get("f"), list):
            return None
        raws = body["f"]
        fresh = [raw for raw in raws if isinstance(raw, dict) and isinstance(raw.get("h"), str)
                 and self.tree.get(raw["h"]) is None and not self.tree.was_removed(raw["h"])]
        if not fresh:
            return None
        return dict(packet, t=dict(body, f=fresh))

    def _new_own_files(self, packet: Any) -> list[str]:
        """Handles of files that a ``t`` packet of our own request id adds to the tree."""
        if not isinstance(packet, dict) or packet.get("a") != "t" \
                or packet.get("i") != getattr(self.client, "request_id", None):
            return []
        body = packet.get("t")
        raws = body.get("f") if isinstance(body, dict) else None
        if not isinstance(raws, list):
            return []
        return [raw["h"] for raw in raws if isinstance(raw, dict) and raw.get("t") == 0
                and isinstance(raw.get("h"), str) and self.tree.get(raw["h"]) is None]

    def _reap_late_repeats(self, handles: list[str]) -> None:
        """Delete our own new nodes that repeat a commit already finished (exported).

        A ``p`` sent by a mount that was then killed can be applied by the server after the
        next mount has uploaded the file again; both nodes carry the same upload id.  The one
        already exported is the file; the late one is removed.  A repeat that lands while our
        own commit is still in flight is removed by the write-back committer instead.
        """
        for handle in handles:
            if not any(twin.public for twin in self.tree.same_upload(handle)):
                continue
            try:
                remote.delete(self.client, self.tree, handle)
            except MegaError as exc:
                log.warning("could not remove node %s, a late repeat of an upload: %s",
                            handle, exc)
                continue
            log.info("removed node %s: a late repeat of an upload already committed", handle)

    def _run(self) -> None:
        delay = 1.0
        last = 0.0
        while not self._stop.is_set():
            # Our own uploads produce a stream of packets; polling at most twice a second
            # lets them batch up (a 300-file copy spent a quarter of its CPU in sc polls).
            wait = self.min_interval - (time.monotonic() - last)
            if wait > 0 and self._stop.wait(wait):
                return
            last = time.monotonic()
            try:
                packets, sn = self.client.poll(self.sn, self.poll_timeout)
                affected: set[str] = set()
                paths: set[str] = set()
                for p in packets:
                    p = self._relevant(p)
                    if p is None:
                        continue
                    ours = self._new_own_files(p)
                    paths |= paths_touched(self.tree, p)     # where things were
                    affected |= apply_packet(self.tree, p)
                    paths |= paths_touched(self.tree, p)     # where things are now
                    if ours:
                        self._reap_late_repeats(ours)
                self.sn = sn or self.sn
                if delay > 1.0 and self.on_recover:
                    self.on_recover()  # the server is back: queued uploads need not wait
                delay = 1.0
                if affected and self.on_change:
                    self.on_change(affected)
                if paths and self.on_paths:
                    self.on_paths(paths)
            except MegaError as exc:
                if self._stop.is_set():
                    return
                if exc.code == ApiCode.ETOOMANY:     # sc: too far behind, reload
                    log.warning("fell behind the server's change feed; reloading the tree")
                    try:
                        listing = self.client.fetch()
                        self.tree.load(listing.nodes, listing.public, ok=listing.ok,
                                       shares=listing.shares, users=listing.users)
                        self.sn = catch_up(self.client, self.tree, listing.sn,
                                           since="the fetched tree")
                        continue
                    except MegafsError as exc2:
                        log.warning("reload failed: %s", describe(exc2))
                level = logging.ERROR if exc.code == ApiCode.ESID else logging.INFO
                log.log(level, "change feed: %s; retrying in %.0f s", describe(exc), delay)
                self._stop.wait(delay)
                delay = min(10.0, delay * 2)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.log(logging.INFO if isinstance(exc, MegafsError) else logging.ERROR,
                        "change feed: %s; retrying in %.0f s", describe(exc), delay,
                        exc_info=not isinstance(exc, MegafsError))
                self._stop.wait(delay)
                delay = min(10.0, delay * 2)


def catch_up(client: "MegaApi", tree: Tree, sn: str, *, limit: float = 60.0,
             since: str = "the cache") -> str:
    """Apply every action packet after ``sn`` (our own ones too: a cached tree or a snapshot
    has not seen them) until the server has nothing more; returns the new ``sn``.

    Used for a tree from the node-tree cache and for every ``f`` answer: for big accounts the
    real ``f`` is a snapshot whose ``sn`` is older than the account (rclone/rclone#2366,
    quoting MEGA), and the SDK reports ``fetchnodes`` done only once ``sc`` has nothing more
    to deliver (meganz/sdk src/megaclient.cpp ``procsc``: ``fetchnodes_result`` when
    ``!insca_notlast``).  ``since`` names where the tree came from, for the log.  Raises
    MegaError(-6) when ``sn`` is older than the packets the server keeps (fetch the tree
    again) and MegafsError when the server cannot be asked within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    applied = 0
    while True:
        packets, new_sn = client.poll(sn, 0.0)
        for packet in packets:
            apply_packet(tree, packet)
        applied += len(packets)
        if not packets or new_sn == sn:
            log.info("node tree caught up with %d change(s) since %s", applied, since)
            return new_sn
        sn = new_sn
        if time.monotonic() > deadline:
            raise MegafsError("catching up with the change feed took longer than %.0f s"
                              % limit)
