"""The filesystem core and write-back queue without FUSE, against the real local server.

Each test builds the same stack a mount builds (MegaClient -> Tree -> WriteBack -> MegaFS) in
this process, so semantics can be checked quickly and deterministically; the mount tests in
test_fs_mount.py repeat the important claims through the kernel.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading

import pytest

from megafs.api.client import MegaClient
from megafs.errors import FsError, IntegrityError, MegafsError
from megafs.fs import MegaFS
from megafs.tree.tree import Tree
from megafs.vfs.readcache import ReadCache
from megafs.writeback import WriteBack
from mount_support import listing_paths, wait_for


class Stack:
    def __init__(self, api: str, state_dir: str, *, start: bool = True, workers: int = 4,
                 link_timeout: float = 60.0) -> None:
        self.api, self.state_dir = api, state_dir
        self.client = MegaClient.open(api=api, state_dir=state_dir)
        self.tree = Tree(self.client.session.master_key, self.client.session.user_handle)
        listing = self.client.fetch()
        self.tree.load(listing.nodes, listing.public)
        self.mount_dir = os.path.join(state_dir, "mounts", "test")
        self.wb = WriteBack(self.mount_dir, self.client, self.tree, workers=workers)
        self.wb.recover()
        self.reads = ReadCache(self.client)
        self.fs = MegaFS(self.client, self.tree, self.wb, link_timeout=link_timeout,
                         readcache=self.reads, mount_dir=self.mount_dir)
        if start:
            self.wb.start()

    def write_file(self, path: str, data: bytes) -> None:
        fh = self.fs.create(path)
        for off in range(0, len(data), 131072):
            self.fs.write(fh, data[off:off + 131072], off)
        self.fs.flush(fh)
        self.fs.release(fh)

    def read_file(self, path: str) -> bytes:
        fh = self.fs.open(path, os.O_RDONLY)
        try:
            out, off = [], 0
            while True:
                chunk = self.fs.read(fh, 131072, off)
                if not chunk:
                    return b"".join(out)
                out.append(chunk)
                off += len(chunk)
        finally:
            self.fs.release(fh)

    def link(self, path: str) -> str:
        return self.read_file(path + ".link").decode().strip()

    def fresh_names(self) -> dict[str, object]:
        """Path -> node of a brand-new listing (what another client would see)."""
        return listing_paths(self.client)

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self.wb.stop()
        self.reads.close()
        self.client.close()


@pytest.fixture
def stack(server, tmp_path):
    s = Stack(server.url, str(tmp_path / "state"))
    yield s
    s.close()


def _download(client: MegaClient, link: str, dest) -> bytes:
    client.download(link, str(dest))
    return open(dest, "rb").read()


def test_write_close_link_and_download(stack, tmp_path):
    sizes = [0, 1, 15, 16, 4096, 131073, 1048576 + 7, 5 * 1048576 + 3]
    blobs = {}
    for i, size in enumerate(sizes):
        blobs["/f%d.bin" % i] = os.urandom(size)
        stack.write_file("/f%d.bin" % i, blobs["/f%d.bin" % i])
    for path, data in blobs.items():
        link = stack.link(path)
        assert link.startswith("https://mega.nz/file/")
        assert _download(stack.client, link, tmp_path / "dl") == data
        assert stack.fs.getxattr(path, "user.mega.state") == b"uploaded"
        assert stack.fs.getattr(path)["st_size"] == len(data)
        assert stack.read_file(path) == data
    names = stack.fresh_names()
    for path, data in blobs.items():
        assert names[path].size == len(data)
    # exactly once
    assert len([p for p in names if p.startswith("/f")]) == len(sizes)


def test_staged_mode_and_private_dirs(stack):
    fh = stack.fs.create("/secret.txt")
    stack.fs.write(fh, b"x", 0)
    rec = stack.wb.lookup(stack.tree.root, "secret.txt")
    assert stat.S_IMODE(os.stat(rec.staged).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(stack.wb.staging).st_mode) == 0o700
    stack.fs.flush(fh)
    stack.fs.release(fh)
    stack.link("/secret.txt")


def test_read_remote_ranges_and_cache(stack):
    data = os.urandom(6 * 1048576 + 12345)
    stack.write_file("/big.bin", data)
    stack.link("/big.bin")
    wait_for(lambda: stack.wb.lookup(stack.tree.root, "big.bin") is None, what="record dropped")
    ent = stack.fs.resolve("/big.bin")
    assert ent.kind == "file"
    fh = stack.fs.open("/big.bin", os.O_RDONLY)
    try:
        for off, n in [(0, 10), (131071, 5), (4718590, 100000), (len(data) - 3, 100),
                       (1048576 * 3 + 1, 1048576 * 2)]:
            assert stack.fs.read(fh, n, off) == data[off:off + n]
    finally:
        stack.fs.release(fh)
    assert stack.read_file("/big.bin") == data


def test_tampered_download_gives_eio(stack, server):
    data = os.urandom(300000)
    stack.write_file("/t.bin", data)
    stack.link("/t.bin")
    wait_for(lambda: stack.wb.lookup(stack.tree.root, "t.bin") is None, what="record dropped")
    server.faults([{"where": "download", "tamper": True}])
    with pytest.raises(IntegrityError):
        stack.read_file("/t.bin")
    server.clear_faults()
    # A new open downloads afresh and succeeds.
    assert stack.read_file("/t.bin") == data


def test_rewrite_existing_remote_file_replaces_node(stack, tmp_path):
    stack.write_file("/r.txt", b"version one")
    first = stack.link("/r.txt")
    wait_for(lambda: stack.wb.lookup(stack.tree.root, "r.txt") is None, what="dropped")
    old_handle = stack.fs.resolve("/r.txt").node.handle
    # open without O_TRUNC: contents are brought down first, then patched
    fh = stack.fs.open("/r.txt", os.O_RDWR)
    stack.fs.write(fh, b"VERSION", 0)
    stack.fs.flush(fh)
    stack.fs.release(fh)
    second = stack.link("/r.txt")
    assert second != first
    assert _download(stack.client, second, tmp_path / "d") == b"VERSION one"
    names = stack.fresh_names()
    assert names["/r.txt"].handle != old_handle
    assert [p for p in names if p.startswith("/r")] == ["/r.txt"]


def test_open_for_write_without_change_uploads_nothing(stack):
    stack.write_file("/same.txt", b"abc")
    stack.link("/same.txt")
    wait_for(lambda: stack.wb.lookup(stack.tree.root, "same.txt") is None, what="dropped")
    handle = stack.fs.resolve("/same.txt").node.handle
    fh = stack.fs.open("/same.txt", os.O_RDWR)
    stack.fs.flush(fh)
    stack.fs.release(fh)
    assert stack.wb.lookup(stack.tree.root, "same.txt") is None
    assert stack.fs.resolve("/same.txt").node.handle == handle


def test_namespace_ops_round_trip(stack):
    stack.fs.mkdir("/d1")
    stack.fs.mkdir("/d1/sub")
    with pytest.raises(FsError) as ei:
        stack.fs.mkdir("/d1")
    assert ei.value.errno == errno.EEXIST
    stack.write_file("/d1/a.txt", b"a")
    stack.link("/d1/a.txt")
    stack.fs.rename("/d1/a.txt", "/d1/sub/b.txt")
    stack.fs.rename("/d1/sub", "/d2")
    names = stack.fresh_names()
    assert "/d2/b.txt" in names and "/d1/sub" not in names and "/d1/a.txt" not in names
    with pytest.raises(FsError) as ei:
        stack.fs.rmdir("/d2")
    assert ei.value.errno == errno.ENOTEMPTY
    stack.fs.unlink("/d2/b.txt")
    stack.fs.rmdir("/d2")
    stack.fs.rmdir("/d1")
    names = stack.fresh_names()
    assert not [p for p in names if p.startswith("/d")]


def test_rename_pending_file_and_onto_existing(stack, tmp_path):
    stack.write_file("/target.txt", b"old target")
    stack.link("/target.txt")
    stack.close()
    # A stack whose uploader is not running keeps the next file pending while we rename it.
    s1 = Stack(stack.api, stack.state_dir, start=False)
    fh = s1.fs.create("/pending.txt")
    s1.fs.write(fh, b"new data", 0)
    s1.fs.flush(fh)
    s1.fs.release(fh)
    s1.fs.rename("/pending.txt", "/target.txt")
    assert s1.fs.getxattr("/target.txt", "user.mega.state") == b"pending"
    assert s1.read_file("/target.txt") == b"new data"
    with pytest.raises(FsError):
        s1.fs.resolve("/pending.txt")
    s1.close()
    # The queue survives in its database; a new stack (a remount) finishes the upload.
    s = Stack(stack.api, stack.state_dir)
    try:
        link = s.link("/target.txt")
        assert _download(s.client, link, tmp_path / "x") == b"new data"
        wait_for(lambda: s.wb.lookup(s.tree.root, "target.txt") is None, what="done")
        names = s.fresh_names()
        assert [p for p in names if p.endswith(".txt")] == ["/target.txt"]
    finally:
        s.close()


def test_unlink_pending_cancels_upload(server, tmp_path):
    s = Stack(server.url, str(tmp_path / "state"), start=False)
    try:
        fh = s.fs.create("/gone.txt")
        s.fs.write(fh, b"bye", 0)
        s.fs.flush(fh)
        s.fs.release(fh)
        rec = s.wb.lookup(s.tree.root, "gone.txt")
        assert os.path.exists(rec.staged)
        s.fs.unlink("/gone.txt")
        assert not os.path.exists(rec.staged)
        db = sqlite3.connect(os.path.join(s.mount_dir, "queue.sqlite"))
        assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0
        db.close()
    finally:
        s.close()


def test_links_and_xattrs(stack):
    stack.write_file("/x.txt", b"hello")
    link = stack.fs.getxattr("/x.txt", "user.mega.link").decode()
    assert stack.link("/x.txt") == link
    assert set(stack.fs.listxattr("/x.txt")) >= {"user.mega.link", "user.mega.state",
                                                 "user.mega.handle"}
    with pytest.raises(FsError) as ei:
        stack.fs.setxattr("/x.txt", "user.other", b"1")
    assert ei.value.errno == errno.ENOTSUP
    with pytest.raises(FsError) as ei:
        stack.fs.getxattr("/x.txt", "user.other")
    assert ei.value.errno == errno.ENODATA
    for op in (lambda: stack.fs.unlink("/x.txt.link"),
               lambda: stack.fs.truncate("/x.txt.link", 0),
               lambda: stack.fs.open("/x.txt.link", os.O_WRONLY),
               lambda: stack.fs.rename("/x.txt.link", "/y"),
               lambda: stack.fs.create("/x.txt.link")):
        with pytest.raises(FsError) as ei:
            op()
        assert ei.value.errno == errno.EPERM
    assert stack.fs.getattr("/x.txt.link")["st_mode"] & 0o777 == 0o444


def test_real_file_named_link_wins(stack, tmp_path):
    stack.write_file("/a", b"data of a")
    link = stack.link("/a")
    # Through the mount, creating over a virtual .link is refused; another client can do it.
    from megafs.api.client import PutItem
    src = tmp_path / "real"
    src.write_bytes(b"i am real")
    up = stack.client.upload(str(src))
    (raw,) = stack.client.put_files([PutItem(stack.tree.root, up, {"n": "a.link"})])
    stack.tree.add_raw(raw)
    assert stack.read_file("/a.link") == b"i am real"
    assert stack.fs.getxattr("/a", "user.mega.link").decode() == link
    listing = stack.fs.readdir("/")
    assert listing.count("a.link") == 1 and "a.link.link" in listing


def test_names_too_long_and_unsupported(stack):
    with pytest.raises(FsError) as ei:
        stack.fs.create("/" + "n" * 256)
    assert ei.value.errno == errno.ENAMETOOLONG
    name = "/" + "é" * 127   # 254 bytes: fine; its .link name would be too long: xattr only
    stack.write_file(name, b"x")
    assert stack.fs.getxattr(name, "user.mega.link").startswith(b"https://mega.nz/file/")
    assert name[1:] + ".link" not in stack.fs.readdir("/")


def test_fsync_waits_for_upload(stack):
    fh = stack.fs.create("/sync.txt")
    stack.fs.write(fh, b"durable", 0)
    stack.fs.fsync(fh)  # returns only once uploaded, even with the handle still open
    assert stack.fs.getxattr("/sync.txt", "user.mega.state") == b"uploaded"
    names = stack.fresh_names()
    assert names["/sync.txt"].size == 7
    stack.fs.write(fh, b"D", 0)
    stack.fs.flush(fh)
    stack.fs.release(fh)
    stack.link("/sync.txt")


def test_quota_failure_then_retry(stack, server):
    server.control("quota", {"bytes": 10})
    stack.write_file("/q.bin", os.urandom(5000))
    with pytest.raises(FsError) as ei:
        stack.link("/q.bin")
    assert ei.value.errno == errno.EIO
    assert stack.fs.getxattr("/q.bin", "user.mega.state") == b"failed"
    assert b"-17" in stack.fs.getxattr("/q.bin", "user.mega.error")
    assert "user.mega.error" in stack.fs.listxattr("/q.bin")
    server.control("quota", {"bytes": 1 << 40})
    assert stack.wb.retry_failed() == 1
    assert stack.link("/q.bin")


def test_crash_after_put_is_not_repeated(server, tmp_path):
    """A put that succeeded right before a crash is adopted at recovery, not repeated."""
    state = str(tmp_path / "state")
    s = Stack(server.url, state)
    s.write_file("/once.txt", b"exactly once")
    s.link("/once.txt")
    rec_rows = sqlite3.connect(os.path.join(s.mount_dir, "queue.sqlite")).execute(
        "SELECT rid FROM records").fetchall()
    s.close()
    (rid,) = rec_rows[0]
    # Rewind the row to "put sent, answer lost" and restore the staged data.
    db = sqlite3.connect(os.path.join(s.mount_dir, "queue.sqlite"))
    with db:
        db.execute("UPDATE records SET state='uploading', handle=NULL, link=NULL, put_tried=1")
    db.close()
    with open(os.path.join(s.mount_dir, "staging", rid), "wb") as fh:
        fh.write(b"exactly once")
    s2 = Stack(server.url, state)
    try:
        assert s2.link("/once.txt")
        wait_for(lambda: s2.wb.lookup(s2.tree.root, "once.txt") is None, what="done")
        names = s2.fresh_names()
        assert [p for p in names if "once" in p] == ["/once.txt"]
        assert not os.listdir(os.path.join(s2.mount_dir, "staging"))
    finally:
        s2.close()


def test_concurrent_writers_and_reads_during_upload(stack, tmp_path):
    blobs = {"/c%d.bin" % i: os.urandom(200000 + i) for i in range(12)}

    def writer(path: str) -> None:
        stack.write_file(path, blobs[path])
    threads = [threading.Thread(target=writer, args=(p,)) for p in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for path, data in blobs.items():
        assert stack.read_file(path) == data  # staged or remote, same bytes
    for path, data in blobs.items():
        assert _download(stack.client, stack.link(path), tmp_path / "d") == data


def test_statfs_and_readdir(stack):
    st = stack.fs.statfs()
    assert st["f_namemax"] == 255 and st["f_blocks"] > 0
    stack.write_file("/ls.txt", b"12345")
    entries = stack.fs.readdir("/")
    assert "ls.txt" in entries and "ls.txt.link" in entries
    assert stack.fs.getattr("/ls.txt")["st_size"] == 5


def test_remote_change_poller(stack):
    from megafs.tree.changes import RemoteWatcher
    listing = stack.client.fetch()
    watcher = RemoteWatcher(stack.client, stack.tree, listing.sn, poll_timeout=5)
    watcher.start()
    other = MegaClient.open(api=stack.api, state_dir=stack.state_dir)
    try:
        other.mkdir(stack.tree.root, "from-elsewhere")
        wait_for(lambda: "from-elsewhere" in stack.fs.readdir("/"), timeout=20,
                 what="remote mkdir to show")
    finally:
        watcher.stop()
        other.close()


def test_errors_are_megafs_errors(stack):
    with pytest.raises(MegafsError):
        stack.fs.resolve("/missing/x")
    with pytest.raises(FsError) as ei:
        stack.fs.rmdir("/")
    assert ei.value.errno == errno.EBUSY


def test_rewrite_while_uploading_uploads_the_new_data_once(stack, server, tmp_path):
    """A file rewritten while its upload is in flight ends with the new data, one node."""
    server.faults([{"where": "upload", "delay": 0.5}])
    stack.write_file("/gen.bin", b"first version " * 50000)
    rec = stack.wb.lookup(stack.tree.root, "gen.bin")
    wait_for(lambda: rec.busy, timeout=10, what="upload in flight")
    fh = stack.fs.open("/gen.bin", os.O_WRONLY | os.O_TRUNC)
    stack.fs.write(fh, b"second", 0)
    stack.fs.flush(fh)
    stack.fs.release(fh)
    server.clear_faults()
    link = stack.link("/gen.bin")
    assert _download(stack.client, link, tmp_path / "g") == b"second"
    wait_for(lambda: stack.wb.lookup(stack.tree.root, "gen.bin") is None, what="dropped")
    names = stack.fresh_names()
    assert [p for p in names if p.startswith("/gen")] == ["/gen.bin"]
    assert names["/gen.bin"].size == 6


def test_fsync_reports_a_failed_upload(stack, server):
    server.control("quota", {"bytes": 10})
    fh = stack.fs.create("/nospace.bin")
    stack.fs.write(fh, os.urandom(5000), 0)
    with pytest.raises(FsError) as ei:
        stack.fs.fsync(fh)
    assert ei.value.errno == errno.EIO and "-17" in str(ei.value)
    stack.fs.release(fh)
    server.control("quota", {"bytes": 1 << 40})


def test_staging_a_big_file_does_not_block_the_namespace(stack, tmp_path):
    """Opening a remote file for writing downloads it outside the namespace lock; a rename
    of that file meanwhile makes the open start over (and fail, as the path is gone)."""
    from mount_support import run_with_timeout
    data = os.urandom(2 * 1048576 + 5)
    stack.write_file("/big.bin", data)
    stack.link("/big.bin")
    wait_for(lambda: stack.wb.lookup(stack.tree.root, "big.bin") is None, what="dropped")
    entered, gate = threading.Event(), threading.Event()
    original = stack.reads.fetch_to_file

    def gated(*args):
        entered.set()
        assert gate.wait(30)
        return original(*args)
    stack.reads.fetch_to_file = gated
    box: dict = {}

    def opener():
        try:
            box["fh"] = stack.fs.open("/big.bin", os.O_RDWR)
        except FsError as exc:
            box["err"] = exc
    t = threading.Thread(target=opener)
    t.start()
    assert entered.wait(10)
    # While the old contents download, other namespace operations go ahead.
    run_with_timeout(lambda: stack.write_file("/other.txt", b"other"), 10)
    run_with_timeout(lambda: stack.fs.mkdir("/dir"), 10)
    assert stack.fs.resolve("/big.bin").kind == "file"   # readers still see the remote file
    gate.set()
    t.join(30)
    fh = box["fh"]
    stack.fs.write(fh, b"HEAD", 0)
    stack.fs.flush(fh)
    stack.fs.release(fh)
    assert _download(stack.client, stack.link("/big.bin"), tmp_path / "b") == b"HEAD" + data[4:]
    # Renamed while being staged: the open starts over and finds the path gone.
    wait_for(lambda: stack.wb.lookup(stack.tree.root, "big.bin") is None, what="dropped")
    entered.clear()
    gate.clear()
    box.clear()
    t = threading.Thread(target=opener)
    t.start()
    assert entered.wait(10)
    stack.fs.rename("/big.bin", "/dir/big.bin")
    gate.set()
    t.join(30)
    assert box["err"].errno == errno.ENOENT
    assert stack.fs.resolve("/dir/big.bin").kind == "file"
    assert stack.wb.lookup(stack.tree.root, "big.bin") is None


def test_upload_into_a_folder_deleted_remotely_fails_and_keeps_data(server, tmp_path):
    s = Stack(server.url, str(tmp_path / "state"), start=False)
    try:
        s.fs.mkdir("/doomed")
        s.write_file("/doomed/orphan.txt", b"keep me")
        rec = s.wb.lookup(s.fs.resolve("/doomed").n.handle, "orphan.txt")
        folder = s.fs.resolve("/doomed").n.handle
        s.client.delete(folder)          # as another client would
        s.tree.remove(folder)
        s.wb.start()
        wait_for(lambda: rec.state == "failed", timeout=30, what="upload to fail")
        assert "-9" in (rec.error or "")
        assert open(rec.staged, "rb").read() == b"keep me"
    finally:
        s.close()
