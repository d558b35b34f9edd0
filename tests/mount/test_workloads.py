"""Everyday tools through a real mount, each checked again after a remount (issue 9, item 7).

git, rsync, vim, sed, tar, touch, cp, sqlite3, shell ``>>`` loops, rename-over loops and a
reader racing a deleter: the workloads users of rclone mount, s3fs and gcsfuse report losing
data in.  Every test drives the real program against a real FUSE mount of the real local
server, checks the result, unmounts (``megafs umount`` waits for the uploads, or a bare
``fusermount -u`` leaves them to the next mount), mounts again with the same state dir and
checks again; the mount logs must hold no unexpected WARNING or ERROR.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import sqlite3
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from helpers.mount import (MountProcess, fresh_listing, has_xattr, megafs, run_with_timeout,
                           wait_for)

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

NS = 1_000_000_000


def sh(cmd: str | list[str], cwd: str | Path | None = None, timeout: float = 120.0,
       env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command; fail the test with its output if it exits non-zero."""
    args = ["bash", "-c", cmd] if isinstance(cmd, str) else cmd
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise AssertionError("%s -> %d\n%s\n%s" % (cmd, proc.returncode, proc.stdout[-2000:],
                                                   proc.stderr[-2000:]))
    return proc


class Mounted:
    """A mount of the test's server and state dir that can be remounted."""

    def __init__(self, server, tmp_path: Path) -> None:
        self.server = server
        self.state = tmp_path / "state"
        self.mnt = tmp_path / "mnt"
        self.tmp = tmp_path
        self.count = 0
        self.logs: list[MountProcess] = []
        self.m = self._start()

    def _start(self) -> MountProcess:
        self.count += 1
        m = MountProcess(self.mnt, self.server.url, self.state,
                         log_path=self.tmp / ("mount-%d.log" % self.count))
        m.start()
        self.logs.append(m)
        return m

    def remount(self, clean: bool = True) -> Path:
        """Unmount (``megafs umount``, or a bare fusermount if not ``clean``) and mount again."""
        if clean:
            megafs("umount", str(self.mnt), "--state-dir", str(self.state), timeout=180)
            self.m.wait_exit(30)
        self.m.stop()
        self.m = self._start()
        return self.mnt

    def problems(self) -> list[str]:
        return [line for m in self.logs for line in m.log_problems()]

    def close(self) -> None:
        self.m.stop()


@pytest.fixture
def mounted(server, tmp_path):
    m = Mounted(server, tmp_path)
    yield m
    m.close()
    assert m.problems() == []


