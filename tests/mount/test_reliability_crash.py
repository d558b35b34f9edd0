"""Crash recovery corner cases found by the chaos run (issue 6, item 3).

The random kill points themselves are in tests/test_reliability_chaos.py; this file pins the
cases that need a precise kill point.
"""
from __future__ import annotations

import os

import pytest
import requests

from megafs.api.client import MegaClient
from megafs.tree.tree import Tree
from helpers.mount import MountProcess, run_with_timeout, wait_for

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]


def files_named(api: str, state_dir, name: str) -> list[str]:
    with MegaClient.open(api=api, state_dir=str(state_dir)) as c:
        result = c.fetch()
        t = Tree(c.session.master_key, c.session.user_handle)
        t.load(result.nodes, result.public)
    return [h for h in t.subtree(t.root) if t.get(h).type == 0 and t.get(h).name == name]


def test_stalled_put_across_kill9_does_not_duplicate(server, tmp_path):
    state = tmp_path / "state"
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    try:
        # the mount's `p` stalls 6 s on the server (a 2-second stall of the mix is
        # the same race with a narrower window)
        server.faults([{"where": "cs", "command": "p", "delay": 6, "count": 1}])
        (m.mnt / "once.bin").write_bytes(b"once" * 1000)
        wait_for(lambda: requests.get(server.url + "_megafs/stats", timeout=10).json()
                 .get("faults_delay", 0) >= 1, timeout=30, what="the p to be in flight")
        m.kill9()
        m = MountProcess(tmp_path / "mnt", server.url, state,
                         log_path=tmp_path / "m2.log").start()
        run_with_timeout(lambda: (m.mnt / "once.bin.link").read_text(), 60)
        # let the stalled `p` land (it is processed 6 s after it arrived), then give the mount
        # a moment to notice and clean up an extra node on its own
        try:
            wait_for(lambda: len(files_named(server.url, state, "once.bin")) >= 2, timeout=15,
                     what="the stalled put to land")
            wait_for(lambda: len(files_named(server.url, state, "once.bin")) == 1, timeout=15,
                     what="one node")
        except AssertionError:
            pass
        handles = files_named(server.url, state, "once.bin")
        assert len(files_named(server.url, state, "once.bin")) == 1, handles
    finally:
        server.clear_faults()
        m.stop()


def test_small_files_in_the_journal_survive_kill9_and_lost_staged_copies(server, tmp_path):
    """Issue 23: a small file's bytes are made durable on close in the queue's journal, not by
    an fsync of its staged copy.  kill -9 right after close, then the staged copies damaged
    as a power loss could leave unsynced files (emptied, stale, gone): after remount every
    file is there, uploaded, byte-exact, from the journal alone."""
    state = tmp_path / "state"
    blobs = {"a.bin": os.urandom(4096), "b.bin": os.urandom(1), "c.bin": os.urandom(100_000),
             "big.bin": os.urandom(300_000)}       # big.bin: over JOURNAL_MAX, fsync'd
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    try:
        # no upload URL is handed out before the kill: the bytes live only on this machine
        server.faults([{"where": "cs", "command": "u", "delay": 8}])
        for name, data in blobs.items():
            (m.mnt / name).write_bytes(data)           # returns after close()
        m.kill9()
        server.clear_faults()
        staging = [d / "staging" for d in (state / "mounts").iterdir()]
        copies = sorted((p for d in staging for p in d.iterdir()), key=lambda p: p.stat().st_size)
        assert len(copies) == 4
        copies[0].unlink()                               # gone
        copies[1].write_bytes(b"")                       # emptied
        copies[2].write_bytes(b"stale" * 10)             # short, other bytes
        m = MountProcess(tmp_path / "mnt", server.url, state,
                         log_path=tmp_path / "m2.log").start()
        links = {name: run_with_timeout(lambda n=name: (m.mnt / (n + ".link")).read_text(), 60)
                 .strip() for name in blobs}
        for name, data in blobs.items():
            assert (m.mnt / name).read_bytes() == data, name
        assert "restored 3 small file(s) from the queue's journal" in m.log()
        with MegaClient.public(api=server.url) as pub:
            for name, data in blobs.items():
                dest = tmp_path / "dl"
                pub.download(links[name], str(dest))
                assert dest.read_bytes() == data, name
    finally:
        server.clear_faults()
        m.stop()
