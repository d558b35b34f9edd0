"""Reads stay out of the write-back queue (issue 21 step 2), against the real local server.

A read-only open of a remote file holds its node (MEGA never changes a node's bytes) and makes
no staged file; the committer deletes no node being read, so a reader keeps the bytes it opened
through a rename over the name, a new version uploaded here, and (for what it already fetched)
another client's removal.  Built on the same stack as test_core.py (``MountRuntime`` without
FUSE).
"""
from __future__ import annotations

import errno
import os

import pytest

from megafs.api.client import MegaClient
from megafs.errors import FsError
from core.test_core import Stack
from helpers.mount import wait_for

BIG = 6 * 1048576 + 5      # past the first read and its read-ahead (3.5 MiB): the rest comes
#                            from the server after the name changed


@pytest.fixture
def stack(server, tmp_path):
    s = Stack(server.url, str(tmp_path / "state"))
    yield s
    s.close()


def _remote_file(stack: Stack, path: str, data: bytes) -> str:
    """``path`` on MEGA with no local state left; its node handle."""
    stack.write_file(path, data)
    stack.link(path)
    wait_for(lambda: stack.settled(path), what="the staged file to be retired")
    return stack.node(path).handle


def _server_handles(stack: Stack) -> set[str]:
    """Every node handle a fresh listing of the account shows."""
    return {node["h"] for node in stack.client.fetch().nodes}


def _read_rest(stack: Stack, fh: int, offset: int) -> bytes:
    out = []
    while True:
        chunk = stack.fs.read(fh, 1048576, offset)
        if not chunk:
            return b"".join(out)
        out.append(chunk)
        offset += len(chunk)


def test_reading_a_remote_file_leaves_the_write_back_queue_empty(stack):
    """`cat` of a remote file: no staged file (the queue's files, what `megafs status` and
    the rows come from) during or after the read; fstat and readlink of remote nodes too."""
    data = os.urandom(300000)
    _remote_file(stack, "/r.bin", data)
    assert stack.wb.files == {}
    fh = stack.fs.open("/r.bin", os.O_RDONLY)
    assert stack.fs.read(fh, 1000, 0) == data[:1000]
    assert stack.fs.getattr(None, fh)["st_size"] == len(data)
    assert stack.wb.files == {}, "a read-only open made a staged file"
    assert stack.staged("/r.bin") is None
    assert _read_rest(stack, fh, 1000) == data[1000:]
    assert stack.wb.control.snapshot() == []
    stack.fs.release(fh)
    os_link = "/l"
    stack.fs.symlink(os_link, "r.bin")
    wait_for(lambda: stack.settled(os_link), what="the symlink to be retired")
    assert stack.fs.readlink(os_link) == "r.bin"
    assert stack.wb.files == {}
    assert stack.core.io.readers._counts == {}


def test_a_reader_keeps_the_version_it_opened_through_a_save_over_it_and_its_upload(stack):
    """An atomic save (write t, mv t x) over a file being read, uploaded and exported: the
    reader reads the version it opened to the end (its node is not deleted while it reads);
    the old node goes once the reader closes."""
    old, new = os.urandom(BIG), os.urandom(1000)
    first = _remote_file(stack, "/x", old)
    fh = stack.fs.open("/x", os.O_RDONLY)
    assert stack.fs.read(fh, 65536, 0) == old[:65536]
    stack.write_file("/t", new)
    stack.fs.rename("/t", "/x")
    stack.link("/x")                                       # the new one is on MEGA, exported
    assert stack.read_file("/x") == new
    wait_for(lambda: stack.wb.state.ready == [] and not any(
        sf.busy for sf in stack.wb.files.values()), what="the committer to go idle")
    assert first in _server_handles(stack), "the node being read was deleted"
    stack.reads.forget(first)                              # every byte from the server again
    assert _read_rest(stack, fh, 65536) == old[65536:]
    assert stack.fs.getattr(None, fh)["st_size"] == len(old)
    stack.fs.release(fh)
    wait_for(lambda: first not in _server_handles(stack), timeout=20,
             what="the old node to be deleted after its reader left")
    wait_for(lambda: stack.wb.files == {}, what="the queue to empty")


def test_a_reader_of_a_file_rewritten_in_place_sees_the_writes(stack):
    """The same file written through another descriptor (O_TRUNC, then new bytes): the
    read-only descriptor sees the writes, as POSIX says for one file (it switches to the
    file's staged copy), and so no longer holds the old node, which goes with the upload."""
    old, new = os.urandom(BIG), os.urandom(BIG // 2)
    first = _remote_file(stack, "/v", old)
    reader = stack.fs.open("/v", os.O_RDONLY)
    assert stack.fs.read(reader, 4096, 0) == old[:4096]
    writer = stack.fs.open("/v", os.O_WRONLY | os.O_TRUNC)
    for off in range(0, len(new), 1048576):
        stack.fs.write(writer, new[off:off + 1048576], off)
    stack.fs.flush(writer)
    stack.fs.release(writer)
    assert stack.fs.getattr(None, reader)["st_size"] == len(new)
    assert _read_rest(stack, reader, 4096) == new[4096:]
    stack.link("/v")
    wait_for(lambda: first not in _server_handles(stack), timeout=20,
             what="the old version to be deleted while the reader reads the new one")
    assert _read_rest(stack, reader, 0) == new
    stack.fs.release(reader)
    assert stack.core.io.readers._counts == {}
    wait_for(lambda: stack.wb.files == {}, what="the queue to empty")
    assert stack.read_file("/v") == new


def test_a_reader_keeps_what_it_fetched_when_another_client_removes_the_file(stack):
    """Another client deletes a file being read: the bytes already fetched (the read-ahead)
    still read to the end; past them the read fails with EIO and says why (not ENOENT)."""
    small, big = os.urandom(200000), os.urandom(BIG)
    nodes = {p: _remote_file(stack, p, d) for p, d in (("/s", small), ("/b", big))}
    stack.rt.watcher.start()
    other = MegaClient.open(api=stack.api, state_dir=stack.state_dir)
    try:
        fhs = {p: stack.fs.open(p, os.O_RDONLY) for p in nodes}
        assert stack.fs.read(fhs["/s"], 1000, 0) == small[:1000]
        assert stack.fs.read(fhs["/b"], 1000, 0) == big[:1000]
        for handle in nodes.values():
            other.delete(handle)
        wait_for(lambda: stack.fs.readdir("/") == [], timeout=20, what="the removals to show")
        assert stack.wb.files == {}
        assert _read_rest(stack, fhs["/s"], 1000) == small[1000:]
        assert stack.fs.getattr(None, fhs["/s"])["st_size"] == len(small)
        with pytest.raises(FsError) as info:
            _read_rest(stack, fhs["/b"], 1000)
        assert info.value.errno == errno.EIO and "removed from MEGA" in str(info.value)
        for fh in fhs.values():
            stack.fs.release(fh)
    finally:
        other.close()
        stack.rt.watcher.stop()