def tree_of(root: Path) -> dict[str, tuple[bytes, int]]:
    """relative path -> (bytes, mtime in ns) of every file below ``root``."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            p = Path(folder) / name
            out[str(p.relative_to(root))] = (p.read_bytes(), os.stat(p).st_mtime_ns)
    return out


def git(args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd.parent)}
    return sh("git " + args, cwd=cwd, env=env).stdout


def test_git_quick_commits_clone_gc_fsck(mounted, tmp_path):
    mnt = mounted.mnt
    repo = mnt / "repo"
    repo.mkdir()
    git("init -q", repo)
    (repo / "f").write_text("0\n")
    git("add f", repo)
    git("commit -qm c0", repo)
    for i in range(1, 21):
        sh("echo %d >> f" % i, cwd=repo)
        git("commit -qam c%d" % i, repo)
    assert git("rev-list --count HEAD", repo).strip() == "21"
    git("clone -q %s %s" % (repo, mnt / "clone"), mnt)
    assert (mnt / "clone" / "f").read_text() == "".join("%d\n" % i for i in range(21))
    git("gc -q", repo)
    git("fsck --strict", repo)
    assert git("status --porcelain", repo) == ""          # no .link files show up
    mnt = mounted.remount(clean=False)
    assert git("rev-list --count HEAD", mnt / "repo").strip() == "21"
    git("fsck --strict", mnt / "repo")
    assert git("rev-list --count HEAD", mnt / "clone").strip() == "21"
    assert git("status --porcelain", mnt / "clone") == ""


def test_rsync_twice_with_delete_and_cp_a_round_trip(mounted, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(12):
        (src / ("f%d.txt" % i)).write_bytes(os.urandom(100 + 3000 * i))
    (src / "sub" / "deep.bin").write_bytes(os.urandom(200000))
    os.utime(src / "f1.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    dst = mounted.mnt / "dst"
    dst.mkdir()
    # -X too (issue 22): it exited 23 trying to remove megafs's read-only user.mega.* ones
    sh(["rsync", "-aX", "--delete", str(src) + "/", str(dst) + "/"])
    (src / "f0.txt").write_bytes(b"changed")
    (src / "f5.txt").unlink()
    (src / "new.txt").write_bytes(b"new")
    sh(["rsync", "-aX", "--delete", str(src) + "/", str(dst) + "/"])    # exit 0: nothing odd
    want = tree_of(src)
    assert tree_of(dst) == want
    # cp -a out of the mount and back in (no .link files come along)
    out = tmp_path / "out"
    sh(["cp", "-a", str(dst), str(out)])
    assert tree_of(out) == want
    # and no link key travels with the copies: megafs's attributes are not listed
    assert os.getxattr(dst / "f1.txt", "user.mega.link")
    assert [p for p in out.rglob("*") if os.listxattr(p)] == []
    sh(["cp", "-a", str(out), str(mounted.mnt / "again")])
    assert tree_of(mounted.mnt / "again") == want
    mnt = mounted.remount()
    assert tree_of(mnt / "dst") == want and tree_of(mnt / "again") == want
    # a third rsync after the remount finds nothing to change
    changes = sh(["rsync", "-aX", "--delete", "--itemize-changes", str(src) + "/",
                  str(mnt / "dst") + "/"]).stdout
    assert changes.strip() == ""


def test_vim_and_sed_edits_in_a_row(mounted):
    """vim writes a new file and renames it over (or rewrites in place); each edit must find
    the previous one's bytes and mtime, with no "changed since reading" surprises."""
    mnt = mounted.mnt
    path = mnt / "notes.txt"
    path.write_text("alpha\nbeta\ngamma\n")
    expected = ["alpha", "beta", "gamma"]
    for i in range(4):
        before = os.stat(path).st_mtime_ns
        sh(["vim", "-es", "-u", "NONE", "-i", "NONE", "-c", "%s/a/A/e",
            "-c", "call append('$', 'line %d')" % i, "-c", "wq", str(path)], timeout=60)
        expected = [line.replace("a", "A", 1) for line in expected] + ["line %d" % i]
        assert path.read_text() == "\n".join(expected) + "\n"
        assert os.stat(path).st_mtime_ns >= before
    for i in range(5):
        sh(["sed", "-i", "s/betA/betA%d/" % i, str(path)])
        expected = [line.replace("betA", "betA%d" % i, 1) for line in expected]
        assert path.read_text() == "\n".join(expected) + "\n"
    assert expected[1] == "betA43210"
    mtime = os.stat(path).st_mtime_ns
    time.sleep(1.5)                    # the upload ends: the mtime vim saw must not move
    assert os.stat(path).st_mtime_ns == mtime
    mnt = mounted.remount()
    assert (mnt / "notes.txt").read_text() == "\n".join(expected) + "\n"
    assert os.stat(mnt / "notes.txt").st_mtime_ns == mtime


