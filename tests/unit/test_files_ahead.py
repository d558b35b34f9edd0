"""Files ahead (``vfs.readcache``, ``vfs.ahead``): a reader going through a folder file by file
gets the next small files fetched while it reads, their ``g`` in few requests; a single read
fetches nothing else; big files and tampered ones are not served from a fetch ahead."""
from __future__ import annotations

import os
import threading
import time

import pytest

from megafs import crypto
from megafs.errors import IntegrityError
from megafs.vfs.ahead import AHEAD_SIZE, FILES_AHEAD, FolderOrder
from megafs.vfs.readcache import ReadCache

from helpers.trees import raw_node, tree_of


class Folder:
    """Files of one folder as a fake client serves them: ``g`` one by one or in batches,
    ranged reads of their ciphertext; counts what was asked."""

    def __init__(self, count: int, size: int = 4096, *, tamper: str | None = None,
                 batches: bool = True) -> None:
        self.files: dict[str, tuple[bytes, bytes, crypto.FileKey]] = {}
        for i in range(count):
            data = os.urandom(size)
            key = crypto.new_file_key()
            cipher = crypto.ctr_crypt(key.aes_key, key.nonce, 0, data)
            key = key.with_mac(crypto.file_meta_mac(key.aes_key, key.nonce, data))
            if tamper == "h%03d" % i:
                cipher = bytes([cipher[0] ^ 1]) + cipher[1:]
            self.files["h%03d" % i] = (data, cipher, key)
        self.lock = threading.Lock()
        self.g_requests: list[list[str]] = []
        self.reads: list[str] = []
        if not batches:
            self.open_downloads = None      # type: ignore[assignment]

    def open_download(self, handle: str):
        with self.lock:
            self.g_requests.append([handle])
        return Info(handle)

    def open_downloads(self, handles: list[str]):
        with self.lock:
            self.g_requests.append(list(handles))
        return [Info(h) for h in handles]

    def read_range(self, url: str, key: crypto.FileKey, offset: int, length: int) -> bytes:
        handle = url.rsplit("/", 1)[1]
        with self.lock:
            self.reads.append(handle)
        cipher = self.files[handle][1]
        return crypto.ctr_crypt(key.aes_key, key.nonce, offset, cipher[offset:offset + length])

    def order(self) -> list[tuple[str, crypto.FileKey, int]]:
        return [(h, k, len(d)) for h, (d, _c, k) in sorted(self.files.items())]


class Info:
    def __init__(self, handle: str) -> None:
        self.url = "http://127.0.0.1:1/dl/" + handle


def around_of(folder: Folder, count: int = 2 * FILES_AHEAD):
    order = folder.order()

    def around(handle: str):
        at = [h for h, _k, _s in order].index(handle)
        return (order[at - 1][0] if at else None), order[at + 1:at + 1 + count]
    return around


def read_file(cache: ReadCache, folder: Folder, handle: str) -> bytes:
    data, _cipher, key = folder.files[handle]
    around = around_of(folder)
    return cache.read(handle, key, len(data), 0, len(data) + 1, None, None,
                      lambda: around(handle))


def settle(cache: ReadCache, folder: Folder) -> None:
    """Until nothing is in flight and no read came for 0.2 s."""
    deadline = time.monotonic() + 10
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with cache._lock:
            busy = bool(cache._inflight) or cache.ahead.busy()
        if busy or len(folder.reads) != seen:
            seen, quiet_since = len(folder.reads), time.monotonic()
        elif time.monotonic() - quiet_since > 0.2:
            return
        time.sleep(0.01)
    raise AssertionError("fetches never ended")


def test_one_file_read_alone_fetches_nothing_else():
    folder = Folder(40)
    cache = ReadCache(folder)
    try:
        assert read_file(cache, folder, "h010") == folder.files["h010"][0]
        settle(cache, folder)
        assert folder.reads == ["h010"]
        assert folder.g_requests == [["h010"]]
    finally:
        cache.close()


