"""Big accounts (issue 19 item 5): the real ``f`` of an account over some size answers a
snapshot plus the action packets since (rclone/rclone#2366); the local server does the same
with ``snapshot_over``.  A mount applies those packets before the write-back recovery looks at
the tree, so an ambiguous ``p`` of a crashed mount is adopted (not uploaded twice) and nothing
deleted since the snapshot comes back.

The mounts here are the composition root without FUSE and without the change feed running
(``MountRuntime`` is built but never started), so what the tree shows is exactly what the
mount built before recovery: these checks cannot pass by the change feed catching up later.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time

from megafs.api.client import MegaClient, PutItem
from megafs.mount.runtime import MountConfig, MountRuntime
from megafs.tree import cache as tree_cache
from megafs.tree.tree import Tree
from helpers.mount import listing_paths


def _mount(api: str, state: str) -> MountRuntime:
    return MountRuntime(MountConfig(state_dir=state, api=api)).__enter__()


def _crash(rt: MountRuntime) -> None:
    """Stop like a killed mount: the node-tree cache is not there at the next mount."""
    rt.close()
    tree_cache.remove(rt.mount_dir)


def _raw_names(client: MegaClient) -> set[str]:
    """Names in a bare ``f`` answer, without catching up (what a careless client shows)."""
    listing = client.fetch()
    tree = Tree(client.session.master_key, client.session.user_handle)
    tree.load(listing.nodes, listing.public)
    return {tree.get(h).name for h in tree.subtree(tree.root) if h != tree.root}


def test_a_stale_snapshot_is_caught_up_before_the_tree_is_shown(server, tmp_path, caplog):
    state = str(tmp_path / "state")
    server.options({"snapshot_over": 5})       # 3 roots + 3 folders: a "big" account
    rt = _mount(server.url, state)
    for name in ("a", "b", "c"):
        rt.fs.mkdir("/" + name)
    _crash(rt)
    other = MegaClient.open(api=server.url, state_dir=state)
    try:
        assert _raw_names(other) == {"a", "b", "c"}      # the snapshot is taken here
        root = other.fetch().roots()[2]
        paths = listing_paths(other)
        by_name = {name: paths["/" + name].handle for name in "abc"}
        other.mkdir(root, "new")
        other.delete(by_name["b"])
        other.move(by_name["c"], by_name["a"])
        # the server answers the old snapshot: a client that does not catch up sees the past
        assert _raw_names(other) == {"a", "b", "c"}
        with caplog.at_level(logging.INFO, logger="megafs.tree.changes"):
            rt = _mount(server.url, state)
        try:
            assert sorted(rt.fs.readdir("/")) == ["a", "new"]
            assert rt.fs.readdir("/a") == ["c"]
            assert any("caught up with 4 change(s) since the fetched tree" in r.getMessage()
                       for r in caplog.records), [r.getMessage() for r in caplog.records]
        finally:
            rt.close()
    finally:
        other.close()


def _put(client: MegaClient, parent: str, name: str, path) -> str:
    path.write_bytes(name.encode())
    node = client.put_files([PutItem(parent, client.upload(str(path)), {"n": name})])[0]
    assert isinstance(node, dict), node
    return node["h"]


def test_recovery_decides_on_the_caught_up_tree(server, tmp_path):
    """A crashed mount's ``p`` landed after the snapshot (its answer was never recorded:
    ``put_tried``) and a file was removed after the snapshot: the next mount adopts that node
    (no second upload, no second node) and the removed file stays removed."""
    state = str(tmp_path / "state")
    server.options({"snapshot_over": 4})
    rt = _mount(server.url, state)           # never started: uploads only by hand below
    other = MegaClient.open(api=server.url, state_dir=state)
    try:
        gone = _put(other, rt.tree.root, "gone.txt", tmp_path / "g")
        _put(other, rt.tree.root, "kept.txt", tmp_path / "k")
        assert _raw_names(other) == {"gone.txt", "kept.txt"}     # the snapshot: 5 nodes
        # after the snapshot: the mount commits a file and is killed before it records the
        # `p`'s answer; a file is removed
        fh = rt.fs.create("/once.txt")
        rt.fs.write(fh, b"exactly once", 0)
        rt.fs.release(fh)
        sf = rt.core.ns.resolve("/once.txt").sf
        node = rt.client.put_files([PutItem(rt.tree.root, rt.client.upload(sf.path), {
            "n": "once.txt", "mfs": "%s.%d" % (sf.rid, sf.rec.generation)})])[0]
        other.delete(gone)
        _crash(rt)
        db = sqlite3.connect(os.path.join(rt.mount_dir, "queue.sqlite"))
        with db:
            db.execute("UPDATE files SET put_tried=1")
        db.close()
        assert _raw_names(other) == {"gone.txt", "kept.txt"}     # still the old snapshot
        rt = _mount(server.url, state)
        try:
            # decided at recovery, before anything ran: the node the `p` made is adopted
            assert rt.core.ns.resolve("/once.txt").sf.rec.committed == node["h"]
            assert sorted(rt.fs.readdir("/")) == ["kept.txt", "once.txt"]
            rt.wb.start()
            rt.core.wb.control.wait(rt.core.ns.resolve("/once.txt").sf, 60)
            server.options({"snapshot_over": 0})      # plain listings from here on
            names = listing_paths(other)
            assert sorted(names) == ["/kept.txt", "/once.txt"]
            assert names["/once.txt"].handle == node["h"]
        finally:
            rt.close()
    finally:
        other.close()


def test_a_reload_after_falling_behind_catches_up_with_own_changes(server, tmp_path, caplog):
    """The change feed fell behind (``-6``) and reloads: the `f` it gets is a snapshot older
    than a folder this mount removed.  Our own packets are normally skipped (the tree already
    has them), so without catching up after the reload the folder would come back for good."""
    from helpers.mount import wait_for
    state = str(tmp_path / "state")
    server.options({"snapshot_over": 3, "packet_log": 1})
    rt = _mount(server.url, state)                   # 3 nodes: the current tree, at sn S0
    other = MegaClient.open(api=server.url, state_dir=state)
    try:
        rt.fs.mkdir("/a")
        rt.fs.mkdir("/b")                            # the log keeps only b's packet
        assert _raw_names(other) == {"a", "b"}       # the snapshot, at S1
        rt.fs.rmdir("/b")                            # our own `d`; the log keeps only it
        assert sorted(rt.fs.readdir("/")) == ["a"]       # 4 nodes: still a big account
        with caplog.at_level(logging.INFO, logger="megafs.tree.changes"):
            rt.watcher.start()                       # polls from S0: -6, reload, catch up
            wait_for(lambda: any("fell behind" in r.getMessage() for r in caplog.records),
                     timeout=30, what="the change feed to reload")
            wait_for(lambda: any("since the fetched tree" in r.getMessage()
                                 for r in caplog.records), timeout=30, what="the catch-up")
        time.sleep(1.0)                              # a few more polls: nothing comes back
        assert sorted(rt.fs.readdir("/")) == ["a"]
    finally:
        other.close()
        rt.close()
