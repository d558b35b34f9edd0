"""The kernel's readdir cache (issue 23, goal 3; megafs/fuse/dircache.py): a warm listing of an
unchanged folder sends no readdir at all, and a cached listing is never stale: after a create,
unlink, mkdir, rmdir, symlink or rename here (in, out of and within the folder), and after the
same changes made by another client (shown through the change feed), the next listing of the
folder shows them.  Real mounts against the real local server; the FUSE requests are counted
in libfuse's debug log (``--debug``)."""
from __future__ import annotations

import os
import subprocess

import pytest

from megafs.api.client import MegaClient, PutItem
from megafs.tree.tree import Tree
from helpers.client import folders_in_one_request
from helpers.mount import MountProcess, wait_for

pytestmark = [pytest.mark.fuse,
              pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

COUNT = 300


def names(folder) -> set[str]:
    """The names a listing of ``folder`` shows (readdir: the path the cache serves), without
    the virtual ``.link`` files."""
    return {n for n in os.listdir(folder) if not n.endswith(".link")}


def readdirs(m: MountProcess) -> int:
    """READDIR and READDIRPLUS requests the mount was sent so far."""
    return m.log().count("opcode: READDIR")


def cached(m: MountProcess, folder) -> set[str]:
    """The listing of ``folder``, checked to be served by the kernel alone once the folder is
    quiet: two listings in a row of which the second sends no readdir.  Our own uploads
    finishing in the background (a commit, a retire) change the folder's stamp, so a listing
    may legitimately be filled again until they are done; every listing must show the same."""
    first = names(folder)
    seen = []

    def kernel_alone() -> bool:
        before = readdirs(m)
        seen.append(names(folder))
        return readdirs(m) == before
    wait_for(kernel_alone, timeout=30, interval=0.2,
             what="a warm listing of an unchanged folder answered by the kernel alone")
    assert all(again == first for again in seen), (first, seen)
    return first


@pytest.fixture()
def big(server, tmp_path):
    """A mount (``--debug``) of an account whose folder ``big`` holds COUNT folders, and the
    account's folder handles."""
    state = tmp_path / "state"
    with MegaClient.open(api=server.url, state_dir=str(state)) as client:
        root = client.fetch().roots()[2]
        top = folders_in_one_request(client, root, "big", COUNT)
        other = client.mkdir(root, "other")["h"]
    m = MountProcess(tmp_path / "mnt", server.url, state, extra=["--debug"])
    m.start()
    try:
        yield m, {"root": root, "big": top, "other": other}
    finally:
        m.stop()


def test_warm_listing_is_the_kernels_and_follows_local_changes(big, tmp_path):
    m, _ = big
    assert "kernel readdir cache: on" in m.log()
    folder, other = m.mnt / "big", m.mnt / "other"
    expect = {"d%04d" % i for i in range(COUNT)}
    out = subprocess.run(["ls", "-l", str(folder)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out.count("\n") == COUNT + 1
    before = readdirs(m), m.log().count("opcode: LOOKUP")
    again = subprocess.run(["ls", "-l", str(folder)], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert again == out
    # no readdir, and no lookup per entry: the attributes came with the first listing
    assert (readdirs(m), m.log().count("opcode: LOOKUP")) == before
    assert cached(m, folder) == expect
    assert cached(m, other) == set()

    with open(folder / "new.txt", "w") as fh:
        fh.write("x")
    expect.add("new.txt")
    assert cached(m, folder) == expect
    os.mkdir(folder / "sub")
    expect.add("sub")
    assert cached(m, folder) == expect
    os.rename(folder / "new.txt", folder / "renamed.txt")
    expect = expect - {"new.txt"} | {"renamed.txt"}
    assert cached(m, folder) == expect
    os.rename(folder / "renamed.txt", other / "moved.txt")     # out of a cached folder
    expect.discard("renamed.txt")
    assert cached(m, folder) == expect
    assert cached(m, other) == {"moved.txt"}
    os.rename(other / "moved.txt", folder / "back.txt")        # into it
    expect.add("back.txt")
    assert cached(m, other) == set()
    assert cached(m, folder) == expect
    os.rename(folder / "d0000", other / "d0000")               # a folder out of it
    expect.discard("d0000")
    assert cached(m, folder) == expect
    assert cached(m, other) == {"d0000"}
    os.symlink("back.txt", folder / "link")
    expect.add("link")
    assert cached(m, folder) == expect
    for gone in ("back.txt", "link"):
        os.unlink(folder / gone)
        expect.discard(gone)
        assert cached(m, folder) == expect
    os.rmdir(folder / "sub")
    expect.discard("sub")
    assert cached(m, folder) == expect
    # an open folder read again from its start (rewinddir) after a change made meanwhile
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as it:
            assert {e.name for e in it if not e.name.endswith(".link")} == expect
        os.mkdir(folder / "while-open")
        with os.scandir(fd) as it:
            assert {e.name for e in it if not e.name.endswith(".link")} \
                == expect | {"while-open"}
    finally:
        os.close(fd)
    assert m.log_problems() == []


def test_cached_listing_shows_another_clients_changes(big, server):
    m, handles = big
    folder, other_dir = m.mnt / "big", m.mnt / "other"
    expect = {"d%04d" % i for i in range(COUNT)}
    assert cached(m, folder) == expect
    assert cached(m, other_dir) == set()

    def shows(path, wanted: set[str], what: str) -> None:
        # remote changes show within a second (README); the wait only bounds a broken run
        wait_for(lambda: names(path) == wanted, timeout=15, what=what)

    with MegaClient.open(api=server.url, state_dir=str(m.state_dir)) as client:
        src = m.state_dir / "one.bin"
        src.write_bytes(b"remote")
        (raw,) = client.put_files([PutItem(handles["big"], client.upload(str(src)),
                                           {"n": "remote.bin"})])
        expect.add("remote.bin")
        shows(folder, expect, "a file another client added")
        assert cached(m, folder) == expect
        made = client.mkdir(handles["big"], "remote-dir")
        expect.add("remote-dir")
        shows(folder, expect, "a folder another client made")
        assert cached(m, folder) == expect

        listing = client.fetch()
        tree = Tree(client.session.master_key, client.session.user_handle)
        tree.load(listing.nodes, listing.public)
        node = tree.get(raw["h"])
        client.set_attrs(node.handle, node.key, dict(node.attrs, n="renamed.bin"))
        expect = expect - {"remote.bin"} | {"renamed.bin"}
        shows(folder, expect, "a file another client renamed")
        assert cached(m, folder) == expect

        client.move(raw["h"], handles["other"])
        expect.discard("renamed.bin")
        shows(folder, expect, "a file another client moved away")
        shows(other_dir, {"renamed.bin"}, "a file another client moved in")
        assert cached(m, folder) == expect
        assert cached(m, other_dir) == {"renamed.bin"}

        client.delete(raw["h"])
        shows(other_dir, set(), "a file another client removed")
        client.delete(made["h"])
        expect.discard("remote-dir")
        shows(folder, expect, "a folder another client removed")
        assert cached(m, folder) == expect
    assert m.log_problems() == []
