"""Shared links survive everyday copies (issue 13 item 5): copying a file in again with the same
bytes keeps its node and its link (the old link keeps working, nothing is uploaded); new bytes
give a new link.  `rm -r DIR`, `mv DIR /elsewhere` and `cp -r` out and back in work, with and
without `-o show_links`."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from helpers.mount import MountProcess, fresh_listing, megafs, wait_for

pytestmark = pytest.mark.fuse


def _get(link: str, dest, api: str) -> bytes:
    megafs("get", link, "-o", str(dest), "--api", api, "--force")
    return dest.read_bytes()


def test_same_bytes_again_keep_node_and_link(tmp_path, server):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    data = os.urandom(700000)
    src = tmp_path / "photo.png"
    src.write_bytes(data)
    with MountProcess(mnt, server.url, state) as m:
        shutil.copy(src, mnt / "photo.png")
        link = (mnt / "photo.png.link").read_text().strip()
        handle = os.getxattr(mnt / "photo.png", "user.mega.handle")
        uploads = server.stats()
        for tool in (["cp", str(src), str(mnt / "photo.png")],
                     ["cp", "-p", str(src), str(mnt / "photo.png")],
                     ["rsync", "--inplace", "-I", str(src), str(mnt / "photo.png")]):
            subprocess.run(tool, check=True, timeout=60)
            assert (mnt / "photo.png.link").read_text().strip() == link, tool
            assert os.getxattr(mnt / "photo.png", "user.mega.handle") == handle
        # nothing was uploaded again, and the link already shared still gives the bytes
        after = server.stats()
        assert after["requests"].get("upload", 0) == uploads["requests"].get("upload", 0)
        assert _get(link, tmp_path / "back", server.url) == data
        # the mtime of the last copy went to MEGA (cp -p kept the source's)
        mtime = os.stat(mnt / "photo.png").st_mtime_ns
        wait_for(lambda: fresh_listing(server.url, state)["/photo.png"].mtime_ns == mtime,
                 timeout=30, what="the new mtime on MEGA")
        # new bytes: a new node and a new link; the old link stops working
        (mnt / "photo.png").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        new = (mnt / "photo.png.link").read_text().strip()
        assert new != link
        assert _get(new, tmp_path / "new", server.url)[-1] == data[-1] ^ 1
        res = megafs("get", link, "-o", str(tmp_path / "old"), "--api", server.url,
                     check=False)
        assert res.returncode == 1 and "no file behind this link" in res.stderr
        assert m.log_problems() == []


@pytest.mark.parametrize("show_links", [False, True])
def test_rm_r_mv_and_cp_r_round_trip(tmp_path, server, show_links):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    extra = ["-o", "show_links"] if show_links else []
    out = tmp_path / "out"
    out.mkdir()
    with MountProcess(mnt, server.url, state, extra=extra) as m:
        for folder in ("a", "b"):
            (mnt / folder).mkdir()
            for i in range(3):
                (mnt / folder / ("f%d.txt" % i)).write_text("%s %d\n" % (folder, i))
        links = {i: (mnt / "a" / ("f%d.txt.link" % i)).read_text() for i in range(3)}
        # cp -r out and back in (with show_links the .link files come along as real files)
        subprocess.run(["cp", "-r", str(mnt / "a"), str(out / "a")], check=True, timeout=60)
        assert (out / "a" / "f0.txt").read_text() == "a 0\n"
        assert (out / "a" / "f0.txt.link").exists() == show_links
        res = subprocess.run(["cp", "-r", str(out / "a"), str(mnt / "c")],
                             capture_output=True, text=True, timeout=60)
        assert (mnt / "c" / "f1.txt").read_text() == "a 1\n"
        if show_links:
            # documented limit: a copied-out X.link cannot be created again while X exists
            # (the kernel sees the virtual file and answers EEXIST to an exclusive create)
            # (when the copied-out X.link comes first in the folder, it is created as a real
            # file before X, and nothing fails)
            errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
            assert all(".link" in ln and "File exists" in ln for ln in errors), errors
            shutil.rmtree(out / "a")
            subprocess.run(["cp", "-r", str(mnt / "a"), str(out / "a")], check=True,
                           timeout=60)
            for name in os.listdir(out / "a"):
                if name.endswith(".link"):
                    os.unlink(out / "a" / name)
        else:
            assert res.returncode == 0, res.stderr
        res = subprocess.run(["cp", "-r", str(out / "a") + "/.", str(mnt / "a")],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        # the same bytes copied back in: the links already shared stay
        for i in range(3):
            assert (mnt / "a" / ("f%d.txt.link" % i)).read_text() == links[i]
        # mv DIR /elsewhere (another file system: copy, then remove) and rm -r DIR
        res = subprocess.run(["mv", str(mnt / "b"), str(out / "b")], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert (out / "b" / "f2.txt").read_text() == "b 2\n" and not (mnt / "b").exists()
        res = subprocess.run(["rm", "-r", str(mnt / "c")], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        # listed, a folder's DIR.link comes right before it too (a folder link, issue 25)
        assert os.listdir(mnt) == (["a.link", "a"] if show_links else ["a"])
        assert m.log_problems() == []
