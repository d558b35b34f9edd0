"""``megafs mount MNT --link FOLDERLINK`` (issue 25 item 4): a public folder link mounted
read-only without an account, against the real local server over HTTP with real crypto.

The link is made by an account of the server (``api/folderlink.export_folder``); the mount
opens it in the ``n=`` link session (no login, no session file), lists it from one ``f``, reads
through the mount's read cache (``g`` in the link session), refuses every write with EROFS and
follows the owner's changes (the link session's ``sc``)."""
from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from helpers.client import fast_retry, put
from helpers.mount import MountProcess, is_mounted, megafs, run_with_timeout, wait_for
from megafs.api.client import MegaClient
from megafs.api.folderlink import export_folder, parse_folder_link, revoke_folder


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    return str(tmp_path_factory.mktemp("owner"))


@pytest.fixture
def owner(module_server, account):
    module_server.clear_faults()
    with MegaClient.open(module_server.url, state_dir=account, retry=fast_retry()) as c:
        yield c


@pytest.fixture
def album(owner, tmp_path):
    """An exported folder: (folder handle, subfolder handle, contents by path, link)."""
    root = owner.fetch().roots()[2]
    folder = owner.mkdir(root, "album-%s" % os.urandom(3).hex())["h"]
    sub = owner.mkdir(folder, "extras")["h"]
    contents = {"a.txt": b"hello from the album\n", "big.bin": os.urandom(3 * 1048576 + 12345),
                "extras/c.txt": b"inside a subfolder\n"}
    put(owner, folder, tmp_path, "a.txt", contents["a.txt"])
    put(owner, folder, tmp_path, "big.bin", contents["big.bin"])
    put(owner, sub, tmp_path, "c.txt", contents["extras/c.txt"])
    return folder, sub, contents, export_folder(owner, folder)


def link_mount(tmp_path, module_server, url: str, *more: str) -> MountProcess:
    return MountProcess(tmp_path / "mnt", module_server.url, tmp_path / "reader-state",
                        extra=["--link", url, *more]).start()


def test_a_folder_link_mounts_read_only_and_reads_ranges(module_server, album, tmp_path):
    folder, _sub, contents, url = album
    m = link_mount(tmp_path, module_server, url, "--show-links")
    try:
        mnt = m.mnt
        assert sorted(os.listdir(mnt)) == ["a.txt", "a.txt.link", "big.bin", "big.bin.link",
                                           "extras", "extras.link"]
        # a ranged read in the middle of a file over 1 MiB fetches the blocks around it, not
        # the file
        before = module_server.stats().get("download_bytes", 0)
        with open(mnt / "big.bin", "rb") as fh:
            fh.seek(1_500_000)
            assert fh.read(70_000) == contents["big.bin"][1_500_000:1_570_000]
        fetched = module_server.stats().get("download_bytes", 0) - before
        assert 70_000 <= fetched <= 2 * 1048576 < len(contents["big.bin"])
        for path, data in contents.items():
            assert (mnt / path).read_bytes() == data
            assert os.stat(mnt / path).st_size == len(data)
        assert os.stat(mnt / "a.txt").st_mode & 0o777 == 0o444
        assert os.stat(mnt / "extras").st_mode & 0o777 == 0o555
        # X.link: the file's own link inside the folder link
        link = parse_folder_link(url)
        item = (mnt / "a.txt.link").read_text().strip()
        assert item.startswith(link.url() + "/file/")
        assert parse_folder_link(item).file == os.getxattr(mnt / "a.txt", "user.mega.handle"
                                                           ).decode()
        assert os.getxattr(mnt, "user.mega.link").decode() == link.url()
        status = json.loads(os.getxattr(mnt, "user.megafs.status"))
        assert status["files"] == [] and "read-only folder link" in status["notes"][0]
        shown = megafs("status", str(mnt), "--state-dir", str(tmp_path / "reader-state"))
        assert "mounted; 0 pending, 0 uploading, 0 failed" in shown.stdout
        assert "read-only folder link" in shown.stdout
        # no account and no session were made for the mount
        assert not list((tmp_path / "reader-state").glob("**/session*"))
        # every write: EROFS
        for argv in (["touch", "new.txt"], ["sh", "-c", "echo x > a.txt"],
                     ["sh", "-c", "echo x >> extras/c.txt"], ["mkdir", "newdir"],
                     ["mv", "a.txt", "b.txt"], ["rm", "a.txt"], ["rm", "-r", "extras"],
                     ["chmod", "600", "a.txt"], ["touch", "-d", "2001-01-01", "a.txt"]):
            done = subprocess.run(argv, cwd=mnt, capture_output=True, text=True, timeout=20)
            assert done.returncode != 0, argv
            assert "Read-only file system" in done.stderr, (argv, done.stderr)
        for call in (lambda: os.open(mnt / "a.txt", os.O_WRONLY),
                     lambda: os.setxattr(mnt / "a.txt", "user.x", b"1"),
                     lambda: os.removexattr(mnt / "a.txt", "user.x"),
                     lambda: os.symlink("a.txt", mnt / "sym")):
            with pytest.raises(OSError) as refused:
                call()
            assert refused.value.errno == errno.EROFS
        assert sorted(os.listdir(mnt / "extras")) == ["c.txt", "c.txt.link"]
        assert (mnt / "a.txt").read_bytes() == contents["a.txt"]
        assert " ro," in open("/proc/self/mounts").read().split(str(mnt), 1)[1].split("\n")[0]
        megafs("umount", str(mnt), "--state-dir", str(tmp_path / "reader-state"))
        assert not is_mounted(mnt)
    finally:
        m.stop()
    assert url.split("#", 1)[1] not in m.log()          # the link's key is never logged


