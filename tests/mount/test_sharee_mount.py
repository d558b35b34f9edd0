"""A sharee's mount writes into the folders others share with it (issue 25 item 2), through a
real mount against the real local server, real crypto: account A shares folders with B at
each access level (meganz/sdk ``accesslevel_t``: 0 read-only, 1 read/write, 2 full) and B's
mount, under ``/Shared with me/A - FOLDER/``, copies files in, makes folders, renames and
deletes as far as the level allows (``vfs/sharedguard.py``); A's own client then lists the
share with its share keys and reads each file MAC-checked (every ``p``/``m`` of B's mount
keyed the nodes under the share key: ``tree/remote.py`` ``share_keys``).  A move between B's
own folders and a share is EXDEV, so ``mv`` copies and deletes; a read-only share answers
EROFS with one log line and shows no write bits; a file staged in a share when B's mount is
killed is uploaded with the right keys by the next mount."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers.accounts import full_account, put
from helpers.client import fast_retry
from helpers.mount import MountProcess, wait_for
from megafs.api import inshares
from megafs.api.client import MegaClient
from megafs.api.folderlink import owner_listing
from megafs.api.remotefile import FileMac
from megafs.api.session import Session
from megafs.api.transport import Transport
from megafs.crypto import FileKey
from megafs.tree.nodes import decrypt_node

pytestmark = pytest.mark.fuse

SHARED = "Shared with me"


def owner_sees(srv, session: Session, folder: str) -> dict[str, bytes | None]:
    """What the owner ``session`` has inside its folder ``folder``: path -> bytes (read and
    MAC-checked), None for a folder, ``?HANDLE`` for a node it cannot decrypt."""
    with MegaClient(Transport(srv.url, retry=fast_retry()), session) as client:
        listing = owner_listing(client)
        raws = {n["h"]: n for n in listing.fetched.nodes}
        out: dict[str, bytes | None] = {}
        for h, raw in raws.items():
            parts, up = [], raw
            while up["h"] != folder and up.get("p") in raws:
                node = decrypt_node(up, session.master_key, session.user_handle,
                                    listing.share_keys)
                parts.append(node.name if node.ok and node.name else "?" + up["h"])
                up = raws[up["p"]]
            if up["h"] != folder or not parts:
                continue
            node = decrypt_node(raw, session.master_key, session.user_handle,
                                listing.share_keys)
            path = "/".join(reversed(parts))
            if raw["t"] == 1 or not node.ok or node.key is None:
                out[path] = None
                continue
            info = client.open_download(handle=h)
            key = FileKey.unpack(node.key)
            data = client.read_range(info.url, key, 0, info.size) if info.size else b""
            if info.size:
                mac = FileMac(key, info.size)
                mac.add_block(0, data)
                mac.check(path)
            out[path] = data
        return out


def refused(call, code: int) -> None:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == code, (call, info.value)


def test_a_sharees_mount_writes_as_far_as_each_share_allows(tmp_path, server):
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    ann = full_account(server, "ann")
    bob = full_account(server, "bob", str(state))
    body, moved = os.urandom(150_000), os.urandom(40_000)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    with MegaClient(Transport(server.url, retry=fast_retry()), ann) as a:
        root = a.fetch().roots()[2]
        ro, rw, full = (a.mkdir(root, n)["h"] for n in ("ro", "rw", "full"))
        for folder in (ro, rw, full):
            put(a, folder, tmp_path, "theirs.txt", b"ann's\n")
        put(a, full, tmp_path, "edit.txt", b"ann wrote\n")
        for folder, level in ((ro, 0), (rw, 1), (full, 2)):
            inshares.share_folder(a, folder, bob.email, level)
    with MountProcess(mnt, server.url, state, extra=["--account", bob.email]) as m:
        shares = mnt / SHARED
        ro_dir, rw_dir, full_dir = (shares / ("%s - %s" % (ann.email, n))
                                    for n in ("ro", "rw", "full"))
        # read-only: no write bits in ls -l, every write EROFS
        assert os.stat(ro_dir / "theirs.txt").st_mode & 0o222 == 0
        assert os.stat(ro_dir).st_mode & 0o222 == 0
        assert os.stat(rw_dir / "theirs.txt").st_mode & stat.S_IWUSR
        listed = subprocess.run(["ls", "-ln", str(ro_dir), str(shares)], check=True,
                                capture_output=True, text=True).stdout.splitlines()
        modes = {line.split()[-1]: line.split()[0] for line in listed if line[:1] in ("-", "d")}
        assert modes["theirs.txt"] == "-r--r--r--" and modes["ro"] == "dr-xr-xr-x"
        assert modes["full"].startswith("drwx")
        refused(lambda: shutil.copyfile(src, ro_dir / "no.bin"), errno.EROFS)
        refused(lambda: (ro_dir / "theirs.txt").unlink(), errno.EROFS)
        refused(lambda: (shares / "new").mkdir(), errno.EROFS)
        # read/write: adds files and folders; changing what exists is EACCES
        shutil.copyfile(src, rw_dir / "from-bob.bin")
        (rw_dir / "sub").mkdir()
        (rw_dir / "sub" / "inner.txt").write_text("bob inside\n")
        refused(lambda: (rw_dir / "theirs.txt").unlink(), errno.EACCES)
        refused(lambda: os.rename(rw_dir / "theirs.txt", rw_dir / "mine.txt"), errno.EACCES)
        refused(lambda: open(rw_dir / "theirs.txt", "r+b"), errno.EACCES)
        refused(lambda: (rw_dir / "sub").rename(rw_dir / "sub2"), errno.EACCES)
        # full access: add, rename, delete; moves across the share boundary are copies
        shutil.copyfile(src, full_dir / "from-bob.bin")
        (full_dir / "dir").mkdir()
        os.rename(full_dir / "from-bob.bin", full_dir / "dir" / "renamed.bin")
        (full_dir / "theirs.txt").unlink()
        (full_dir / "gone").mkdir()
        (full_dir / "gone").rmdir()
        with open(full_dir / "edit.txt", "a") as fh:
            fh.write("bob added\n")
        os.symlink("dir/renamed.bin", full_dir / "shortcut")
        (mnt / "mine.bin").write_bytes(moved)
        refused(lambda: os.rename(mnt / "mine.bin", full_dir / "mine.bin"), errno.EXDEV)
        refused(lambda: os.rename(mnt / "mine.bin", ro_dir / "mine.bin"), errno.EROFS)
        refused(lambda: os.rename(full_dir, shares / "renamed"), errno.EROFS)
        refused(lambda: full_dir.rmdir(), errno.EROFS)
        subprocess.run(["mv", str(mnt / "mine.bin"), str(full_dir / "mine.bin")], check=True)
        assert not (mnt / "mine.bin").exists()
        refused(lambda: (full_dir / "dir" / "renamed.bin.link").read_text(), errno.EPERM)
        wait_for(lambda: owner_sees(server, ann, rw) == {
            "theirs.txt": b"ann's\n", "from-bob.bin": body, "sub": None,
            "sub/inner.txt": b"bob inside\n"}, timeout=30, what="A reading B's files in rw")
        wait_for(lambda: owner_sees(server, ann, full) == {
            "dir": None, "dir/renamed.bin": body, "mine.bin": moved,
            "edit.txt": b"ann wrote\nbob added\n", "shortcut": b"dir/renamed.bin"},
            timeout=30, what="A reading B's changes in full")
        for path in (rw_dir / "from-bob.bin", full_dir / "edit.txt"):
            wait_for(lambda: os.getxattr(path, "user.mega.state")
                     == b"uploaded", timeout=10, what="the queue done with %s" % path.name)
        assert os.readlink(full_dir / "shortcut") == "dir/renamed.bin"
        assert owner_sees(server, ann, ro) == {"theirs.txt": b"ann's\n"}
        assert os.listdir(mnt) == [SHARED]
        log = m.log()
        assert log.count("no.bin refused") == 1
        assert not m.log_problems(allowed=("refused", "EXDEV"))


def test_a_file_staged_in_a_share_is_uploaded_by_the_next_mount(tmp_path, server):
    """Killed with a file staged in a full-access share, B's next mount uploads it keyed
    under the share key: A reads it MAC-checked, once."""
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    ann = full_account(server, "ann")
    bob = full_account(server, "bob", str(state))
    with MegaClient(Transport(server.url, retry=fast_retry()), ann) as a:
        folder = a.mkdir(a.fetch().roots()[2], "full")["h"]
        inshares.share_folder(a, folder, bob.email, 2)
    body = os.urandom(2 * 1048576 + 7)
    m = MountProcess(mnt, server.url, state, extra=["--account", bob.email])
    m.start()
    try:
        target = mnt / SHARED / ("%s - full" % ann.email) / "staged.bin"
        server.faults([{"where": "upload", "delay": 0.5}])     # the crash lands mid-upload
        target.write_bytes(body)
        m.kill9()
        server.clear_faults()
        assert owner_sees(server, ann, folder) == {}
        m.start()
        wait_for(lambda: owner_sees(server, ann, folder) == {"staged.bin": body},
                 timeout=60, what="A reading the file B's next mount uploaded")
        assert Path(target).read_bytes() == body
        assert not m.log_problems(allowed=("refused",))
    finally:
        m.stop()
