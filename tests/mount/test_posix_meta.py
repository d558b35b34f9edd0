"""Modes, user xattrs, folder times and ``-o fsync=local`` through a real mount (issue 22,
items 3, 4, 6 and 7), driven by the programs people use: a program built in the mount runs,
``cp -p``/``cp -a``/``rsync -aX`` keep modes and xattrs (a second ``rsync -aX`` sends
nothing), a notmuch-style check sees a folder's mtime move with every entry change, and all of
it is still there after a remount."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from helpers.mount import MountProcess, wait_for

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]


def sh(cmd: str, cwd: str | Path | None = None, timeout: float = 120.0
       ) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, "%s -> %d: %s" % (cmd, proc.returncode, proc.stderr)
    return proc


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def settled(mnt: Path, *names: str) -> None:
    """Every named file is on MEGA with its last change."""
    for name in names:
        wait_for(lambda: os.getxattr(mnt / name, "user.mega.state") == b"uploaded", 60)


def test_modes_run_a_built_program_and_survive_a_remount(server, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    os.chmod(src / "tool.sh", 0o750)
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state")
    with m:
        mnt = m.mnt
        (mnt / "hello.c").write_text('#include <stdio.h>\nint main(void)'
                                     '{puts("built here");return 0;}\n')
        sh("cc -o app hello.c", cwd=mnt)          # created with the creat() mode 0777 & ~umask
        assert mode(mnt / "app") == 0o755
        assert sh("./app", cwd=mnt).stdout == "built here\n"
        (mnt / "run.sh").write_text("#!/bin/sh\necho script\n")
        with pytest.raises(PermissionError):
            subprocess.run([str(mnt / "run.sh")], check=False)
        sh("chmod 755 run.sh", cwd=mnt)
        assert sh("./run.sh", cwd=mnt).stdout == "script\n"
        (mnt / "secret").write_text("private")
        sh("chmod 600 secret", cwd=mnt)
        assert mode(mnt / "secret") == 0o600
        sh("cp -p %s %s/" % (src / "tool.sh", mnt))
        assert mode(mnt / "tool.sh") == 0o750
        sh("mkdir -m 700 priv && chmod 750 priv && mkdir open", cwd=mnt)
        assert mode(mnt / "priv") == 0o750 and mode(mnt / "open") == 0o755
        os.chown(mnt / "secret", os.getuid(), os.getgid())       # accepted, not stored
        os.chmod(mnt / "app", 0o4755)              # setuid from the cloud: never kept
        assert mode(mnt / "app") == 0o755
        settled(mnt, "app", "run.sh", "secret", "tool.sh")
    with m:
        mnt = m.mnt
        names = ("app", "run.sh", "secret", "tool.sh", "priv", "open", "hello.c")
        assert {n: mode(mnt / n) for n in names} == {
            "app": 0o755, "run.sh": 0o755, "secret": 0o600, "tool.sh": 0o750, "priv": 0o750,
            "open": 0o755, "hello.c": 0o644}
        assert sh("./app && ./tool.sh", cwd=mnt).stdout == "built here\ntool\n"
        assert m.log_problems() == []


def test_user_xattrs_round_trip_cp_a_and_rsync_ax(server, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "page.html").write_text("<p>saved</p>")
    os.setxattr(src / "page.html", "user.xdg.origin.url", b"https://example.org/p")
    (src / "sub" / "data.bin").write_bytes(os.urandom(5000))
    os.setxattr(src / "sub" / "data.bin", "user.checksum", b"\x00\x01binary")
    os.chmod(src / "sub" / "data.bin", 0o640)
    m = MountProcess(tmp_path / "mnt", server.url, tmp_path / "state")
    with m:
        mnt = m.mnt
        f = mnt / "note.txt"
        f.write_text("x")
        os.setxattr(f, "user.tag", b"red")                       # setfattr -n user.tag
        assert os.getxattr(f, "user.tag") == b"red"              # getfattr -n user.tag
        assert os.listxattr(f) == ["user.tag"]                   # never user.mega.*
        os.setxattr(f, "user.gone", b"1")
        os.removexattr(f, "user.gone")
        sh("cp -a %s %s/copied" % (src, mnt))
        assert os.getxattr(mnt / "copied" / "page.html", "user.xdg.origin.url") == \
            b"https://example.org/p"
        assert mode(mnt / "copied" / "sub" / "data.bin") == 0o640
        first = sh("rsync -aX --stats %s/ %s/synced/" % (src, mnt)).stdout
        assert "Number of regular files transferred: 2" in first
        again = sh("rsync -aXi --stats %s/ %s/synced/" % (src, mnt)).stdout
        assert "Number of regular files transferred: 0" in again, again
        assert [ln for ln in again.splitlines() if ln[:2] in (">f", "cd", ".f", ".d")] == [], \
            again
        # out of the mount: cp -a carries user xattrs but never megafs's link keys
        sh("cp -a %s/copied %s/back" % (mnt, tmp_path))
        assert os.listxattr(tmp_path / "back" / "page.html") == ["user.xdg.origin.url"]
        settled(mnt, "note.txt", "copied/page.html", "synced/sub/data.bin")
    with m:
        mnt = m.mnt
        assert os.getxattr(mnt / "note.txt", "user.tag") == b"red"
        assert os.listxattr(mnt / "note.txt") == ["user.tag"]
        assert os.getxattr(mnt / "synced" / "sub" / "data.bin", "user.checksum") == \
            b"\x00\x01binary"
        again = sh("rsync -aXi --stats %s/ %s/synced/" % (src, mnt)).stdout
        assert "Number of regular files transferred: 0" in again, again
        assert m.log_problems() == []


def test_folder_mtime_moves_with_its_entries_notmuch_style(server, tmp_path):
    """notmuch new, make and sync tools rescan a folder only when its mtime changed."""
    with MountProcess(tmp_path / "mnt", server.url, tmp_path / "state") as m:
        box = m.mnt / "Maildir" / "new"
        box.mkdir(parents=True)
        seen = [os.stat(box).st_mtime_ns]

        def moved() -> None:
            st = os.stat(box)
            assert st.st_mtime_ns > seen[-1] and st.st_ctime_ns >= st.st_mtime_ns
            seen.append(st.st_mtime_ns)
        for step in ("create", "rename", "unlink", "mkdir", "rmdir"):
            time.sleep(0.01)
            if step == "create":
                (box / "1.msg").write_text("mail")
            elif step == "rename":
                os.rename(box / "1.msg", box / "1.msg:2,S")
            elif step == "unlink":
                os.unlink(box / "1.msg:2,S")
            elif step == "mkdir":
                os.mkdir(box / "tmp")
            else:
                os.rmdir(box / "tmp")
            moved()
        # moving an entry out changes both folders
        (box / "2.msg").write_text("mail")
        other = os.stat(m.mnt / "Maildir").st_mtime_ns
        time.sleep(0.01)
        os.rename(box / "2.msg", m.mnt / "Maildir" / "2.msg")
        moved()
        assert os.stat(m.mnt / "Maildir").st_mtime_ns > other
        assert m.log_problems() == []


def test_folder_times_survive_a_remount(server, tmp_path):
    """A local disk keeps a folder's mtime across a reboot: the times entry changes gave
    folders (kept in the mount dir, 0600) and `touch -d` of a folder (on MEGA for a folder,
    locally for the mount root) come back after a remount, to the nanosecond."""
    state = tmp_path / "state"
    with MountProcess(tmp_path / "mnt", server.url, state) as m:
        mnt = m.mnt
        for name in ("made", "unlinked", "renamed", "moved", "touched", "sub"):
            (mnt / name).mkdir()
        (mnt / "unlinked" / "x").write_text("x")
        (mnt / "renamed" / "x").write_text("x")
        (mnt / "sub" / "inner").mkdir()
        time.sleep(0.05)
        (mnt / "made" / "new.txt").write_text("new")
        os.unlink(mnt / "unlinked" / "x")
        os.rename(mnt / "renamed" / "x", mnt / "renamed" / "y")
        os.rename(mnt / "sub" / "inner", mnt / "moved" / "inner")
        os.rmdir(mnt / "moved" / "inner")
        sh("touch -d '2001-02-03 04:05:06.789' touched", cwd=mnt)
        (mnt / "f").write_text("root entry")
        sh("touch -d '2002-03-04 05:06:07' .", cwd=mnt)
        names = ["made", "unlinked", "renamed", "moved", "touched", "sub", "."]
        before = {n: os.stat(mnt / n).st_mtime_ns for n in names}
        assert before["touched"] % 10**9 == 789000000
        assert before["touched"] // 10**9 == int(sh("date -d '2001-02-03 04:05:06' +%s")
                                                 .stdout)
        assert before["."] // 10**9 == int(sh("date -d '2002-03-04 05:06:07' +%s").stdout)
        m.stop()
        kept = list(state.glob("**/folder-times.sqlite"))
        assert len(kept) == 1 and stat.S_IMODE(os.stat(kept[0]).st_mode) == 0o600
        m.start()
        after = {n: os.stat(mnt / n).st_mtime_ns for n in names}
        assert after == before
        # a later change still moves the time on
        (mnt / "made" / "more.txt").write_text("more")
        assert os.stat(mnt / "made").st_mtime_ns > before["made"]
        assert m.log_problems() == []


def test_fsync_local_is_durable_here_and_the_upload_follows(server, tmp_path):
    with MountProcess(tmp_path / "mnt", server.url, tmp_path / "state",
                      extra=["-o", "fsync=local"]) as m:
        path = m.mnt / "journal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"entry 1\n")
            os.fsync(fd)
            # still open for writing: no upload yet, fsync did not wait for one
            assert os.getxattr(path, "user.mega.state") == b"pending"
            os.write(fd, b"entry 2\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        settled(m.mnt, "journal")
        assert len(m.mnt.joinpath("journal.link").read_text()) > 20
        assert m.log_problems() == []


def test_symlinks_round_trip_cp_a_rsync_a_and_tar(server, tmp_path):
    """Issue 22 item 5: `cp -a` of a tree holding a symlink exited 1, `rsync -a` 23 and npm
    rolled back on its `.bin` links.  A symlink is a small file node holding its target with
    `mfs-lnk: "1"` (another client sees a file with the target path in it); megafs shows it as
    a symlink, and `cp -a`, `rsync -a` and `tar` carry it in and out, also after a remount."""
    src = tmp_path / "src"
    (src / "pkg" / "bin").mkdir(parents=True)
    (src / "pkg" / "bin" / "tool.js").write_text("#!/bin/sh\necho tool\n")
    os.chmod(src / "pkg" / "bin" / "tool.js", 0o755)
    (src / ".bin").mkdir()
    os.symlink("../pkg/bin/tool.js", src / ".bin" / "tool")
    os.symlink("/nonexistent/absolute target", src / "dangling")
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    with MountProcess(mnt, server.url, state) as m:
        os.symlink("pkg/bin/tool.js", mnt / "direct")
        assert os.readlink(mnt / "direct") == "pkg/bin/tool.js"
        assert stat.S_ISLNK(os.lstat(mnt / "direct").st_mode)
        with pytest.raises(FileExistsError):
            os.symlink("x", mnt / "direct")
        sh("cp -a %s/. %s/cp" % (src, mnt))
        sh("rsync -a %s/ %s/rs/" % (src, mnt))
        sh("tar -C %s -cf %s/t.tar . && mkdir %s/tar && tar -C %s/tar -xf %s/t.tar"
           % (src, tmp_path, mnt, mnt, tmp_path))
        for copy in ("cp", "rs", "tar"):
            link = mnt / copy / ".bin" / "tool"
            assert stat.S_ISLNK(os.lstat(link).st_mode), copy
            assert os.readlink(link) == "../pkg/bin/tool.js"
            assert sh(str(link)).stdout == "tool\n"          # followed by the kernel
            assert os.readlink(mnt / copy / "dangling") == "/nonexistent/absolute target"
        # a second rsync -a finds nothing to send
        assert sh("rsync -a --itemize-changes %s/ %s/rs/" % (src, mnt)).stdout.strip() == ""
        settled(mnt / "cp" / ".bin", "tool")
        m.stop()
        m.start()
        out = tmp_path / "out"
        sh("cp -a %s/cp %s" % (mnt, out))
        assert os.readlink(out / ".bin" / "tool") == "../pkg/bin/tool.js"
        assert os.readlink(mnt / "direct") == "pkg/bin/tool.js"
        assert m.log_problems() == []


def test_npm_install_of_a_package_with_a_bin_runs_it_after_a_remount(server, tmp_path):
    """Issue 22: `npm install` rolled back on its `node_modules/.bin` links.  Offline: a local
    package with a `bin` entry is packed outside the mount and installed from its tarball into
    a project in the mount; its bin runs through `.bin` and `npx`, also after a remount."""
    npm = shutil.which("npm")
    assert npm, "npm is missing (scripts/test installs Debian's npm when it is not there)"
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "package.json").write_text(json.dumps(
        {"name": "mfs-hello", "version": "1.0.0", "bin": {"mfs-hello": "cli.js"}}))
    (pkg / "cli.js").write_text("#!/usr/bin/env node\nconsole.log('hello from ' + "
                                "require('path').basename(process.cwd()));\n")
    env = dict(os.environ, npm_config_cache=str(tmp_path / "npm-cache"),
               npm_config_update_notifier="false", npm_config_audit="false",
               npm_config_fund="false", npm_config_offline="true")
    run = {"capture_output": True, "text": True, "timeout": 120, "env": env}
    packed = subprocess.run([npm, "pack", "--pack-destination", str(tmp_path), str(pkg)], **run)
    assert packed.returncode == 0, packed.stderr
    tgz = tmp_path / "mfs-hello-1.0.0.tgz"
    assert tgz.exists()
    with MountProcess(tmp_path / "mnt", server.url, tmp_path / "state") as m:
        proj = m.mnt / "proj"
        proj.mkdir()
        for cmd in (["init", "-y"], ["install", "--offline", "--no-audit", "--no-fund",
                                     str(tgz)]):
            done = subprocess.run([npm] + cmd, cwd=proj, **run)
            assert done.returncode == 0, (cmd, done.stdout, done.stderr)
        bin_link = proj / "node_modules" / ".bin" / "mfs-hello"
        assert os.readlink(bin_link) == "../mfs-hello/cli.js"
        assert mode(proj / "node_modules" / "mfs-hello" / "cli.js") & 0o111
        assert json.loads((proj / "package.json").read_text())["dependencies"]["mfs-hello"]
        assert sh(str(bin_link), cwd=proj).stdout == "hello from proj\n"
        m.stop()
        m.start()
        assert os.readlink(bin_link) == "../mfs-hello/cli.js"
        assert sh(str(bin_link), cwd=proj).stdout == "hello from proj\n"
        npx = subprocess.run([npm, "exec", "--offline", "--", "mfs-hello"], cwd=proj, **run)
        assert (npx.returncode, npx.stdout) == (0, "hello from proj\n"), npx.stderr
        assert m.log_problems() == []