def test_tar_x_cp_p_and_touch_keep_times(mounted, tmp_path):
    src = tmp_path / "tarsrc"
    src.mkdir()
    times = {}
    for i in range(6):
        p = src / ("t%d.dat" % i)
        p.write_bytes(os.urandom(1000 * i + 1))
        t = (1_500_000_000 + 86_400 * i) * NS + 123_456_789 * (i % 2)
        os.utime(p, ns=(t, t))
        times[p.name] = t
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname="x")
    mnt = mounted.mnt
    sh(["tar", "-xf", str(archive), "-C", str(mnt)])
    local = tmp_path / "local"
    local.mkdir()
    sh(["tar", "-xf", str(archive), "-C", str(local)])     # the archive's own precision
    original = dict(times)
    for name in times:
        times[name] = os.stat(local / "x" / name).st_mtime_ns
        assert os.stat(mnt / "x" / name).st_mtime_ns == times[name], name
    sh(["cp", "-p", str(src / "t3.dat"), str(mnt / "copied.dat")])
    assert os.stat(mnt / "copied.dat").st_mtime_ns == original["t3.dat"]
    # touch variants on a file being written, one waiting for upload and a remote one
    (mnt / "remote.txt").write_text("r")
    (mnt / "remote.txt.link").read_text()
    wait_for(lambda: has_xattr(mnt / "remote.txt", "user.mega.handle"), what="upload")
    sh(["touch", "-d", "2001-02-03 04:05:06.789", str(mnt / "remote.txt")])
    sh(["touch", "-m", "-d", "2002-02-03 04:05:06", str(mnt / "x" / "t0.dat")])
    (mnt / "pending.txt").write_text("p")
    sh(["touch", "-d", "2003-01-01 00:00:00.5", str(mnt / "pending.txt")])
    fd = os.open(mnt / "open.txt", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"open")
    os.utime(fd, ns=(5 * NS, 1_234_567_890_123_456_789))   # futimens while open
    os.close(fd)
    sh(["touch", str(mnt / "new-empty")])
    expected = {
        "remote.txt": 981_173_106_789_000_000,
        "x/t0.dat": 1_012_709_106 * NS,
        "pending.txt": 1_041_379_200_500_000_000,
        "open.txt": 1_234_567_890_123_456_789,
    }
    for rel, t in expected.items():
        assert os.stat(mnt / rel).st_mtime_ns == t, rel
    time.sleep(1.5)                       # uploads finish: mtimes must not move by themselves
    for rel, t in expected.items():
        assert os.stat(mnt / rel).st_mtime_ns == t, rel
    assert abs(os.stat(mnt / "new-empty").st_mtime_ns - time.time_ns()) < 60 * NS
    mnt = mounted.remount()
    for rel, t in expected.items():
        assert os.stat(mnt / rel).st_mtime_ns == t, rel
    for name, t in times.items():
        if name != "t0.dat":
            assert os.stat(mnt / "x" / name).st_mtime_ns == t, name
    # what MEGA stores is the same second (t attribute and the c fingerprint's mtime)
    nodes = fresh_listing(mounted.server.url, mounted.state)
    assert nodes["/remote.txt"].mtime == 981_173_106


