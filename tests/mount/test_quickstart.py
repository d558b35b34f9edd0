"""The README's quick start: scripts/quickstart mounts with --local, copies files in, prints
their links and checks `megafs get --local` turns them back into the same bytes."""
from __future__ import annotations

import os
import re
import subprocess

from helpers.mount import ROOT, force_unmount, megafs

LINK = re.compile(r"^https://mega\.nz/file/[A-Za-z0-9_-]{8}#[A-Za-z0-9_-]{43}$")


def test_quickstart_script_mounts_copies_and_verifies(tmp_path):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    photo = tmp_path / "photo.png"
    photo.write_bytes(os.urandom(200000))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    env = dict(os.environ, MEGAFS_MOUNTPOINT=str(mnt), MEGAFS_STATE_DIR=str(state))
    try:
        proc = subprocess.run([str(ROOT / "scripts" / "quickstart"), str(photo), str(empty)],
                              capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = proc.stdout.split()
        assert len(lines) == 2 and all(LINK.match(line) for line in lines), proc.stdout
        assert (mnt / "photo.png.link").read_text() == lines[0] + "\n"
        assert "downloads back to the same bytes" in proc.stderr
        # the link works with an explicit download too, and gives the same bytes
        out = tmp_path / "again"
        megafs("get", "--local", "--state-dir", str(state), lines[0], "-o", str(out))
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
