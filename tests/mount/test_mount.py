"""Real FUSE mounts of ``megafs mount`` against the real local server (issue 4, item 12).

Every test mounts in a subprocess (tests/helpers/mount.py), drives it with ordinary tools and
system calls, and checks the result in a fresh listing from another client or by downloading
links with ``megafs get``.  Timeouts everywhere; the mount is always unmounted.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from megafs.api.client import MegaClient
from helpers.mount import (MountProcess, fresh_listing, has_xattr, is_mounted, megafs,
                           run_with_timeout, wait_for)

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

# Retries the transport logs while a test makes the server fail on purpose.
FAULT_NOISE = ("retry", "Retry", "upload of", "change feed", "failed", "refused", "attempt")


def sh(cmd: str, cwd: str | Path | None = None, timeout: float = 120.0,
       check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError("%s -> %d: %s" % (cmd, proc.returncode, proc.stderr))
    return proc


def get_link(link: str, dest: Path, api: str) -> bytes:
    megafs("get", link, "-o", str(dest), "--api", api, "--force")
    return dest.read_bytes()


@pytest.fixture
def mounted(server, tmp_path):
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state")
    m.start()
    yield m
    m.stop()


def test_copy_files_and_read_links_at_once(mounted, server, tmp_path):
    """cp x mnt/ && cat mnt/x.link prints the link; megafs get gives back the same bytes."""
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"empty": 0, "one": 1, "page.txt": 4096, "odd.bin": 131073, "mib.bin": 1048576,
             "five.bin": 5 * 1048576 + 3, "twenty.bin": 20 * 1048576 + 11}
    for name, size in sizes.items():
        (src / name).write_bytes(os.urandom(size))
    mnt = mounted.mnt
    links = {}
    for name in sizes:
        out = sh("cp %s %s/ && cat %s/%s.link" % (src / name, mnt, mnt, name), timeout=120)
        links[name] = out.stdout
        assert out.stdout.startswith("https://mega.nz/file/") and out.stdout.endswith("\n")
    for name, link in links.items():
        got = get_link(link.strip(), tmp_path / ("got-" + name), server.url)
        assert got == (src / name).read_bytes(), name
    # ls -l: sizes and modes; the .link files are reachable by name, not listed
    ls = sh("ls -l %s" % mnt).stdout
    for name, size in sizes.items():
        line = next(x for x in ls.splitlines() if x.endswith(" " + name))
        assert line.startswith("-rw-r--r--") and (" %d " % size) in line
        assert not any(x.endswith(".link") for x in ls.splitlines())
        lline = sh("ls -l %s/%s.link" % (mnt, name)).stdout
        assert lline.startswith("-r--r--r--") and (" %d " % len(links[name])) in lline
        assert os.stat(mnt / (name + ".link")).st_size == len(links[name])
    # xattrs
    p = str(mnt / "page.txt")
    assert os.getxattr(p, "user.mega.state") == b"uploaded"
    assert os.getxattr(p, "user.mega.link").decode() == links["page.txt"].strip()
    # read by name, never listed: copy tools would carry the link's key into every copy
    assert os.listxattr(p) == [] and os.listxattr(mnt) == []
    handle = os.getxattr(p, "user.mega.handle").decode()
    names = fresh_listing(server.url, mounted.state_dir)
    assert names["/page.txt"].handle == handle
    assert sorted(n for n in names) == sorted("/" + n for n in sizes)  # each exactly once
    # Reading back through the mount (remote ranged reads) gives the same bytes.
    for name in ("odd.bin", "twenty.bin"):
        assert (mnt / name).read_bytes() == (src / name).read_bytes()
    assert mounted.log_problems() == []


def test_namespace_round_trips(mounted, server):
    mnt = mounted.mnt
    (mnt / "dir1" / "sub").mkdir(parents=True)
    (mnt / "dir1" / "a.txt").write_bytes(b"alpha")
    assert (mnt / "dir1" / "a.txt.link").read_text().startswith("https://")
    os.rename(mnt / "dir1" / "a.txt", mnt / "dir1" / "sub" / "b.txt")
    os.rename(mnt / "dir1" / "sub", mnt / "moved")
    (mnt / "c.txt").write_bytes(b"c")
    os.rename(mnt / "c.txt", mnt / "moved" / "b.txt")   # onto an existing file: replaces it
    (mnt / "moved" / "b.txt.link").read_text()   # waits for the upload and its clean-up
    names = fresh_listing(server.url, mounted.state_dir)
    assert set(names) == {"/dir1", "/moved", "/moved/b.txt"}
    assert names["/moved/b.txt"].size == 1
    with pytest.raises(OSError) as ei:
        os.rmdir(mnt / "moved")
    assert ei.value.errno == errno.ENOTEMPTY
    os.unlink(mnt / "moved" / "b.txt")
    os.rmdir(mnt / "moved")
    os.rmdir(mnt / "dir1")
    assert fresh_listing(server.url, mounted.state_dir) == {}
    assert sorted(os.listdir(mnt)) == []
    assert mounted.log_problems() == []


def test_unsupported_and_readonly_operations(mounted):
    mnt = mounted.mnt
    (mnt / "f.txt").write_bytes(b"data")
    cases = [
        (lambda: os.symlink("g.txt", mnt / "f.txt"), errno.EEXIST),   # symlinks: issue 22
        (lambda: os.link(mnt / "f.txt", mnt / "hard"), errno.EPERM),
        (lambda: open(mnt / "f.txt.link", "w"), (errno.EPERM, errno.EACCES)),
        (lambda: os.truncate(mnt / "f.txt.link", 0), (errno.EPERM, errno.EACCES)),
        (lambda: os.rename(mnt / "f.txt.link", mnt / "g"), errno.EPERM),
        (lambda: os.setxattr(mnt / "f.txt", "user.mega.link", b"1"), errno.ENOTSUP),
        (lambda: os.setxattr(mnt / "f.txt", "trusted.x", b"1"), (errno.ENOTSUP, errno.EPERM)),
        (lambda: os.removexattr(mnt / "f.txt", "user.mega.link"), errno.ENOTSUP),
        (lambda: os.getxattr(mnt / "f.txt", "user.nothing"), errno.ENODATA),
        (lambda: open(mnt / ("n" * 256), "w"), errno.ENAMETOOLONG),
    ]
    for func, expected in cases:
        with pytest.raises(OSError) as ei:
            func()
        want = expected if isinstance(expected, tuple) else (expected,)
        assert ei.value.errno in want, (func, ei.value)
    os.chmod(mnt / "f.txt", 0o600)            # stored (issue 22)
    os.chown(mnt / "f.txt", os.getuid(), os.getgid())       # accepted, not stored
    assert (os.stat(mnt / "f.txt").st_mode & 0o777) == 0o600
    os.utime(mnt / "f.txt", (1000000000, 1000000000))
    wait_for(lambda: os.stat(mnt / "f.txt").st_mtime == 1000000000, timeout=10,
             what="mtime to be kept")
    (mnt / "f.txt.link").read_text()
    wait_for(lambda: fresh_listing(mounted.api, mounted.state_dir)["/f.txt"].mtime
             == 1000000000, timeout=20, what="mtime stored remotely (attribute t)")
    assert (mnt / ("é" * 127)).write_bytes(b"ok") == 2   # 254 bytes is fine
    st = os.statvfs(mnt)
    assert st.f_namemax == 255 and st.f_blocks > 0
    assert mounted.log_problems() == []


def test_remote_changes_appear(mounted, server, tmp_path):
    """Another client on the same session adds, renames and deletes; the mount follows."""
    mnt = mounted.mnt
    with MegaClient.open(api=server.url, state_dir=str(mounted.state_dir)) as other:
        listing = other.fetch()
        root = listing.roots()[2]
        folder = other.mkdir(root, "elsewhere")
        wait_for(lambda: "elsewhere" in os.listdir(mnt), timeout=15, what="remote mkdir")
        src = tmp_path / "x.bin"
        src.write_bytes(os.urandom(70000))
        from megafs.api.client import PutItem
        up = other.upload(str(src))
        (raw,) = other.put_files([PutItem(folder["h"], up, {"n": "x.bin"})])
        wait_for(lambda: (mnt / "elsewhere" / "x.bin").exists(), timeout=15,
                 what="remote file")
        assert (mnt / "elsewhere" / "x.bin").read_bytes() == src.read_bytes()
        assert (mnt / "elsewhere" / "x.bin.link").read_text().startswith("https://mega.nz/")
        # The kernel caches names and attributes for a minute: what another client changes
        # must show long before that (the change feed invalidates the cached entries).
        st = os.stat(mnt / "elsewhere" / "x.bin")
        node = other.fetch()
        from megafs.tree.nodes import time_attrs
        from megafs.tree.tree import Tree
        tree = Tree(other.session.master_key, other.session.user_handle)
        tree.load(node.nodes, node.public)
        x = tree.get(raw["h"])
        other.set_attrs(x.handle, x.key, time_attrs(st.st_mtime_ns + 86_400 * 10**9, x.attrs))
        wait_for(lambda: os.stat(mnt / "elsewhere" / "x.bin").st_mtime_ns
                 == st.st_mtime_ns + 86_400 * 10**9, timeout=10, what="remote touch")
        other.set_attrs(x.handle, x.key, dict(time_attrs(st.st_mtime_ns, x.attrs), n="y.bin"))
        wait_for(lambda: not (mnt / "elsewhere" / "x.bin").exists()
                 and (mnt / "elsewhere" / "y.bin").exists(), timeout=10, what="remote rename")
        other.delete(raw["h"])
        wait_for(lambda: not (mnt / "elsewhere" / "y.bin").exists(), timeout=10,
                 what="remote delete")
    assert mounted.log_problems() == []


def test_fsync_returns_after_upload(mounted, server):
    path = mounted.mnt / "synced.bin"
    data = os.urandom(300000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        run_with_timeout(lambda: os.fsync(fd), 60)
        # The file is still open, yet already a node on the server.
        names = fresh_listing(server.url, mounted.state_dir)
        assert names["/synced.bin"].size == len(data)
    finally:
        os.close(fd)
    assert os.getxattr(path, "user.mega.state") == b"uploaded"


@pytest.mark.log_ok("EOVERQUOTA")
def test_quota_failure_then_retry(mounted, server, tmp_path):
    mnt = mounted.mnt
    server.control("quota", {"bytes": 1000})
    (tmp_path / "q.bin").write_bytes(os.urandom(50000))
    shutil.copy(tmp_path / "q.bin", mnt / "q.bin")
    with pytest.raises(OSError) as ei:
        run_with_timeout(lambda: (mnt / "q.bin.link").read_text(), 60)
    assert ei.value.errno == errno.EIO
    assert os.getxattr(mnt / "q.bin", "user.mega.state") == b"failed"
    assert b"-17" in os.getxattr(mnt / "q.bin", "user.mega.error")
    status = megafs("status", str(mnt), "--state-dir", str(mounted.state_dir)).stdout
    assert "failed" in status and "q.bin" in status
    server.control("quota", {"bytes": 1 << 40})
    megafs("retry", str(mnt), "--state-dir", str(mounted.state_dir))
    link = run_with_timeout(lambda: (mnt / "q.bin.link").read_text(), 60).strip()
    assert get_link(link, tmp_path / "q.got", server.url) == (tmp_path / "q.bin").read_bytes()
    assert not has_xattr(mnt / "q.bin", "user.mega.error")


def test_kill9_during_upload_then_remount_completes_once(server, tmp_path):
    state = tmp_path / "state"
    m = MountProcess(tmp_path / "mnt", server.url, state)
    m.start()
    try:
        data = {"k%d.bin" % i: os.urandom(2 * 1048576 + i) for i in range(3)}
        # Slow every upload POST so the crash lands mid-upload.
        server.faults([{"where": "upload", "delay": 0.5}])
        for name, blob in data.items():
            (m.mnt / name).write_bytes(blob)
        wait_for(lambda: os.getxattr(m.mnt / "k0.bin", "user.mega.state") == b"uploading",
                 timeout=20, what="an upload in flight")
        m.kill9()
        server.clear_faults()
        assert not is_mounted(m.mnt)
        m2 = MountProcess(tmp_path / "mnt", server.url, state, log_path=tmp_path / "m2.log")
        m2.start()
        try:
            for name, blob in data.items():
                link = run_with_timeout(lambda: (m2.mnt / (name + ".link")).read_text(), 90)
                assert get_link(link.strip(), tmp_path / ("g" + name), server.url) == blob
            names = fresh_listing(server.url, state)
            assert sorted(names) == sorted("/" + n for n in data)   # none duplicated
            mdir = state / "mounts"
            wait_for(lambda: all(not os.listdir(d / "staging") for d in mdir.iterdir()),
                     timeout=10, what="staged data removed")
        finally:
            m2.stop()
    finally:
        m.stop()


@pytest.mark.log_ok("megafs.retry", "change feed")
def test_server_outage_writes_keep_working(server, tmp_path):
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state")
    m.start()
    try:
        (m.mnt / "before.txt").write_bytes(b"before")
        (m.mnt / "before.txt.link").read_text()
        server.stop()
        blobs = {"out%d.bin" % i: os.urandom(100000 * (i + 1)) for i in range(4)}
        for name, blob in blobs.items():   # staged locally while the server is down
            run_with_timeout(lambda: (m.mnt / name).write_bytes(blob), 30)
        assert run_with_timeout(lambda: (m.mnt / "out0.bin").read_bytes(), 30) == blobs["out0.bin"]
        assert os.getxattr(m.mnt / "out0.bin", "user.mega.state") in (b"pending", b"uploading")
        time.sleep(4)  # outage long enough for uploads to sit in their retry back-off
        server.start()
        for name, blob in blobs.items():
            link = run_with_timeout(lambda: (m.mnt / (name + ".link")).read_text(), 120)
            assert get_link(link.strip(), tmp_path / ("g" + name), server.url) == blob
        names = fresh_listing(server.url, m.state_dir)
        assert sorted(names) == sorted(["/before.txt"] + ["/" + n for n in blobs])
    finally:
        m.stop()


def test_umount_waits_for_uploads_and_fusermount_resumes(server, tmp_path):
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    m = MountProcess(mnt, server.url, state)
    m.start()
    try:
        # 1. plain fusermount -u with an upload that cannot finish yet: resumed at next mount
        server.faults([{"where": "upload", "http": 503}])
        (mnt / "later.bin").write_bytes(b"L" * 70000)
        assert os.getxattr(mnt / "later.bin", "user.mega.state") in (b"pending", b"uploading")
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=30)
        assert m.wait_exit(30) == 0
        status = json.loads(megafs("status", str(mnt), "--state-dir", str(state),
                                   "--json").stdout)
        assert [f["state"] for f in status["files"]] in (["pending"], ["uploading"])
        assert not status["mounted"] and status["files"][0]["path"] == "/later.bin"
        server.clear_faults()
        # 2. remount: it resumes; `megafs umount` waits until everything is uploaded
        m = MountProcess(mnt, server.url, state, log_path=tmp_path / "m2.log")
        m.start()
        server.faults([{"where": "upload", "delay": 1.5}])
        for i in range(3):
            (mnt / ("u%d.bin" % i)).write_bytes(os.urandom(400000))
        live = json.loads(megafs("status", str(mnt), "--state-dir", str(state), "--json").stdout)
        assert live["mounted"]
        paths = {f["path"] for f in live["files"]}
        assert paths and paths <= {"/later.bin", "/u0.bin", "/u1.bin", "/u2.bin"}
        assert all(f["state"] in ("pending", "uploading") for f in live["files"])
        out = megafs("umount", str(mnt), "--state-dir", str(state), timeout=120)
        assert not is_mounted(mnt)
        assert m.wait_exit(30) == 0
        names = fresh_listing(server.url, state)
        assert sorted(names) == ["/later.bin", "/u0.bin", "/u1.bin", "/u2.bin"]
        assert "unmounted" in out.stderr
    finally:
        server.clear_faults()
        m.stop()


@pytest.mark.log_ok("MAC mismatch")
def test_tampered_download_gives_eio(mounted, server, tmp_path):
    mnt = mounted.mnt
    blob = os.urandom(600000)
    (mnt / "t.bin").write_bytes(blob)
    (mnt / "t.bin.link").read_text()
    wait_for(lambda: has_xattr(mnt / "t.bin", "user.mega.handle"), what="uploaded")
    time.sleep(1.2)  # let the kernel's 1 s attribute cache of the staged copy expire
    server.faults([{"where": "download", "tamper": True}])
    with pytest.raises(OSError) as ei:
        run_with_timeout(lambda: (mnt / "t.bin").read_bytes(), 60)
    assert ei.value.errno == errno.EIO
    server.clear_faults()
    assert run_with_timeout(lambda: (mnt / "t.bin").read_bytes(), 60) == blob


def test_quick_start_local_daemon(tmp_path):
    """README quick start: mount --local (background), cp, cat .link, megafs get, umount."""
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    photo = tmp_path / "photo.png"
    photo.write_bytes(os.urandom(123457))
    try:
        megafs("mount", str(mnt), "--local", "--state-dir", str(state), timeout=60)
        assert is_mounted(mnt)
        link = sh("cp %s %s/ && cat %s/photo.png.link" % (photo, mnt, mnt)).stdout.strip()
        port = (state / "local-server.port").read_text().strip()
        got = get_link(link, tmp_path / "got.png", "http://127.0.0.1:%s/" % port)
        assert got == photo.read_bytes()
        megafs("umount", str(mnt), "--state-dir", str(state), timeout=60)
        assert not is_mounted(mnt)
    finally:
        from helpers.mount import force_unmount
        force_unmount(mnt)


def test_link_waits_for_writer_and_times_out(server, tmp_path):
    """X.link blocks while X is open for writing (bounded by --link-timeout -> ETIMEDOUT);
    close(2) makes the data durable (flush), the last release queues the upload."""
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state",
                     extra=["--link-timeout", "2"])
    m.start()
    try:
        fd = os.open(m.mnt / "open.txt", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"still writing")
            dup = os.dup(fd)
            os.close(dup)   # close of a dup: FUSE flush -> staged data + queue row on disk
            assert os.getxattr(m.mnt / "open.txt", "user.mega.state") == b"pending"
            with pytest.raises(OSError) as ei:
                run_with_timeout(lambda: (m.mnt / "open.txt.link").read_text(), 30)
            assert ei.value.errno == errno.ETIMEDOUT
            with pytest.raises(OSError) as ei:
                run_with_timeout(lambda: os.getxattr(m.mnt / "open.txt", "user.mega.link"), 30)
            assert ei.value.errno == errno.ETIMEDOUT
        finally:
            os.close(fd)
        link = run_with_timeout(lambda: (m.mnt / "open.txt.link").read_text(), 30)
        assert get_link(link.strip(), tmp_path / "o", server.url) == b"still writing"
    finally:
        m.stop()


def test_append_rename_while_uploading_and_odd_names(mounted, server, tmp_path):
    mnt = mounted.mnt
    # append to an uploaded file: its contents come down first
    (mnt / "cut.txt").write_bytes(b"0123456789")
    (mnt / "cut.txt.link").read_text()
    wait_for(lambda: has_xattr(mnt / "cut.txt", "user.mega.handle"), what="uploaded")
    os.truncate(mnt / "cut.txt", 4)                 # truncate(2) of an uploaded file
    link = (mnt / "cut.txt.link").read_text().strip()
    assert get_link(link, tmp_path / "cut", server.url) == b"0123"
    (mnt / "log.txt").write_bytes(b"line1\n")
    (mnt / "log.txt.link").read_text()
    wait_for(lambda: has_xattr(mnt / "log.txt", "user.mega.handle"), what="uploaded")
    time.sleep(1.1)  # kernel attribute cache (1 s) of the staged copy
    sh("echo line2 >> %s/log.txt" % mnt)
    link = (mnt / "log.txt.link").read_text().strip()
    assert get_link(link, tmp_path / "log", server.url) == b"line1\nline2\n"
    # rename of a file while its upload is in flight
    os.mkdir(mnt / "dest")
    server.faults([{"where": "upload", "delay": 0.4}])
    blob = os.urandom(1500000)
    (mnt / "moving.bin").write_bytes(blob)
    wait_for(lambda: os.getxattr(mnt / "moving.bin", "user.mega.state") == b"uploading",
             timeout=20, what="upload in flight")
    os.rename(mnt / "moving.bin", mnt / "dest" / "moved.bin")
    server.clear_faults()
    link = run_with_timeout(lambda: (mnt / "dest" / "moved.bin.link").read_text(), 60)
    assert get_link(link.strip(), tmp_path / "mv", server.url) == blob
    # names with spaces, newlines, emoji and 255 bytes
    odd = ["with space.txt", "new\nline", "emoji-\U0001F600.txt", "x" * 255]
    for name in odd:
        (mnt / name).write_bytes(name.encode())
    for name in odd[:3]:
        link = run_with_timeout(lambda: (mnt / (name + ".link")).read_text(), 60)
        assert get_link(link.strip(), tmp_path / "odd", server.url) == name.encode()
    assert os.getxattr(mnt / odd[3], "user.mega.link").startswith(b"https://mega.nz/file/")
    wait_for(lambda: set(fresh_listing(server.url, mounted.state_dir)) ==
             {"/cut.txt", "/log.txt", "/dest", "/dest/moved.bin"} | {"/" + n for n in odd},
             timeout=30, what="final listing")
    assert mounted.log_problems() == []


def test_second_mount_of_same_queue_is_refused(mounted, server, tmp_path):
    other = tmp_path / "mnt2"
    other.mkdir()
    proc = megafs("mount", str(other), "--api", server.url, "--state-dir",
                  str(mounted.state_dir), "--foreground", check=False, timeout=60)
    assert proc.returncode == 1 and "is already mounted at %s" % mounted.mnt in proc.stderr
    assert not is_mounted(other)
    # the runtime's lock names the holder too (a mount that skipped the registry check)
    from megafs.errors import FsError
    from megafs.mount.runtime import MountConfig, MountRuntime
    with pytest.raises(FsError, match="already mounted by the mount at %s" % mounted.mnt):
        MountRuntime(MountConfig(state_dir=str(mounted.state_dir), api=server.url)).__enter__()


def test_concurrent_processes_shared_file_and_reads_during_upload(mounted, server, tmp_path):
    mnt = mounted.mnt
    server.faults([{"where": "upload", "delay": 0.2}])   # keep uploads in flight meanwhile
    script = ("import os,sys\n"
              "d, k = sys.argv[1], int(sys.argv[2])\n"
              "for i in range(6):\n"
              "    data = (b'%d-%d|' % (k, i)) * (1000 * (i + 1))\n"
              "    open(os.path.join(d, 'p%d-%d.txt' % (k, i)), 'wb').write(data)\n"
              "    assert open(os.path.join(d, 'p%d-%d.txt' % (k, i)), 'rb').read() == data\n")
    procs = [subprocess.Popen([os.sys.executable, "-c", script, str(mnt), str(k)])
             for k in range(4)]
    for p in procs:
        assert p.wait(60) == 0
    # one file opened twice, written through both descriptors
    a = os.open(mnt / "twice.bin", os.O_RDWR | os.O_CREAT, 0o644)
    b = os.open(mnt / "twice.bin", os.O_RDWR)
    os.pwrite(a, b"A" * 100, 0)
    os.pwrite(b, b"B" * 100, 100)
    os.close(a)
    assert os.pread(b, 200, 0) == b"A" * 100 + b"B" * 100
    os.close(b)
    server.clear_faults()
    link = run_with_timeout(lambda: (mnt / "twice.bin.link").read_text(), 60).strip()
    assert get_link(link, tmp_path / "tw", server.url) == b"A" * 100 + b"B" * 100
    for k in range(4):
        for i in range(6):
            name = "p%d-%d.txt" % (k, i)
            run_with_timeout(lambda: (mnt / (name + ".link")).read_text(), 60)
    names = fresh_listing(server.url, mounted.state_dir)
    assert len([n for n in names if n.startswith("/p")]) == 24
    assert mounted.log_problems() == []


def test_hostile_remote_names_and_no_secrets_in_logs(mounted, server, tmp_path):
    """Remote names with '/', '..', NUL are shown escaped; logs hold no sid, key or link key."""
    mnt = mounted.mnt
    from megafs.api.client import PutItem
    src = tmp_path / "h.bin"
    src.write_bytes(b"hostile")
    with MegaClient.open(api=server.url, state_dir=str(mounted.state_dir)) as other:
        root = other.fetch().roots()[2]
        items = [PutItem(root, other.upload(str(src)), {"n": n})
                 for n in ("a/b", "..", "x\0y", "")]
        other.put_files(items)
        # duplicate names: the newest keeps the name, the other gets " (HANDLE)" before .ext
        first, second = other.put_files([PutItem(root, other.upload(str(src)), {"n": "dup.txt"})
                                         for _ in range(2)])
    older = min((first, second), key=lambda n: (n["ts"], n["h"]))
    want = {"a%2Fb", "%2E%2E", "x%00y", "%empty", "dup.txt", "dup (%s).txt" % older["h"]}
    wait_for(lambda: want <= set(os.listdir(mnt)), timeout=15, what="escaped names")
    for n in want:
        assert (mnt / n).read_bytes() == b"hostile"
        assert (mnt / (n + ".link")).read_text().startswith("https://mega.nz/file/")
    (mnt / "mine.txt").write_bytes(b"mine")
    link = (mnt / "mine.txt.link").read_text().strip()
    session_file = next((mounted.state_dir / "sessions").glob("*.json"))
    session = json.loads(session_file.read_text())
    assert (session_file.stat().st_mode & 0o777) == 0o600
    secrets_ = [session["sid"], session["master_key"], link.split("#", 1)[1]]
    secrets_ += [(mnt / (n + ".link")).read_text().strip().split("#", 1)[1] for n in want]
    logs = mounted.log() + server.log_path.read_text(errors="replace")
    for s in secrets_:
        assert s not in logs
    assert mounted.log_problems() == []


def test_local_mount_after_kill9_restarts_its_server(tmp_path):
    """kill -9 of a background --local mount: its server goes too, and the next mount works."""
    from helpers.mount import force_unmount
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        megafs("mount", str(mnt), "--local", "--state-dir", str(state), timeout=60)
        (mnt / "a.txt").write_bytes(b"first")
        reg = json.loads(next((state / "mounted").glob("*.json")).read_text())
        server_pid = int((state / "local-server.pid").read_text())
        os.kill(reg["pid"], 9)
        force_unmount(mnt)
        wait_for(lambda: not os.path.exists("/proc/%d" % server_pid) or
                 open("/proc/%d/stat" % server_pid).read().split()[2] == "Z",
                 timeout=15, what="the local server to stop with its mount")
        megafs("mount", str(mnt), "--local", "--state-dir", str(state), timeout=60)
        link = run_with_timeout(lambda: (mnt / "a.txt.link").read_text(), 60).strip()
        port = (state / "local-server.port").read_text().strip()
        assert get_link(link, tmp_path / "a", "http://127.0.0.1:%s/" % port) == b"first"
        assert sorted(os.listdir(mnt)) == ["a.txt"]
        megafs("umount", str(mnt), "--state-dir", str(state), timeout=60)
    finally:
        force_unmount(mnt)


def test_umount_of_a_dead_mount_does_not_wait(server, tmp_path):
    state = tmp_path / "state"
    m = MountProcess(tmp_path / "mnt", server.url, state)
    m.start()
    try:
        server.faults([{"where": "upload", "http": 503}])
        (m.mnt / "stuck.bin").write_bytes(b"s" * 1000)
        m.proc.send_signal(9)
        m.proc.wait(20)
        proc = megafs("umount", str(m.mnt), "--state-dir", str(state), timeout=60, check=False)
        assert "resume at the next mount" in proc.stderr
        assert not is_mounted(m.mnt)
    finally:
        server.clear_faults()
        m.stop()


@pytest.mark.log_ok("upload of", "megafs.retry")
def test_status_of_many_pending_files(mounted, server):
    """More unfinished files than fit in one xattr: `megafs status` still says mounted and
    lists every one of them."""
    server.faults([{"where": "upload", "http": 503}])
    try:
        for i in range(260):
            (mounted.mnt / ("p%03d" % i)).write_bytes(b"x" * 100)
        out = json.loads(megafs("status", str(mounted.mnt), "--state-dir",
                                str(mounted.state_dir), "--json").stdout)
        assert out["mounted"]
        assert sorted(f["path"] for f in out["files"]) == ["/p%03d" % i for i in range(260)]
    finally:
        server.clear_faults()
