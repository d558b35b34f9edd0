"""Hostile input through real mounts against the real local server (issue 6, item 5).

* local names: spaces, newlines, emoji, exactly 255 bytes (ASCII and multi-byte), 256 bytes
  (ENAMETOOLONG on create, mkdir and rename), kept byte-exact remotely;
* remote names longer than 255 bytes and with '%' (the '/', '..', NUL and empty names are in
  tests/test_fs_mount.py::test_hostile_remote_names_and_no_secrets_in_logs);
* nodes whose attributes do not decrypt (garbage ``a``, a key wrapped with the wrong master
  key), made with a raw ``p``: shown as ``undecryptable-HANDLE`` with a WARNING, reading them is
  EIO, and the mount keeps working;
* malformed JSON, wrong types and bare ints from the server, from a corrupting stand-in in
  front of the real server (tests/helpers/corrupt_proxy.py): clear errnos or a clean one-line error,
  never a crash or a hang;
* truncated and tampered downloads through the mount: EIO, never wrong bytes;
* a session file that is corrupt or has the wrong permissions: ``megafs mount`` and ``megafs
  upload`` stop with a clear one-line error and leave the file alone.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.corrupt_proxy import CorruptProxy
from megafs import crypto
from megafs.api.client import MegaClient, PutItem
from megafs.tree.tree import Tree
from helpers.mount import (ROOT, MountProcess, force_unmount, is_mounted, megafs,
                           run_with_timeout, wait_for)

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]


def remote_names(api: str, state_dir: Path) -> dict[str, object]:
    with MegaClient.open(api=api, state_dir=str(state_dir)) as c:
        result = c.fetch()
        t = Tree(c.session.master_key, c.session.user_handle)
        t.load(result.nodes, result.public)
    return {t.path_of(h): t.get(h) for h in t.subtree(t.root) if t.path_of(h) not in ("", "/")}


def errno_of(func) -> int:
    with pytest.raises(OSError) as ei:
        run_with_timeout(func, 60)
    return ei.value.errno


@pytest.fixture
def mounted(server, tmp_path):
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state")
    m.start()
    yield m
    m.stop()


def test_local_names_spaces_newlines_emoji_and_length_limits(mounted, server):
    mnt = mounted.mnt
    names = ["with  two spaces ", "new\nline\n", "tab\there", "emoji \U0001F600\U0001F4A9",
             "x" * 255, "é" * 127 + "x", "\U0001F600" * 63 + "abc", " leading", "%2F"]
    for name in names:
        assert len(name.encode()) <= 255
        (mnt / name).write_bytes(name.encode())
    os.mkdir(mnt / ("d" * 255))
    (mnt / ("d" * 255) / ("y" * 255)).write_bytes(b"deep")
    too_long = ["n" * 256, "é" * 128, "\U0001F600" * 64]
    for name in too_long:
        assert errno_of(lambda: open(mnt / name, "wb")) == errno.ENAMETOOLONG
        assert errno_of(lambda: os.mkdir(mnt / name)) == errno.ENAMETOOLONG
        assert errno_of(lambda: os.rename(mnt / names[0], mnt / name)) == errno.ENAMETOOLONG
    # NAME.link exists only while it fits in 255 bytes; the xattr works for every name
    fits = [n for n in names if len((n + ".link").encode()) <= 255]
    for name in names:
        link = run_with_timeout(lambda: os.getxattr(mnt / name, "user.mega.link"), 60)
        assert link.startswith(b"https://mega.nz/file/"), name
        if name in fits:
            assert (mnt / (name + ".link")).read_bytes() == link + b"\n"
        assert (mnt / name).read_bytes() == name.encode()
    assert sorted(os.listdir(mnt)) == sorted(names + ["d" * 255])
    wait_for(lambda: set(remote_names(server.url, mounted.state_dir)) ==
             {"/" + n for n in names} | {"/" + "d" * 255, "/%s/%s" % ("d" * 255, "y" * 255)},
             timeout=30, what="remote names kept byte-exact")
    assert mounted.log_problems() == []


def test_long_and_percent_remote_names(mounted, server, tmp_path):
    mnt = mounted.mnt
    src = tmp_path / "s"
    src.write_bytes(b"remote")
    long_name = "L" * 300 + ".txt"
    with MegaClient.open(api=server.url, state_dir=str(mounted.state_dir)) as other:
        root = other.fetch().roots()[2]
        (node,) = other.put_files([PutItem(root, other.upload(str(src)), {"n": long_name})])
        other.put_files([PutItem(root, other.upload(str(src)), {"n": "100% ok"})])
    shown = wait_for(lambda: [n for n in os.listdir(mnt) if n.startswith("LLL")
                              and not n.endswith(".link")], timeout=15, what="long name")
    assert len(shown) == 1 and len(shown[0].encode()) <= 255
    assert shown[0].endswith("~" + node["h"])
    assert (mnt / shown[0]).read_bytes() == b"remote"
    wait_for(lambda: (mnt / "100% ok").exists(), timeout=15, what="percent name")
    assert (mnt / "100% ok").read_bytes() == b"remote"
    assert mounted.log_problems() == []


def _raw_put(c: MegaClient, parent: str, item: dict) -> dict:
    reply = c.transport.call({"a": "p", "t": parent, "n": [item]})
    return reply["f"][0]


def _make_undecryptable(c: MegaClient, parent: str, src: Path, tag: str) -> list[str]:
    """A file with garbage ``a``, a file keyed with the wrong master key, a broken folder."""
    up = c.upload(str(src))
    packed = up.key.pack()
    mk = c.session.master_key
    garbage = _raw_put(c, parent, {"h": up.token, "t": 0,
                                   "a": crypto.b64encode(os.urandom(32)),
                                   "k": crypto.b64encode(crypto.wrap_key(packed, mk))})
    up2 = c.upload(str(src))
    packed2 = up2.key.pack()
    wrong = _raw_put(c, parent, {"h": up2.token, "t": 0,
                                 "a": crypto.b64encode(crypto.encrypt_attr({"n": "w-" + tag},
                                                                           packed2)),
                                 "k": crypto.b64encode(crypto.wrap_key(packed2,
                                                                       os.urandom(16)))})
    fkey = crypto.random_key()
    folder = _raw_put(c, parent, {"h": "xxxxxxxx", "t": 1,
                                  "a": crypto.b64encode(crypto.encrypt_attr({"n": "f-" + tag},
                                                                            os.urandom(16))),
                                  "k": crypto.b64encode(crypto.wrap_key(fkey, mk))})
    return [garbage["h"], wrong["h"], folder["h"]]


@pytest.mark.log_ok("cannot be decrypted", "MAC mismatch")
def test_undecryptable_nodes_get_placeholders_and_the_mount_keeps_working(server, tmp_path):
    state = tmp_path / "state"
    src = tmp_path / "s"
    src.write_bytes(os.urandom(5000))
    with MegaClient.open(api=server.url, state_dir=str(state)) as c:
        root = c.fetch().roots()[2]
        before = _make_undecryptable(c, root, src, "before")     # present at mount time (f)
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    try:
        mnt = m.mnt
        for h in before:
            assert "undecryptable-" + h in os.listdir(mnt)
        with MegaClient.open(api=server.url, state_dir=str(state)) as c:
            after = _make_undecryptable(c, root, src, "after")   # arriving live (sc packets)
        wait_for(lambda: all("undecryptable-" + h in os.listdir(mnt) for h in after),
                 timeout=20, what="live undecryptable nodes shown")
        for h in (before[0], after[0]):     # good key, garbage name: right bytes or EIO
            try:
                got = run_with_timeout(lambda: (mnt / ("undecryptable-" + h)).read_bytes(), 60)
            except OSError as exc:
                assert exc.errno == errno.EIO
            else:
                assert got == src.read_bytes()
        for h in (before[1], after[1]):     # wrong key: never bytes
            assert errno_of(lambda: (mnt / ("undecryptable-" + h)).read_bytes()) == errno.EIO
        os.listdir(mnt / ("undecryptable-" + before[2]))      # the folder lists (empty)
        # the mount keeps working
        (mnt / "fine.txt").write_bytes(b"fine")
        link = run_with_timeout(lambda: (mnt / "fine.txt.link").read_text(), 60)
        assert link.startswith("https://mega.nz/file/")
        assert m.proc is not None and m.proc.poll() is None
        log = m.log()
        for h in before + after:
            assert h in log and "cannot be decrypted" in log, h
        assert "Traceback" not in log
        problems = m.log_problems(allowed=("cannot be decrypted", "MAC mismatch"))
        assert problems == [], problems
    finally:
        m.stop()


@pytest.mark.log_ok("cannot be decrypted", "MAC mismatch")
def test_undecryptable_nodes_offer_no_broken_link(server, tmp_path):
    state = tmp_path / "state"
    src = tmp_path / "s"
    src.write_bytes(os.urandom(5000))
    with MegaClient.open(api=server.url, state_dir=str(state)) as c:
        root = c.fetch().roots()[2]
        handles = _make_undecryptable(c, root, src, "x")[:2]
    m = MountProcess(tmp_path / "mnt", server.url, state).start()
    try:
        for h in handles:
            try:
                link = run_with_timeout(
                    lambda: (m.mnt / ("undecryptable-%s.link" % h)).read_text(), 60).strip()
            except OSError as exc:
                assert exc.errno in (errno.EIO, errno.ENOENT), exc
            else:   # a link that is offered must work
                megafs("get", link, "-o", str(tmp_path / "via-link"), "--api", server.url)
                assert (tmp_path / "via-link").read_bytes() == src.read_bytes(), h
    finally:
        m.stop()


# --- malformed replies ------------------------------------------------------------------------
GARBAGE = {
    "not-json": b"<html>oops",
    "bare-int": b"7",
    "wrong-type": b'{"unexpected": "object"}',
    "wrong-length": b"[0, 0, 0, 0, 0]",
    "nested-wrong-types": b'[{"f": "not a list", "ok": 5}]',
}


def _mount_cmd(mnt: Path, api: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "megafs", "mount", str(mnt), "--api", api, "--state-dir",
            str(state), "--foreground", "-v"]


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_malformed_listing_at_mount_time_is_a_clean_error(server, tmp_path, kind):
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with CorruptProxy(server.url) as proxy:
        with MegaClient.open(api=proxy.url, state_dir=str(state)):
            pass   # the session exists; only the listing goes wrong
        proxy.corrupt("cs", "f", body=GARBAGE[kind])
        try:
            proc = subprocess.run(_mount_cmd(mnt, proxy.url, state), capture_output=True,
                                  text=True, timeout=120, cwd=ROOT,
                                  env=dict(os.environ, MEGAFS_RETRY_SECONDS="3"))
            assert proc.returncode == 1, proc.stderr[-3000:]
            assert not is_mounted(mnt)
            last = proc.stderr.strip().splitlines()[-1]
            assert last.startswith("megafs"), last
            assert "Traceback" not in proc.stderr
            assert proxy.hits >= 1
        finally:
            force_unmount(mnt)


def test_malformed_replies_while_mounted(server, tmp_path):
    """Garbage for `p`, `g` and the sc poll: clear errnos and states, no crash, no hang; once
    the server behaves again everything completes."""
    state = tmp_path / "state"
    src = tmp_path / "r"
    src.write_bytes(os.urandom(300000))
    with CorruptProxy(server.url) as proxy:
        with MegaClient.open(api=proxy.url, state_dir=str(state)) as c:
            root = c.fetch().roots()[2]
            c.put_files([PutItem(root, c.upload(str(src)), {"n": "remote.bin"})])
        env_retry = os.environ.get("MEGAFS_RETRY_SECONDS")
        os.environ["MEGAFS_RETRY_SECONDS"] = "3"
        try:
            m = MountProcess(tmp_path / "mnt", proxy.url, state).start()
        finally:
            if env_retry is None:
                os.environ.pop("MEGAFS_RETRY_SECONDS")
            else:
                os.environ["MEGAFS_RETRY_SECONDS"] = env_retry
        try:
            mnt = m.mnt
            # 1. `g` (download URL) answers garbage of each kind: reading is EIO, promptly
            for body in GARBAGE.values():
                proxy.clear()
                proxy.corrupt("cs", "g", body=body)
                assert errno_of(lambda: (mnt / "remote.bin").read_bytes()) == errno.EIO
            proxy.clear()
            assert run_with_timeout(lambda: (mnt / "remote.bin").read_bytes(), 60) == \
                src.read_bytes()
            # 2. the sc poll answers garbage: the mount keeps working and recovers
            for body in GARBAGE.values():
                proxy.corrupt("sc", body=body, count=2)
            # 3. `p` (create the node) answers garbage: the upload does not complete and its
            # .link says so with an errno (EIO when marked failed, ETIMEDOUT while retrying)
            proxy.corrupt("cs", "p", body=b'{"f": 12}')
            (mnt / "mine.bin").write_bytes(b"mine")
            state_x = wait_for(lambda: os.getxattr(mnt / "mine.bin", "user.mega.state"),
                               timeout=10, what="a state")
            assert state_x in (b"pending", b"uploading", b"failed")
            wait_for(lambda: proxy.hits >= len(GARBAGE) * 3 + 1, timeout=60,
                     what="the garbage to be served")
            assert m.proc is not None and m.proc.poll() is None and is_mounted(mnt)
            assert os.listdir(mnt)      # still answering
            proxy.clear()
            # once the server is sane again: retry (automatic or `megafs retry`) completes it
            megafs("retry", str(mnt), "--state-dir", str(state))
            link = run_with_timeout(lambda: (mnt / "mine.bin.link").read_text(), 120)
            assert link.startswith("https://mega.nz/file/")
            # remote changes flow again through the (now sane) sc channel
            with MegaClient.open(api=proxy.url, state_dir=str(state)) as c:
                c.mkdir(root, "after-garbage")
            wait_for(lambda: "after-garbage" in os.listdir(mnt), timeout=30,
                     what="sc to recover")
            names = remote_names(proxy.url, state)
            assert sorted(names) == ["/after-garbage", "/mine.bin", "/remote.bin"]
            assert "Traceback" not in m.log()
        finally:
            m.stop()


@pytest.mark.log_ok("MAC mismatch")
# --- transfers -------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["truncate", "tamper"])
def test_bad_downloads_through_the_mount_are_eio_never_wrong_bytes(server, tmp_path, fault):
    state = tmp_path / "state"
    blob = os.urandom(3 * 1048576 + 17)
    src = tmp_path / "b"
    src.write_bytes(blob)
    with MegaClient.open(api=server.url, state_dir=str(state)) as c:
        root = c.fetch().roots()[2]
        c.put_files([PutItem(root, c.upload(str(src)), {"n": "b.bin"})])
    os.environ["MEGAFS_RETRY_SECONDS"] = "3"
    try:
        m = MountProcess(tmp_path / "mnt", server.url, state).start()
    finally:
        os.environ.pop("MEGAFS_RETRY_SECONDS")
    try:
        path = m.mnt / "b.bin"
        server.faults([{"where": "download", fault: True}])
        # whole-file read, a read at the start, and a ranged read in the middle
        assert errno_of(lambda: path.read_bytes()) == errno.EIO

        def pread(offset: int, length: int) -> bytes:
            fd = os.open(path, os.O_RDONLY)
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)
        spans = ((0, 4096), (1048576 + 5, 70000), (len(blob) - 10, 10))
        # (endless truncation costs a retry budget per read: one ranged read is enough)
        for offset, length in spans if fault == "tamper" else spans[1:2]:
            try:
                got = run_with_timeout(lambda: pread(offset, length), 60)
            except OSError as exc:
                assert exc.errno == errno.EIO
            else:
                assert got == blob[offset:offset + length], (fault, offset)   # never wrong
        server.clear_faults()
        if fault == "tamper":
            # a node that failed its MAC stays EIO for the mount's lifetime (readcache marks it
            # bad): never wrong bytes, at the price of a remount after a transient corruption
            return
        if fault == "truncate":
            # a transient truncation (once) is retried and gives the right bytes; tampering is
            # an integrity error and is not retried
            server.faults([{"where": "download", fault: True, "count": 1}])
        time.sleep(1.1)     # the kernel's 1 s attribute/page cache of the failed reads
        got = run_with_timeout(lambda: path.read_bytes(), 60)
        assert got == blob
    finally:
        server.clear_faults()
        m.stop()
    assert "Traceback" not in m.log()


# --- session files -----------------------------------------------------------------------------
@pytest.mark.parametrize("problem", ["corrupt", "truncated-json", "group-readable",
                                     "world-readable", "not-a-session"])
def test_bad_session_file_gives_a_clear_error(server, tmp_path, problem):
    state = tmp_path / "state"
    with MegaClient.open(api=server.url, state_dir=str(state)):
        pass
    path = next((state / "sessions").glob("*.json"))
    if problem == "corrupt":
        path.write_bytes(b"\x00\xff{garbage")
    elif problem == "truncated-json":
        path.write_text(path.read_text()[:40])
    elif problem == "group-readable":
        os.chmod(path, 0o640)
    elif problem == "world-readable":
        os.chmod(path, 0o604)
    else:
        path.write_text(json.dumps({"hello": "world"}))
    before = path.read_bytes()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "f.txt").write_bytes(b"x")
    cmds = {
        "mount": ["mount", str(mnt), "--api", server.url, "--state-dir", str(state),
                  "--foreground"],
        "upload": ["upload", str(tmp_path / "f.txt"), "--api", server.url, "--state-dir",
                   str(state)],
    }
    want = {"corrupt": "corrupt", "truncated-json": "corrupt", "group-readable": "chmod 600",
            "world-readable": "chmod 600", "not-a-session": "not a megafs session"}[problem]
    try:
        for name, args in cmds.items():
            proc = megafs(*args, check=False, timeout=60)
            assert proc.returncode == 1, (name, proc.stderr)
            assert want in proc.stderr and str(path) in proc.stderr, (name, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert len(proc.stderr.strip().splitlines()) <= 2, (name, proc.stderr)
            assert path.read_bytes() == before          # never replaced silently
            assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)