def read_through(cache: ReadCache, folder: Folder) -> None:
    """Every file in listing order, each the bytes uploaded, each fetched once."""
    for handle in sorted(folder.files):
        assert read_file(cache, folder, handle) == folder.files[handle][0]
    settle(cache, folder)
    assert sorted(folder.reads) == sorted(folder.files)


def test_a_reader_going_through_a_folder_gets_the_next_files_in_few_requests():
    folder = Folder(100)
    cache = ReadCache(folder)
    try:
        read_through(cache, folder)
        # the first two files ask alone; the rest in batches of at least half a window
        batched = [r for r in folder.g_requests if len(r) > 1]
        assert len(folder.g_requests) <= 2 + 100 // (FILES_AHEAD // 2) + 1, folder.g_requests
        assert sum(len(r) for r in batched) >= 90
    finally:
        cache.close()


def test_the_files_ahead_are_bounded_by_the_window():
    folder = Folder(100)
    cache = ReadCache(folder)
    try:
        for handle in ("h000", "h001"):     # the second one starts the files ahead
            read_file(cache, folder, handle)
        settle(cache, folder)
        fetched = set(folder.reads)
        assert fetched == {"h%03d" % i for i in range(2 + FILES_AHEAD)}, sorted(fetched)
    finally:
        cache.close()


def test_without_batches_each_file_ahead_asks_its_own_g():
    folder = Folder(30, batches=False)
    cache = ReadCache(folder)
    try:
        read_through(cache, folder)
        assert all(len(r) == 1 for r in folder.g_requests)
    finally:
        cache.close()


def test_big_files_are_not_fetched_ahead():
    folder = Folder(6)
    big = os.urandom(AHEAD_SIZE + 1)
    key = crypto.new_file_key()
    cipher = crypto.ctr_crypt(key.aes_key, key.nonce, 0, big)
    folder.files["h003"] = (big, cipher, key.with_mac(crypto.file_meta_mac(
        key.aes_key, key.nonce, big)))
    cache = ReadCache(folder)
    try:
        read_file(cache, folder, "h000")
        read_file(cache, folder, "h001")
        settle(cache, folder)
        assert "h003" not in folder.reads
        assert {"h002", "h004", "h005"} <= set(folder.reads)
    finally:
        cache.close()


def test_a_tampered_file_fetched_ahead_fails_its_read():
    folder = Folder(8, tamper="h004")
    cache = ReadCache(folder)
    try:
        for handle in ("h000", "h001", "h002", "h003"):
            read_file(cache, folder, handle)
        settle(cache, folder)
        assert "h004" in folder.reads            # fetched ahead ...
        with pytest.raises(IntegrityError):      # ... and refused when read
            read_file(cache, folder, "h004")
        assert read_file(cache, folder, "h005") == folder.files["h005"][0]
    finally:
        cache.close()


def test_folder_order_follows_the_sorted_listing_and_a_change_of_the_folder():
    tree = tree_of(*(raw_node("h" + name[0] * 7, "ROOTROOT", name)
                     for name in ("c.txt", "a.txt", "b.txt")),
                   raw_node("dddddddd", "ROOTROOT", "bb-folder", folder=True))
    order = FolderOrder(tree, 10)
    before, after = order.around("hbbbbbbb")
    assert before == "haaaaaaa"
    assert [h for h, _k, _s in after] == ["hccccccc"]         # the folder passed over
    tree.add_raw(raw_node("hzzzzzzz", "ROOTROOT", "b2.txt"))   # a change: a new order
    before, after = order.around("hbbbbbbb")
    assert [h for h, _k, _s in after] == ["hzzzzzzz", "hccccccc"]
    assert order.around("nothere1") == (None, [])
    assert FolderOrder(tree, 1).around("haaaaaaa")[1][0][0] == "hbbbbbbb"
