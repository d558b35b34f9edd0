"""A hostile server's node tree and sizes against the mount's model (issue 20, items 2 and 3).

* a folder that is its own ancestor (in an ``f`` listing or through ``t`` packets) is reported
  once at WARNING and left out; every walk of the tree ends;
* a file node claiming more bytes than MEGA stores is kept, logged once, and reading it fails
  at once (ProtocolError: EIO) without any structure growing with the claimed size; sizes MEGA
  can store grow nothing before data arrives either.
"""
from __future__ import annotations

import logging
import threading
import time
import tracemalloc

import pytest

from megafs import crypto
from megafs.errors import ProtocolError
from megafs.tree import packets
from megafs.tree.tree import Tree, is_inside
from megafs.vfs.readcache import ReadCache

UH = "uuuuuuuuuuu"


def folder(mk: bytes, handle: str, parent: str, name: str) -> dict:
    key = crypto.random_key(16)
    return {"h": handle, "p": parent, "t": 1, "u": UH,
            "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, key)),
            "k": "%s:%s" % (UH, crypto.b64encode(crypto.wrap_key(key, mk)))}


def file_node(mk: bytes, handle: str, parent: str, name: str, size: int) -> dict:
    key = crypto.new_file_key().pack()
    return {"h": handle, "p": parent, "t": 0, "u": UH, "s": size,
            "a": crypto.b64encode(crypto.encrypt_attr({"n": name}, key)),
            "k": "%s:%s" % (UH, crypto.b64encode(crypto.wrap_key(key, mk)))}


def ends(func, seconds: float = 5.0):
    """Run ``func`` on a thread; its result, or a failure if it has not ended in time."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(func()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, "the tree walk did not end (a cycle)"
    return out[0]


@pytest.fixture
def tree_and_key():
    mk = crypto.random_key()
    tree = Tree(mk, UH)
    return tree, mk


def test_a_cycle_in_the_listing_is_reported_once_and_left_out(tree_and_key, caplog):
    tree, mk = tree_and_key
    caplog.set_level(logging.WARNING)
    nodes = [{"h": "RRRRRRRR", "t": 2, "p": ""},
             folder(mk, "AAAAAAAA", "RRRRRRRR", "a"),
             folder(mk, "SSSSSSSS", "SSSSSSSS", "self"),       # its own parent
             folder(mk, "XXXXXXXX", "YYYYYYYY", "x"),          # X under Y, Y under X
             folder(mk, "YYYYYYYY", "XXXXXXXX", "y")]
    tree.load(nodes)
    walked = ends(lambda: tree.subtree("RRRRRRRR"))
    assert sorted(walked) == ["AAAAAAAA", "RRRRRRRR"]
    ends(lambda: tree.subtree("XXXXXXXX"))
    ends(lambda: tree.subtree("SSSSSSSS"))
    assert tree.get("SSSSSSSS") is None
    assert (tree.get("XXXXXXXX") is None) != (tree.get("YYYYYYYY") is None)
    cycles = [r for r in caplog.records if "cycle" in r.getMessage()]
    assert len(cycles) == 2 and all(r.levelno == logging.WARNING for r in cycles), cycles
    tree.load(nodes)             # the same listing again: not reported again
    assert len([r for r in caplog.records if "cycle" in r.getMessage()]) == 2


def test_a_cycle_through_packets_is_left_out(tree_and_key, caplog):
    tree, mk = tree_and_key
    caplog.set_level(logging.WARNING)
    tree.load([{"h": "RRRRRRRR", "t": 2, "p": ""}, folder(mk, "AAAAAAAA", "RRRRRRRR", "a"),
               folder(mk, "BBBBBBBB", "AAAAAAAA", "b"), folder(mk, "CCCCCCCC", "BBBBBBBB", "c")])
    # the server says A now lives under C, its own grandchild
    packets.apply(tree, {"a": "t", "t": {"f": [folder(mk, "AAAAAAAA", "CCCCCCCC", "a")]}})
    assert ends(lambda: sorted(tree.subtree("RRRRRRRR"))) == \
        ["AAAAAAAA", "BBBBBBBB", "CCCCCCCC", "RRRRRRRR"]
    assert tree.get("AAAAAAAA").parent == "RRRRRRRR"        # the old, sane place is kept
    assert ends(lambda: tree.path_of("CCCCCCCC")) == "/a/b/c"
    assert not is_inside(tree, "AAAAAAAA", "CCCCCCCC") and is_inside(tree, "CCCCCCCC", "RRRRRRRR")
    ends(lambda: tree.remove("BBBBBBBB"))
    tree.move("AAAAAAAA", "AAAAAAAA")                         # a local move into itself
    assert tree.get("AAAAAAAA").parent == "RRRRRRRR"
    # one WARNING for node A, however often it comes back
    assert len([r for r in caplog.records if "cycle" in r.getMessage()]) == 1


class NoNetwork:
    def open_download(self, handle: str):
        raise AssertionError("no request for a size MEGA cannot store")

    def read_range(self, *args):
        raise AssertionError("no request for a size MEGA cannot store")


class Unreachable:
    """A transfer server that never answers in time (the read fails)."""

    def open_download(self, handle: str):
        class Info:
            url = "http://127.0.0.1:1/dl/x"
        return Info()

    def read_range(self, *args):
        raise ProtocolError("no data")


def test_reading_a_node_beyond_what_mega_stores_fails_at_once(tree_and_key, caplog):
    tree, mk = tree_and_key
    caplog.set_level(logging.WARNING)
    tree.load([{"h": "RRRRRRRR", "t": 2, "p": ""},
               file_node(mk, "FFFFFFFF", "RRRRRRRR", "huge", 2 ** 62)])
    node = tree.get("FFFFFFFF")
    assert node is not None and node.name == "huge"
    assert len([r for r in caplog.records if "FFFFFFFF" in r.getMessage()]) == 1
    cache = ReadCache(NoNetwork())
    try:
        started = time.monotonic()
        with pytest.raises(ProtocolError):
            cache.read(node.handle, node.file_key, node.size, 0, 131072)
        with pytest.raises(ProtocolError):
            cache.read(node.handle, node.file_key, node.size, 2 ** 61, 131072)
        assert time.monotonic() - started < 1
    finally:
        cache.close()


def test_a_large_claimed_size_grows_nothing_before_data(tree_and_key):
    """2**50 bytes (MEGA could store it): a read far into the file costs no list per MiB."""
    key = crypto.new_file_key()
    cache = ReadCache(Unreachable())
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(ProtocolError):
            cache.read("FFFFFFFF", key, 2 ** 50, 2 ** 49, 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        cache.close()
    assert peak < 2 ** 20, peak
    assert time.monotonic() - started < 2


def test_an_empty_node_needs_the_mac_of_no_data():
    """Item 5 in the mount: a node the server calls empty reads as empty only when its key
    carries the MAC of no data (either client convention), else EIO (IntegrityError)."""
    from megafs.errors import IntegrityError
    key = crypto.new_file_key()
    cache = ReadCache(NoNetwork())
    try:
        for mac in crypto.empty_file_macs(key.aes_key, key.nonce):
            assert cache.read("EEEEEEEE", key.with_mac(mac), 0, 0, 4096) == b""
        lying = key.with_mac(crypto.file_meta_mac(key.aes_key, key.nonce, b"real data"))
        with pytest.raises(IntegrityError):
            cache.read("EEEEEEEE", lying, 0, 0, 4096)
    finally:
        cache.close()
