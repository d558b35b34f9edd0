"""The README's quick start: scripts/quickstart mounts with --local, copies files in, prints
their links (local links that open in a browser) and checks `megafs get` turns them back into
the same bytes; a failure is one line and leaves no mount behind, also on Ctrl-C."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from megafs.server.datadir import TOKEN_HEADER, read_token
from helpers.mount import ROOT, force_unmount, is_mounted, megafs, wait_for

LINK = re.compile(r"^http://127\.0\.0\.1:\d+/file/[A-Za-z0-9_-]{8}#[A-Za-z0-9_-]{43}$")
QUICKSTART = str(ROOT / "scripts" / "quickstart")


def _run(args, env, timeout=300):
    return subprocess.run([QUICKSTART, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_quickstart_script_mounts_copies_and_verifies(tmp_path):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    photo = tmp_path / "photo.png"
    photo.write_bytes(os.urandom(200000))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    env = dict(os.environ, MEGAFS_MOUNTPOINT=str(mnt), MEGAFS_STATE_DIR=str(state))
    try:
        # a file that does not exist (the README's old first command): one line, no mount;
        # a name nobody leaves in the clone (a photo.png left there by hand broke this test)
        missing = "no-such-photo-%d.png" % os.getpid()
        proc = _run([missing], env)
        assert proc.returncode == 1 and not is_mounted(mnt)
        assert proc.stderr.strip().splitlines() == [
            "scripts/quickstart: %s: no such file; give files to copy in, or no "
            "argument for a sample" % missing]
        # without arguments: a sample file, its link printed
        proc = _run([], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(proc.stdout.split()) == 1 and LINK.match(proc.stdout.strip()), proc.stdout
        proc = _run([str(photo), str(empty)], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = proc.stdout.split()
        assert len(lines) == 2 and all(LINK.match(line) for line in lines), proc.stdout
        assert (mnt / "photo.png.link").read_text() == lines[0] + "\n"
        assert "downloads back to the same bytes" in proc.stderr
        assert "unmount with:" in proc.stderr.splitlines()[-1]
        # the local link works with an explicit download too (no --api/--local needed)
        out = tmp_path / "again"
        megafs("get", lines[0], "-o", str(out))
        assert out.read_bytes() == photo.read_bytes()
        megafs("umount", str(mnt), "--state-dir", str(state), timeout=120)
    finally:
        force_unmount(mnt)
    # without a running local server, --local is a one-line error, not a hang
    res = megafs("get", "--local", "--state-dir", str(state), lines[0], check=False, timeout=60)
    assert res.returncode == 1
    assert "local server" in res.stderr and "not running" in res.stderr
    res = megafs("get", "--local", "--state-dir", str(tmp_path / "none"), lines[0],
                 check=False, timeout=60)
    assert res.returncode == 1 and "no local server has run" in res.stderr
    res = megafs("get", lines[0], check=False, timeout=60)
    assert res.returncode == 1 and "cannot reach the MEGA API at http://127.0.0.1" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_quickstart_failures_leave_no_mount(tmp_path):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    env = dict(os.environ, MEGAFS_MOUNTPOINT=str(mnt), MEGAFS_STATE_DIR=str(state))
    mnt.mkdir()
    (mnt / "old").write_text("x")
    proc = _run([], env)                    # a mount point that is not empty: megafs says so
    assert proc.returncode == 1 and not is_mounted(mnt)
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "megafs mount: mount point %s is not empty" % mnt)
    (mnt / "old").unlink()
    # Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once mounted, while
    # the link waits for a slow upload: the mount this run made is removed
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    proc2 = subprocess.Popen([QUICKSTART, str(big)], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        wait_for(lambda: is_mounted(mnt), timeout=120, what="the quick start's mount")
        port = int((state / "local-server.port").read_text())
        import requests
        requests.post("http://127.0.0.1:%d/_megafs/faults" % port, timeout=10,
                      headers={TOKEN_HEADER: read_token(state / "local-server")},
                      json={"rules": [{"where": "upload", "delay": 60}]}).raise_for_status()
        wait_for(lambda: (mnt / "big.bin").exists(), timeout=60, what="the copy")
        time.sleep(1)
        os.killpg(proc2.pid, signal.SIGINT)
        _out, err = proc2.communicate(timeout=60)
        assert proc2.returncode == 130, err
        assert "interrupted" in err.decode()
        assert not is_mounted(mnt)
    finally:
        if proc2.poll() is None:
            os.killpg(proc2.pid, signal.SIGKILL)
            proc2.wait(10)
        force_unmount(mnt)
