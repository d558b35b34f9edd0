"""Issue 24, items 7 and 8: a damaged upload queue and a full staging disk are named in one
line with what to do, never a Python exception name or a traceback, and nothing queued is
lost."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from helpers.mount import MountProcess, force_unmount, is_mounted, megafs

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
