"""A hostile server against a real mount (issue 20, items 2, 3 and 6), through the corrupting
stand-in in front of the real local server (tests/helpers/corrupt_proxy.py).

* the ``f`` listing gains a file claiming 2**62 bytes and two folders each inside the other:
  the mount comes up, lists, reads the huge file as EIO at once (one WARNING naming it), logs
  the cycle once, and its memory stays small;
* the listing's public handles and every ``l`` answer carry a newline and an attacker's URL:
  ``X.link`` and ``user.mega.link`` never show it.
"""
from __future__ import annotations

import errno
import os
import time

import pytest

from helpers.corrupt_proxy import CorruptProxy
from helpers.mount import MountProcess, run_with_timeout
from megafs import crypto
from megafs.api.client import MegaClient, PutItem

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

EVIL = "AAAAAAAA\nhttps://evil.example/file/AAAAAAAA"


def _node(mk: bytes, uh: str, handle: str, parent: str, kind: int, name: str,
          size: int = 0) -> dict:
    key = crypto.new_file_key().pack() if kind == 0 else crypto.random_key(16)
    node = {"h": handle, "p": parent, "t": kind, "u": uh, "ts": 1700000000,
            "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, key)),
            "k": "%s:%s" % (uh, crypto.b64encode(crypto.wrap_key(key, mk)))}
    if kind == 0:
        node["s"] = size
    return node


def _rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.log_ok("more than MEGA stores", "cycle in the node tree")
def test_huge_sizes_and_cycles_in_the_listing(server, tmp_path):
    state = tmp_path / "state"
    with CorruptProxy(server.url) as proxy:
        with MegaClient.open(api=proxy.url, state_dir=str(state)) as c:
            root = c.fetch().roots()[2]
            mk, uh = c.session.master_key, c.session.user_handle
        extra = [_node(mk, uh, "HugeHuge", root, 0, "huge.bin", 2 ** 62),
                 _node(mk, uh, "CycleAAA", "CycleBBB", 1, "a"),
                 _node(mk, uh, "CycleBBB", "CycleAAA", 1, "b"),
                 _node(mk, uh, "CycleSSS", "CycleSSS", 1, "self")]

        def grow(batch: list) -> list:
            for reply in batch:
                if isinstance(reply, dict) and isinstance(reply.get("f"), list):
                    reply["f"].extend(extra)
            return batch
        proxy.corrupt("cs", "f", rewrite=grow)
        m = MountProcess(tmp_path / "mnt", proxy.url, state).start()
        try:
            assert "huge.bin" in os.listdir(m.mnt)
            assert os.stat(m.mnt / "huge.bin").st_size == 2 ** 62
            started = time.monotonic()
            with pytest.raises(OSError) as err:
                run_with_timeout(lambda: (m.mnt / "huge.bin").open("rb").read(4096), 30)
            assert err.value.errno == errno.EIO
            assert time.monotonic() - started < 5
            assert m.proc is not None and _rss_kib(m.proc.pid) < 400 * 1024
            (m.mnt / "after.txt").write_bytes(b"still works")
            assert (m.mnt / "after.txt").read_bytes() == b"still works"
            log = m.log()
            assert log.count("more than MEGA stores") == 1, log[-3000:]
            assert 1 <= log.count("cycle in the node tree") <= 3, log[-3000:]
            assert "Traceback" not in log
        finally:
            m.stop()


@pytest.mark.log_ok("public handle")
def test_public_handles_that_are_not_handles_never_become_links(server, tmp_path):
    state = tmp_path / "state"
    src = tmp_path / "s"
    src.write_bytes(b"secret bytes")
    with CorruptProxy(server.url) as proxy:
        with MegaClient.open(api=proxy.url, state_dir=str(state)) as c:
            root = c.fetch().roots()[2]
            (node,) = c.put_files([PutItem(root, c.upload(str(src)), {"n": "old.txt"})])
            c.export([node["h"]])

        def evil_ph(batch: list) -> list:
            for reply in batch:
                if isinstance(reply, dict) and isinstance(reply.get("ph"), list):
                    for entry in reply["ph"]:
                        entry["ph"] = EVIL
            return batch
        proxy.corrupt("cs", "f", rewrite=evil_ph)
        proxy.corrupt("cs", "l", rewrite=lambda batch: [EVIL for _ in batch])
        m = MountProcess(tmp_path / "mnt", proxy.url, state, extra=["-o", "link_timeout=5"],
                         env={"MEGAFS_RETRY_SECONDS": "2"}).start()
        try:
            (m.mnt / "new.txt").write_bytes(b"new bytes")
            for name in ("old.txt", "new.txt"):
                try:
                    text = run_with_timeout(
                        lambda: (m.mnt / (name + ".link")).read_text(), 60)
                except OSError as exc:
                    assert exc.errno in (errno.EIO, errno.ETIMEDOUT, errno.EAGAIN), exc
                else:
                    assert "evil" not in text, name
                try:
                    value = run_with_timeout(
                        lambda: os.getxattr(m.mnt / name, "user.mega.link"), 60)
                except OSError as exc:
                    assert exc.errno in (errno.EIO, errno.ETIMEDOUT, errno.EAGAIN,
                                         errno.ENODATA), exc
                else:
                    assert b"evil" not in value, name
            assert "evil" not in m.log()
        finally:
            m.stop()
