"""The composition root: one place that builds a mount's parts, starts them and stops them.

``MountRuntime`` is used by ``megafs mount`` (which hands ``runtime.fs`` to the FUSE adapter),
by the core tests (which call ``runtime.fs`` directly, without FUSE) and by the benches, so all
three run exactly the same wiring.  Order: the bundled server (``--local``), the client
(session), the per-API mount directory and its lock (one mount per queue), the node tree
(``f``, then the action packets since its ``sn``: a big account's ``f`` is an older
snapshot), the write-back queue (recovered), the filesystem core and its ``.link`` layer, the
change feed.  ``close`` stops them in reverse order through an ``ExitStack``.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .. import config
from ..api.client import MegaClient
from ..api.folderlink import parse_folder_link
from ..api.publicfolder import PublicFolder
from ..errors import ApiCode, FsError, MegaError, MegafsError, describe
from ..tree import cache as tree_cache
from ..api.inshares import private_key
from ..tree.changes import RemoteWatcher, catch_up
from ..tree.inshares import SHARED, Incoming
from ..tree.linkfeed import LinkWatcher, link_tree
from ..tree.tree import Tree
from ..vfs.core import FileSystem
from ..vfs.linkfs import LinkFileSystem, LinkReader
from ..vfs.links import LinkLayer
from ..vfs.sharedguard import SharedLinkLayer
from ..vfs.readcache import ReadCache
from ..writeback.queue import WriteBack
from .localserver import LocalServer
from .options import MOUNT_OPTIONS
from .preflight import check_api
from .registry import mount_dir_for

log = logging.getLogger(__name__)


def _default(name: str) -> Any:
    return MOUNT_OPTIONS[name].default


@dataclass
class MountConfig:
    """Everything a mount is built from: the fields of the mount options (defaults from
    their table, ``mount/options.py``) and a few the CLI does not offer."""

    state_dir: str = field(default_factory=config.default_state_dir)
    api: str | None = _default("api")                  # None: $MEGAFS_API or the real MEGA
    local: bool = _default("local")                    # start the state dir's bundled server
    uploads: int = _default("uploads")                 # files uploaded in parallel
    upload_hold: float = _default("upload_hold")       # seconds a burst of closes is held
    connections: int = _default("connections")         # connections per file transfer
    link_timeout: float = _default("link_timeout")     # seconds a .link read waits
    show_links: bool = _default("show_links")          # list X.link files in readdir
    account: str | None = _default("account")          # an email: that logged-in account
    staging_max: int = _default("staging_max")         # most bytes staged (0: the disk's)
    session_file: str | None = _default("session")     # not the state dir's session file
    local_port: int | None = _default("local_port")    # with local: this port from now on
    fsync: str = _default("fsync")                     # "local": fsync is durable locally
    link: str | None = _default("link")                # a folder link: mounted read-only
    poll_timeout: float = 20.0         # seconds of one sc long-poll
    mountpoint: str = ""               # for messages (who holds a lock)

    @classmethod
    def from_options(cls, values: Mapping[str, Any], **more: Any) -> "MountConfig":
        """The config of the mount options in ``values`` (by option name, e.g. a parsed
        command line's ``vars(args)``), plus the fields in ``more``."""
        kwargs = {opt.config_field: values[opt.name] for opt in MOUNT_OPTIONS.values()
                  if opt.config_field and opt.name in values}
        kwargs.update(more)
        return cls(**kwargs)


class MountRuntime:
    """A built mount (see the module docstring).  Use as a context manager."""

    def __init__(self, cfg: MountConfig) -> None:
        self.cfg = cfg
        self._stack = contextlib.ExitStack()
        self.server: LocalServer | None = None
        self.api = ""
        self.mount_dir = ""
        # drops the kernel's cached entries of paths other clients changed (set by the FUSE
        # adapter when there is a kernel mount)
        self.invalidate: Callable[[set[str]], None] | None = None
        self.link_site: str | None = None   # base of printed links (None: https://mega.nz/)
        self.fs: LinkLayer | LinkFileSystem    # what the FUSE adapter serves

    def __enter__(self) -> "MountRuntime":
        try:
            self._build()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _build(self) -> None:
        cfg = self.cfg
        stack = self._stack
        config.private_dir(cfg.state_dir)
        if cfg.link:
            self._build_link(cfg.link)
            return
        owner = "the mount at %s (pid %d)" % (cfg.mountpoint or "?", os.getpid())
        api = cfg.api
        if cfg.local:
            self.server = LocalServer(cfg.state_dir, owner=owner, port=cfg.local_port)
            stack.callback(self.server.stop)
            api = self.server.start()
            # links of a --local mount open in a browser: the server serves /file/H
            self.link_site = api
        else:
            # a wrong or unreachable API is reported in seconds, not after minutes of retries
            if api is None and cfg.session_file and not os.environ.get(config.ENV_API):
                from ..api.session import peek_api
                api = peek_api(cfg.session_file)
            check_api(config.resolve_api(api))
        self.client = MegaClient.open(api=api, state_dir=cfg.state_dir,
                                      connections=cfg.connections, account=cfg.account,
                                      session_file=cfg.session_file)
        stack.callback(self.client.close)
        self.api = self.client.api
        mount_dir = mount_dir_for(cfg.state_dir, self.api)
        if cfg.account is not None:     # an account's queue is its own, never the anonymous one
            assert self.client.session is not None
            mount_dir += "-" + self.client.session.user_handle
        self.mount_dir = config.private_dir(mount_dir)
        lock_fd = lock_mount_dir(self.mount_dir, owner)
        stack.callback(os.close, lock_fd)
        session = self.client.session
        assert session is not None
        self.tree, sn = self._load_tree(session.master_key, session.user_handle)
        # The tree's objects live as long as the mount: keep the cyclic collector from
        # walking them on every full collection (a million nodes: ~0.2 s each, measured).
        gc.collect()
        gc.freeze()
        self.wb = WriteBack(self.mount_dir, self.client, self.tree, workers=cfg.uploads,
                            staging_max=cfg.staging_max, upload_hold=cfg.upload_hold)
        stack.callback(self.wb.stop)
        self.reads = ReadCache(self.client)
        stack.callback(self.reads.close)
        self.core = FileSystem(self.client, self.tree, self.wb, readcache=self.reads)
        stack.callback(self.core.close)
        self.core.recover()
        self.core.io.fsync_local = cfg.fsync == "local"
        layer = SharedLinkLayer if self.tree.incoming is not None else LinkLayer
        self.fs = layer(self.core, link_timeout=cfg.link_timeout, show_links=cfg.show_links,
                        mount_dir=self.mount_dir, link_site=self.link_site)
        self.watcher = RemoteWatcher(self.client, self.tree, sn,
                                     poll_timeout=cfg.poll_timeout, on_recover=self.wb.control.kick,
                                     on_change=self.wb.touch_all,
                                     on_paths=self._invalidate)
        stack.callback(self._save_tree)      # runs after the change feed stopped
        stack.callback(self.watcher.stop)

    def _build_link(self, text: str) -> None:
        """A folder link, read-only: the link's session (no account, no login, no session
        file, no mount dir), its tree from one ``f``, the read cache, the read-only file
        system and the link's change feed.  No write-back queue exists."""
        cfg = self.cfg
        link = parse_folder_link(text)
        if link.file or link.folder:
            raise MegafsError("a link to one item inside a folder link cannot be mounted: mount "
                              "the folder link itself (without /file/... or /folder/...), "
                              "or `megafs get` the item")
        api = cfg.api or link.api
        check_api(config.resolve_api(api))
        self.public = PublicFolder(link, api=api, connections=cfg.connections)
        self._stack.callback(self.public.close)
        self.api = self.public.client.api
        self.link_site = link.api
        try:
            listing = self.public.listing()
        except MegaError as exc:
            if exc.code == ApiCode.ENOENT:
                raise MegafsError("cannot open the folder link: there is no folder behind it "
                                  "(its owner removed the link or the folder)") from None
            raise MegafsError("cannot open the folder link: %s" % describe(exc)) from None
        except MegafsError as exc:
            raise MegafsError("cannot open the folder link: %s" % describe(exc)) from None
        self.tree = link_tree(listing, link.key)
        reader = LinkReader(self.public, self.tree)
        self.reads = ReadCache(reader)
        self._stack.callback(self.reads.close)
        fs = LinkFileSystem(self.tree, self.reads, reader, link, show_links=cfg.show_links,
                            link_site=self.link_site)
        self.fs = fs
        self.link_watcher = LinkWatcher(self.public, self.tree, listing.sn,
                                        poll_timeout=cfg.poll_timeout,
                                        on_paths=self._invalidate,
                                        on_gone=lambda: setattr(fs, "gone", True))
        fs.gate = self.link_watcher.gate
        self._stack.callback(self.link_watcher.stop)
        log.info("folder link opened read-only: %d nodes", len(self.tree))

    def _load_tree(self, master_key: bytes, user_handle: str) -> tuple[Tree, str]:
        """The node tree: from the state cache plus the change feed since, or fetched."""
        incoming = self._incoming(master_key, user_handle)
        cached = tree_cache.load(self.mount_dir, master_key, user_handle)
        if cached is not None and cached[0].get(SHARED) is not None:
            cached = None       # the keys of its incoming shares are not cached: list again
        if cached is not None:
            tree, sn = cached
            tree.incoming = incoming
            try:
                sn = catch_up(self.client, tree, sn)
                log.info("node tree from the cache: %d nodes", len(tree))
                return tree, sn
            except MegafsError as exc:
                log.info("the node-tree cache is too old (%s); fetching the tree", exc)
        started = time.monotonic()
        listing = self.client.fetch()
        total = len(listing.nodes)
        tree = Tree(master_key, user_handle)
        tree.incoming = incoming
        with tree_cache.gc_paused():
            tree.load(listing.nodes, listing.public,
                      progress=lambda n: log.info("decrypting the node tree: %d of %d nodes",
                                                  n, total),
                      ok=listing.ok, shares=listing.shares, users=listing.users)
        log.info("fetched the node tree: %d nodes in %.1f s", total,
                 time.monotonic() - started)
        # A big account's `f` is a snapshot as of an older sn: the changes since are applied
        # before anything (the write-back recovery above all) looks at the tree.
        try:
            sn = catch_up(self.client, tree, listing.sn, since="the fetched tree")
        except MegafsError as exc:
            raise MegafsError("cannot catch up with the changes since the fetched node tree "
                              "(%s); try mounting again" % describe(exc)) from None
        return tree, sn

    def _incoming(self, master_key: bytes, user_handle: str) -> Incoming | None:
        """A full account's incoming shares (its private key from ``ug`` once one is needed:
        not on the way to a mount's first listing); None otherwise."""
        session = self.client.session
        if session is None or not session.is_account:
            return None
        client = self.client
        return Incoming(lambda: private_key(client), user_handle, master_key)

    def _save_tree(self) -> None:
        """Keep the tree for the next mount (big accounts mount from it in seconds)."""
        try:
            n = tree_cache.save(self.tree, self.watcher.sn, self.mount_dir)
            log.debug("saved the node tree (%d nodes) for the next mount", n)
        except OSError as exc:
            log.warning("could not save the node-tree cache: %s", exc)

    def _invalidate(self, paths: set[str]) -> None:
        if self.invalidate is not None:
            self.invalidate(paths)

    def start(self) -> None:
        """Start the background threads (uploads, committer, change feed; a folder link: its
        change feed only)."""
        if self.cfg.link:
            self.link_watcher.start()
            return
        self.wb.start()
        self.watcher.start()

    def close(self) -> None:
        self._stack.close()


def lock_mount_dir(mount_dir: str, owner: str = "") -> int:
    """One mount per queue: a second mount of the same API and state dir would race uploads.
    Returns the locked descriptor (held for the life of the mount); FsError(EBUSY) naming the
    mount that holds it if taken."""
    fd = os.open(os.path.join(mount_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        raise FsError(errno.EBUSY, "this state dir, API and account are already mounted by "
                      "%s; one mount per state dir, API and account: unmount it first, or "
                      "use another --state-dir" % (holder or "another megafs mount")) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (owner or "pid %d" % os.getpid()).encode(), 0)
    return fd
