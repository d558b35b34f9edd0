"""System integration (issue 13 item 6): `mount -t fuse.megafs` and an fstab line through the
`mount.megafs` helper (installed as /sbin/mount.fuse.megafs), the example systemd unit."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.mount import ROOT, force_unmount, is_mounted, megafs
from megafs.cli.fstab import translate

pytestmark = pytest.mark.fuse
HELPER = Path("/sbin/mount.fuse.megafs")


def test_translate_mount_helper_arguments():
    assert translate(["local", "/m", "-o", "rw,state_dir=/s,_netdev"]) == (
        ["mount", "/m", "--local", "-o", "rw,state_dir=/s,_netdev"], False)
    assert translate(["https://g.api.mega.co.nz/", "/m", "-n", "-s", "-v"]) == (
        ["mount", "/m", "--api", "https://g.api.mega.co.nz/", "-v"], False)
    assert translate(["megafs", "/m", "-ouploads=2", "-f", "-t", "fuse.megafs"]) == (
        ["mount", "/m", "-o", "uploads=2"], True)
    with pytest.raises(ValueError):
        translate(["/m"])
    with pytest.raises(ValueError):
        translate(["a", "/m", "--bogus"])


@pytest.fixture
def helper():
    """/sbin/mount.fuse.megafs -> this checkout's mount.megafs (removed again if we made it)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8)")
    script = Path(sys.executable).parent / "mount.megafs"
    if not script.exists():
        pytest.skip("mount.megafs is not installed in %s (pip install -e .)" % script.parent)
    made = False
    if not HELPER.exists():
        HELPER.symlink_to(script)
        made = True
    yield
    if made:
        HELPER.unlink()


def test_mount_t_fuse_megafs_and_fstab(tmp_path, helper):
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    mnt.mkdir()
    opts = "state_dir=%s,uploads=2,connections=2,_netdev,x-systemd.automount" % state
    res = subprocess.run(["mount", "-t", "fuse.megafs", "local", str(mnt), "-o", opts],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    try:
        assert res.returncode == 0, res.stderr
        assert is_mounted(mnt)
        (mnt / "a.txt").write_text("hello")
        assert (mnt / "a.txt.link").read_text().startswith("http://127.0.0.1:")
        megafs("umount", str(mnt), "--state-dir", str(state))
    finally:
        force_unmount(mnt)
    # a bad option: mount(8) fails with megafs' one line
    res = subprocess.run(["mount", "-t", "fuse.megafs", "local", str(mnt), "-o", "bogus"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "unknown mount option 'bogus'" in res.stderr
    assert not is_mounted(mnt)
    # an fstab line (a private fstab file: mount -T)
    fstab = tmp_path / "fstab"
    fstab.write_text("local %s fuse.megafs state_dir=%s,noauto,nofail 0 0\n" % (mnt, state))
    res = subprocess.run(["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True,
                         timeout=120)
    try:
        assert res.returncode == 0, res.stderr
        assert (mnt / "a.txt").read_text() == "hello"
    finally:
        megafs("umount", str(mnt), "--state-dir", str(state), check=False)
        force_unmount(mnt)


def test_systemd_unit_example_is_complete():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str          # type: ignore[assignment]
    unit.read(ROOT / "megafs" / "mount" / "examples" / "megafs.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert "--foreground" in service["ExecStart"] and "megafs mount" in service["ExecStart"]
    assert "megafs umount" in service["ExecStop"]
    assert unit["Install"]["WantedBy"]
    if shutil.which("systemd-analyze"):
        res = subprocess.run(["systemd-analyze", "verify", "--man=no",
                              str(ROOT / "megafs" / "mount" / "examples" / "megafs.service")],
                             capture_output=True, text=True, timeout=60)
        assert "Unknown" not in res.stderr and "Invalid" not in res.stderr, res.stderr