def test_sqlite_wal(mounted):
    db_path = mounted.mnt / "db.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    for batch in range(10):
        with db:
            db.executemany("INSERT INTO t (v) VALUES (?)",
                           [("row %d %s" % (batch, "x" * (i % 50)),) for i in range(100)])
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    mnt = mounted.remount()
    db = sqlite3.connect(mnt / "db.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1000
    db.close()


def test_shell_append_loop_and_rename_over_loop(mounted):
    mnt = mounted.mnt
    rnd = random.Random(7)
    lines = []
    for i in range(150):
        sh("echo 'line %d' >> %s" % (i, mnt / "log.txt")) if i % 10 == 0 else None
        if i % 10 != 0:
            with open(mnt / "log.txt", "a") as fh:
                fh.write("line %d\n" % i)
        lines.append("line %d\n" % i)
        time.sleep(rnd.random() * 0.024)
    assert (mnt / "log.txt").read_text() == "".join(lines)
    bad = []
    for i in range(120):
        (mnt / "ref.lock").write_text("v%d" % i)
        time.sleep(rnd.random() * 0.04)
        os.rename(mnt / "ref.lock", mnt / "ref")
        try:
            got = (mnt / "ref").read_text()
        except OSError as exc:
            got = repr(exc)
        if got != "v%d" % i:
            bad.append((i, got))
    assert bad == []
    assert sorted(os.listdir(mnt)) == ["log.txt", "ref"]
    mnt = mounted.remount(clean=False)
    assert (mnt / "log.txt").read_text() == "".join(lines)
    assert (mnt / "ref").read_text() == "v119"
    # the bare unmount left uploads to this mount: a link read waits for its file's upload
    for name in ("log.txt", "ref"):
        assert run_with_timeout(lambda: (mnt / (name + ".link")).read_text(), 120)
    nodes = fresh_listing(mounted.server.url, mounted.state)
    assert sorted(nodes) == ["/log.txt", "/ref"]        # one node per name


def test_reading_while_another_process_deletes_or_replaces(mounted):
    mnt = mounted.mnt
    blob = os.urandom(3 * 1048576 + 17)
    (mnt / "big.bin").write_bytes(blob)
    (mnt / "big.bin.link").read_text()
    for action in ("unlink", "rename-over"):
        (mnt / "big.bin").write_bytes(blob) if action == "rename-over" else None
        got: list[bytes] = []
        started = threading.Event()

        def reader() -> None:
            with open(mnt / "big.bin", "rb", buffering=0) as fh:
                got.append(fh.read(65536))
                started.set()
                time.sleep(0.5)
                while True:
                    chunk = fh.read(65536)
                    if not chunk:
                        break
                    got.append(chunk)
                    os.fstat(fh.fileno())
        t = threading.Thread(target=reader)
        t.start()
        assert started.wait(30)
        if action == "unlink":
            sh(["rm", str(mnt / "big.bin")])
            assert not (mnt / "big.bin").exists()
        else:
            (mnt / "other.bin").write_bytes(b"replacement")
            sh(["mv", str(mnt / "other.bin"), str(mnt / "big.bin")])
            assert (mnt / "big.bin").read_bytes() == b"replacement"
        t.join(60)
        assert b"".join(got) == blob, action
    mnt = mounted.remount()
    assert sorted(os.listdir(mnt)) == ["big.bin"]
    assert (mnt / "big.bin").read_bytes() == b"replacement"
    assert sorted(fresh_listing(mounted.server.url, mounted.state)) == ["/big.bin"]


def test_reopen_near_the_end_of_each_upload(mounted):
    """Write 8 bytes at offset 8*i, close, wait 10 ms, reopen O_RDWR: every write stays."""
    path = mounted.mnt / "grow.bin"
    expected = b""
    for i in range(80):
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        os.pwrite(fd, b"%08d" % i, 8 * i)
        if i % 7 == 0:
            os.fsync(fd)
        os.close(fd)
        expected += b"%08d" % i
        time.sleep(0.01)
    assert path.read_bytes() == expected
    mnt = mounted.remount(clean=False)
    assert (mnt / "grow.bin").read_bytes() == expected
    # opening O_RDWR and closing unchanged never leaves a file stuck "pending"
    for i in range(20):
        (mnt / ("s%d" % i)).write_bytes(b"s")
    for i in range(20):
        (mnt / ("s%d.link" % i)).read_text()
        os.close(os.open(mnt / ("s%d" % i), os.O_RDWR))
        (mnt / ("s%d" % i)).read_bytes()
    for i in range(20):
        assert run_with_timeout(lambda: (mnt / ("s%d.link" % i)).read_text(), 30)
    wait_for(lambda: "0 pending, 0 uploading" in megafs(
        "status", str(mnt), "--state-dir", str(mounted.state)).stdout, timeout=30,
        what="nothing pending")


def test_unlink_takes_effect_at_once(mounted):
    mnt = mounted.mnt
    (mnt / "d").mkdir()
    problems = []
    for i in range(40):
        (mnt / "d" / "x").write_bytes(os.urandom(50000))
        os.unlink(mnt / "d" / "x")
        try:
            fd = os.open(mnt / "d" / "x", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            os.unlink(mnt / "d" / "x")
            os.rmdir(mnt / "d")
            os.mkdir(mnt / "d")
        except OSError as exc:
            problems.append((i, exc))
    assert problems == []
    shutil.rmtree(mnt / "d")
    mnt = mounted.remount()
    assert os.listdir(mnt) == []
    assert fresh_listing(mounted.server.url, mounted.state) == {}


def test_atomic_save_is_atomic_for_readers(mounted):
    """Issue 22: one process saves with `write .t; mv .t x` while others read `x`.  Before,
    2,302 reads gave 21 ENOENT, 30 EAGAIN and 13 EIO: a reader whose path walk found the old
    file just before the rename opened libfuse's hidden name for it, gone or going by then.
    Every read must now give one whole version, old or new, never an error.

    The one exception is libfuse's, not megafs's: its high-level API maps the kernel's inode to
    a path before megafs is called, and an inode renamed over between the reader's lookup and
    its open has no path left (ESTALE); the kernel retries the open once, so a second save in
    that window under heavy load lets ESTALE through (seen 0-1 times per run at load 10, never
    idle).  It is counted apart and must stay rare (README, Semantics)."""
    import threading

    mnt = mounted.mnt
    version = lambda i: (("v%05d " % i) * 300).encode()        # noqa: E731
    (mnt / "x").write_bytes(version(0))
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]
    stale = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                data = (mnt / "x").read_bytes()
            except OSError as exc:
                if exc.errno == errno.ESTALE:
                    stale[0] += 1
                else:
                    errors.append(os.strerror(exc.errno or 0))
                continue
            reads[0] += 1
            if len(data) != 2100 or data != data[:7] * 300:
                errors.append("mixed or partial content: %r" % data[:30])
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(1, 121):
            (mnt / ".t").write_bytes(version(i))
            os.rename(mnt / ".t", mnt / "x")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert errors == [], (len(errors), sorted(set(errors)), reads[0])
    assert reads[0] > 100
    assert stale[0] <= max(2, reads[0] // 100), (stale[0], reads[0])
    assert (mnt / "x").read_bytes() == version(120)
    assert tree_of(mounted.remount())["x"][0] == version(120)