@pytest.mark.log_ok("the folder link was revoked")
def test_the_owners_changes_show_and_a_revoked_link_fails_reads(module_server, owner, album,
                                                                tmp_path):
    folder, sub, contents, url = album
    m = link_mount(tmp_path, module_server, url)
    try:
        mnt = m.mnt
        assert (mnt / "a.txt").read_bytes() == contents["a.txt"]
        # both folders listed (twice: the kernel's readdir cache keeps them, fuse/dircache.py)
        for _ in range(2):
            assert "a.txt" in os.listdir(mnt) and "c.txt" in os.listdir(mnt / "extras")
        put(owner, sub, tmp_path, "late.txt", b"added by the owner\n", cr_for=folder)
        wait_for(lambda: (mnt / "extras" / "late.txt").exists(), timeout=10,
                 what="the owner's new file in the mount")
        wait_for(lambda: "late.txt" in os.listdir(mnt / "extras"), timeout=10,
                 what="the owner's new file in a listing")
        assert (mnt / "extras" / "late.txt").read_bytes() == b"added by the owner\n"
        nodes = {n["h"]: n for n in owner.fetch().nodes}
        a = next(n for n in nodes.values() if n.get("p") == folder and n["t"] == 0
                 and owner_name(owner, n) == "a.txt")
        owner.set_attrs(a["h"], owner.node_key(a), {"n": "renamed.txt"})
        wait_for(lambda: (mnt / "renamed.txt").exists() and not (mnt / "a.txt").exists(),
                 timeout=10, what="the owner's rename in the mount")
        wait_for(lambda: "renamed.txt" in os.listdir(mnt) and "a.txt" not in os.listdir(mnt),
                 timeout=10, what="the owner's rename in a listing")
        assert (mnt / "renamed.txt").read_bytes() == contents["a.txt"]
        c = next(n for n in nodes.values() if n.get("p") == sub and n["t"] == 0
                 and owner_name(owner, n) == "c.txt")
        owner.delete(c["h"])
        wait_for(lambda: "c.txt" not in os.listdir(mnt / "extras"), timeout=10,
                 what="the owner's removal in the mount")
        assert not (mnt / "extras" / "c.txt").exists()
        # revoked: one clear line, the mount empties, an open file's reads fail with ENOENT
        fh = os.open(mnt / "big.bin", os.O_RDONLY)
        try:
            assert os.pread(fh, 10, 0) == contents["big.bin"][:10]
            revoke_folder(owner, folder)
            wait_for(lambda: "folder link was revoked" in m.log(), timeout=10,
                     what="the revocation in the log")
            with pytest.raises(OSError) as gone:
                run_with_timeout(lambda: os.pread(fh, 10, 2_500_000), 20)
            assert gone.value.errno == errno.ENOENT
        finally:
            os.close(fh)
        assert os.listdir(mnt) == []
        # names the kernel had cached (for a minute) are gone at once too
        wait_for(lambda: not (mnt / "renamed.txt").exists(), timeout=5,
                 what="the cached name dropped")
        assert m.log().count("folder link was revoked") == 1
    finally:
        m.stop()


def owner_name(client: MegaClient, node: dict) -> str:
    from megafs import crypto
    return crypto.decrypt_attr(crypto.b64decode(node["a"]), client.node_key(node))["n"]


def test_a_bad_link_or_a_conflict_is_one_line_and_exit_1(module_server, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    base = ["mount", str(mnt), "--state-dir", str(tmp_path / "state"), "--foreground"]
    api = ["--api", module_server.url]
    gone = "https://mega.nz/folder/AbCdEf01#" + "A" * 22
    cases = [(api + ["--link", "https://mega.nz/folder/AbCd"], "not a MEGA folder link"),
             (api + ["--link", gone], "cannot open the folder link: there is no folder behind it"),
             (api + ["--link", gone, "--account", "a@b.c"], "without an account"),
             (["--link", gone, "--local"], "either link or local"),
             (api + ["-o", "link=" + gone + ",session=/x"], "either link or session"),
             (api + ["--link", gone + "/file/AbCdEf02"], "one item inside a folder link")]
    for more, message in cases:
        done = megafs(*base, *more, check=False, timeout=60)
        assert done.returncode == 1, (more, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (more, done.stderr)
        assert "Traceback" not in done.stderr and "A" * 22 not in done.stderr
