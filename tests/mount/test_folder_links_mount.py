"""Folder links in the mount (issue 25 items 1-2) against the real local server over HTTP:
``cat DIR.link`` exports the folder (``s2`` + ``cr`` + ``l``) and a client without an account
reads it (``PublicFolder``, the ``n=`` session; ``megafs get``), nested files included; files
copied in, moved in (a folder with what is inside too), and written and uploaded later by the
write-back queue show through the link at once (their ``p``/``m`` carry the ``cr`` keys: the
local server refuses them with -14 otherwise); ``rm DIR.link`` revokes it (the link answers
-9) and reading ``DIR.link`` again makes a new one; ``user.mega.link`` on the folder; a remount
(from the node-tree cache, and from a fresh ``f``) keeps the folder exported and keeps adding
the keys; ``-o show_links`` lists ``DIR.link`` right before ``DIR``."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from helpers.mount import MountProcess, megafs, wait_for
from megafs.api.client import MegaClient
from megafs.api.folderlink import export_folder, parse_folder_link
from megafs.api.publicfolder import PublicFolder
from megafs.errors import ApiCode, MegaError

pytestmark = pytest.mark.fuse


def through_link(link: str, api: str, scratch: Path) -> dict[str, bytes | None]:
    """Every path the folder link shows: file bytes (downloaded, MAC-checked, into
    ``scratch``), None for a folder."""
    out: dict[str, bytes | None] = {}
    with PublicFolder(link, api=api) as folder:
        listing = folder.listing()
        for path, entry in listing.walk():
            if entry.type == 1:
                out[path] = None
                continue
            scratch.mkdir(exist_ok=True)
            dest = folder.download(entry, str(scratch / entry.handle))
            out[path] = Path(dest).read_bytes()
            os.unlink(dest)
    return out


def link_gone(link: str, api: str) -> bool:
    try:
        with PublicFolder(link, api=api) as folder:
            folder.listing()
    except MegaError as exc:
        return exc.code == ApiCode.ENOENT
    return False


def test_dir_link_exports_follows_and_revokes(tmp_path, server):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    outside = tmp_path / "outside.bin"
    outside.write_bytes(os.urandom(200_000))
    with MountProcess(mnt, server.url, state) as m:
        album = mnt / "album"
        (album / "extras").mkdir(parents=True)
        (album / "a.txt").write_text("first\n")
        (album / "extras" / "c.txt").write_text("nested\n")
        (mnt / "later").mkdir()
        (mnt / "later" / "inner.txt").write_text("moved in with its folder\n")
        (mnt / "loose.txt").write_text("moved in alone\n")
        assert not os.path.exists(mnt / "nothing.link")
        # reading DIR.link exports the folder; its size is known before (every folder link
        # of a mount has the same length)
        size = os.stat(mnt / "album.link").st_size
        link = (mnt / "album.link").read_text()
        assert link.endswith("\n") and len(link) == size
        link = link.strip()
        assert link.startswith("https://mega.nz/folder/") and parse_folder_link(link)
        assert (mnt / "album.link").read_text().strip() == link        # the same link again
        assert os.getxattr(album, "user.mega.link").decode() == link
        wait_for(lambda: through_link(link, server.url, tmp_path / "dl") == {
            "a.txt": b"first\n", "extras": None, "extras/c.txt": b"nested\n"},
            timeout=30, what="the folder through its link")
        # added after the export: copied in, moved in (a file, a folder with a file), made
        # and written here (uploaded later by the write-back queue)
        shutil.copy(outside, album / "copied.bin")
        os.rename(mnt / "loose.txt", album / "loose.txt")
        os.rename(mnt / "later", album / "extras" / "later")
        (album / "extras" / "new").mkdir()
        with open(album / "extras" / "new" / "written.txt", "w") as fh:
            fh.write("written after the export\n")
        expected = {"a.txt": b"first\n", "extras": None, "extras/c.txt": b"nested\n",
                    "copied.bin": outside.read_bytes(), "loose.txt": b"moved in alone\n",
                    "extras/later": None,
                    "extras/later/inner.txt": b"moved in with its folder\n",
                    "extras/new": None,
                    "extras/new/written.txt": b"written after the export\n"}
        wait_for(lambda: through_link(link, server.url, tmp_path / "dl") == expected, timeout=30,
                 what="the files added after the export through the link")
        # megafs get reads the mount's folder link too
        megafs("get", link, "-o", str(tmp_path / "got"), "--api", server.url)
        assert (tmp_path / "got" / "extras" / "later" / "inner.txt").read_bytes() == \
            b"moved in with its folder\n"
        # rm DIR.link revokes it; the folder and its files stay
        os.unlink(mnt / "album.link")
        assert link_gone(link, server.url)
        assert (album / "a.txt").read_text() == "first\n"
        assert os.path.exists(mnt / "album.link")          # virtual: there to read again
        # a new read is a new link, showing the same files
        fresh = (mnt / "album.link").read_text().strip()
        assert fresh != link and parse_folder_link(fresh).key != parse_folder_link(link).key
        assert through_link(fresh, server.url, tmp_path / "dl") == expected
        assert link_gone(link, server.url)
        # rm of a folder's .link without a link is fine; a .link is read-only; the mount
        # root has no folder link (MEGA shares no root)
        os.unlink(mnt / "album" / "extras.link")
        with pytest.raises(OSError) as ei:
            os.getxattr(mnt, "user.mega.link")
        assert ei.value.errno == errno.ENODATA
        with pytest.raises(PermissionError):
            (mnt / "album.link").write_text("x")
        assert m.log_problems() == []


def test_remount_keeps_the_folder_exported_and_keys_coming(tmp_path, server):
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    with MountProcess(mnt, server.url, state):
        (mnt / "album").mkdir()
        (mnt / "album" / "one.txt").write_text("1\n")
        link = (mnt / "album.link").read_text().strip()
    expected = {"one.txt": b"1\n"}
    # remount from the node-tree cache (the first time it may still catch up with the `s2`
    # packet, the second it holds every change: the share key comes from the cache), then
    # from a fresh `f` (no cache): the link is the same and new files still get their keys
    for step in ("two", "three", "four"):
        if step == "four":
            caches = list(state.rglob("tree.cache"))
            assert caches
            for cache in caches:
                cache.unlink()
        with MountProcess(mnt, server.url, state, extra=["-o", "show_links"]) as m:
            # written first: its key comes from what the mount kept or fetched (reading
            # album.link would tell the mount the share key again)
            (mnt / "album" / (step + ".txt")).write_text(step + "\n")
            expected[step + ".txt"] = (step + "\n").encode()
            wait_for(lambda: through_link(link, server.url, tmp_path / "dl") == expected,
                     timeout=30, what="a file added after a remount through the link")
            assert (mnt / "album.link").read_text().strip() == link
            names = os.listdir(mnt)
            assert names.index("album.link") == names.index("album") - 1
            assert m.log_problems() == []


def test_a_folder_another_client_exported_gets_the_keys(tmp_path, server):
    """Another client of the same account exports a folder (``api.folderlink``): the mount
    learns its share key from the ``s2`` action packet (checked with ``ha``), so files written
    in the mount right after show through that client's link (a ``p`` that left before the
    packet arrived is refused with -14 and sent again with the keys)."""
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    with MountProcess(mnt, server.url, state) as m:
        (mnt / "shared").mkdir()
        (mnt / "shared" / "old.txt").write_text("before\n")
        handle = os.getxattr(mnt / "shared", "user.mega.handle").decode()
        wait_for(lambda: os.getxattr(mnt / "shared" / "old.txt", "user.mega.state")
                 == b"uploaded", timeout=30, what="the upload")
        with MegaClient.open(api=server.url, state_dir=str(state)) as other:
            link = export_folder(other, handle)
        for i in range(3):
            (mnt / "shared" / ("new%d.txt" % i)).write_text("after %d\n" % i)
        expected = {"old.txt": b"before\n"}
        expected.update({"new%d.txt" % i: b"after %d\n" % i for i in range(3)})
        wait_for(lambda: through_link(link, server.url, tmp_path / "dl") == expected,
                 timeout=30, what="files written after another client's export")
        # the mount gives the same link
        assert (mnt / "shared.link").read_text().strip() == link
        assert m.log_problems() == []
