"""Issue 24, items 7 and 8: a damaged upload queue and a full staging disk are named in one
line with what to do, never a Python exception name or a traceback, and nothing queued is
lost."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from helpers.mount import MountProcess, force_unmount, is_mounted, megafs, wait_for

pytestmark = pytest.mark.fuse


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for bad in ("Traceback", "DatabaseError", "OperationalError", "sqlite3"):
        assert bad not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
@pytest.mark.log_ok("unusable")
def test_a_damaged_queue_is_named_with_what_to_do(tmp_path, server):
    state = tmp_path / "state"
    mnt = tmp_path / "mnt"
    s = ["--state-dir", str(state)]
    m = MountProcess(mnt, server.url, state).start()
    try:
        server.faults([{"where": "upload", "delay": 30}])
        (mnt / "kept.bin").write_bytes(b"unsent bytes" * 1000)
        mount_dir = os.getxattr(mnt, "user.megafs.mountdir").decode()
        m.proc.send_signal(signal.SIGKILL)       # a dead mount with a queued file
        m.proc.wait(20)
        m.proc = None
        server.clear_faults()
        staged = os.listdir(os.path.join(mount_dir, "staging"))
        assert len(staged) == 1
        queue = os.path.join(mount_dir, "queue.sqlite")
        for extra in ("-wal", "-shm"):
            if os.path.exists(queue + extra):
                os.unlink(queue + extra)
        with open(queue, "wb") as fh:
            fh.write(b"this is not a database, it was overwritten" * 200)
        needles = ("upload queue %s is unusable (file is not a database)" % queue,
                   "mv %s %s.broken" % (mount_dir, mount_dir))
        _one_line(megafs("status", str(mnt), *s, check=False), *needles)
        _one_line(megafs("status", str(mnt), *s, "--json", check=False), *needles)
        _one_line(megafs("retry", str(mnt), *s, check=False), *needles)
        _one_line(megafs("umount", str(mnt), *s, check=False), *needles, "--no-wait")
        assert is_mounted(mnt)
        megafs("umount", str(mnt), *s, "--no-wait")
        assert not is_mounted(mnt)
        _one_line(megafs("mount", str(mnt), "--api", server.url, *s, check=False), *needles)
        _one_line(megafs("mount", str(mnt), "--api", server.url, *s, "-f", check=False),
                  *needles)
        assert not is_mounted(mnt)
        assert os.listdir(os.path.join(mount_dir, "staging")) == staged
        # what the message says works: the staged file is kept, the mount starts afresh
        os.rename(mount_dir, mount_dir + ".broken")
        megafs("mount", str(mnt), "--api", server.url, *s)
        assert is_mounted(mnt)
        megafs("umount", str(mnt), *s)
        with open(os.path.join(mount_dir + ".broken", "staging", staged[0]), "rb") as fh:
            assert fh.read() == b"unsent bytes" * 1000
    finally:
        if m.proc is not None:
            m.stop()
        force_unmount(mnt)


@pytest.mark.slow
@pytest.mark.log_ok("is full")
def test_a_full_staging_disk_is_named_and_the_queue_stays_healthy(tmp_path, server):
    """The state dir on a 20 MB tmpfs, no --staging-max: a copy larger than the disk fails
    with ENOSPC naming the full disk, the log has no sqlite exception, the queue keeps
    working (files written before and after upload) and status still reads it."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(state)],
                   check=True)
    mnt = tmp_path / "mnt"
    s = ["--state-dir", str(state)]
    try:
        with MountProcess(mnt, server.url, state,
                          log_path=tmp_path / "mount.log") as m:
            (mnt / "before.bin").write_bytes(os.urandom(100000))
            server.faults([{"where": "upload", "delay": 3}])   # keep the big copy staged
            src = tmp_path / "big.bin"
            src.write_bytes(os.urandom(30 << 20))
            res = subprocess.run(["cp", str(src), str(mnt / "big.bin")], capture_output=True,
                                 text=True, timeout=120)
            assert res.returncode != 0
            assert "No space left on device" in res.stderr, res.stderr
            assert "Input/output error" not in res.stderr, res.stderr
            server.clear_faults()
            log = m.log()
            assert "sqlite3" not in log and "OperationalError" not in log and \
                "Traceback" not in log, log[-3000:]
            full = [ln for ln in log.splitlines() if "is full" in ln]
            assert full and str(state) in full[0], log[-3000:]
            os.unlink(mnt / "big.bin")       # frees its staged copy once its upload stops

            def free() -> int:
                st = os.statvfs(state)
                return st.f_bavail * st.f_frsize
            wait_for(lambda: free() > 15 << 20, timeout=30, what="the staged copy removed")
            (mnt / "after.bin").write_bytes(os.urandom(100000))
            for name in ("before.bin", "after.bin"):
                wait_for(lambda: os.getxattr(mnt / name, "user.mega.state") == b"uploaded",
                         timeout=60, what=name + " uploaded")
            res = megafs("status", str(mnt), *s)
            assert "0 pending, 0 uploading, 0 failed" in res.stdout, res.stdout
            megafs("umount", str(mnt), *s)
    finally:
        force_unmount(mnt)
        subprocess.run(["umount", "-l", str(state)], check=False)
