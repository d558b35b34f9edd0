"""``api.remotefile``: the URL refresh, block fetch and MAC check that the mount's read cache and
``megafs get`` share (issue 21), with real crypto and no network."""
from __future__ import annotations

import os
import threading

import pytest

from megafs import chunks, crypto
from megafs.api.commands import DownloadInfo
from megafs.api.remotefile import FileMac, UrlSource, check_empty, check_size, read_block
from megafs.errors import ApiCode, IntegrityError, MegaError, ProtocolError


def _key(data: bytes) -> crypto.FileKey:
    """A file key whose meta-MAC is that of ``data`` (as an uploader makes it)."""
    aes, nonce = os.urandom(16), os.urandom(8)
    macs = [crypto.chunk_mac(aes, nonce, data[o:o + n]) for o, n in chunks.spans(len(data)) if n]
    return crypto.FileKey(aes, nonce, crypto.meta_mac(crypto.condense_macs(aes, macs)))


def test_a_dead_url_is_renewed_once_for_all_who_found_it_dead():
    asked = []

    def ask() -> DownloadInfo:
        asked.append(1)
        return DownloadInfo("http://t/%d" % len(asked), 10)

    source = UrlSource(ask)
    first = source.get()
    assert first == "http://t/1" and source.get() == first
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(source.refresh(first)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["http://t/2"] * 8 and len(asked) == 2
    with pytest.raises(MegaError) as info:
        UrlSource(None, "http://t/x").refresh("http://t/x")
    assert info.value.code == ApiCode.EEXPIRED


def test_read_block_refreshes_a_dead_url_once_and_checks_the_length():
    urls = iter(["http://t/old", "http://t/new"])
    source = UrlSource(lambda: DownloadInfo(next(urls), 10))
    seen = []

    def read_range(url: str, key: object, start: int, length: int) -> bytes:
        seen.append(url)
        if url.endswith("old"):
            raise MegaError(ApiCode.EEXPIRED, "dead")
        return b"x" * (length if start == 0 else length - 1)

    assert read_block(read_range, source, None, 0, 4) == b"xxxx"   # type: ignore[arg-type]
    assert seen == ["http://t/old", "http://t/new"]
    with pytest.raises(IntegrityError, match="short read"):
        read_block(read_range, source, None, 4, 4)                  # type: ignore[arg-type]
    with pytest.raises(MegaError):
        read_block(lambda *a: (_ for _ in ()).throw(MegaError(ApiCode.EACCESS, "no")),
                   source, None, 0, 1)                               # type: ignore[arg-type]


def test_file_mac_in_any_order_and_a_tampered_chunk():
    data = os.urandom(3 * 1048576 + 77)
    key = _key(data)
    mac = FileMac(key, len(data))
    blocks = [(o, n) for o, n in chunks.groups(len(data), 1048576)]
    for start, length in reversed(blocks):
        assert not mac.complete
        mac.add_block(start, data[start:start + length])
    assert mac.complete
    mac.check("the test file")
    bad = FileMac(key, len(data))
    tampered = bytearray(data)
    tampered[2000000] ^= 1
    for start, length in blocks:
        bad.add_block(start, bytes(tampered[start:start + length]))
    with pytest.raises(IntegrityError, match="MAC mismatch: the test file"):
        bad.check("the test file")
    with pytest.raises(IntegrityError, match="MAC check"):
        FileMac(key, len(data)).check("an unread file")


def test_empty_files_and_claimed_sizes():
    aes, nonce = os.urandom(16), os.urandom(8)
    for mac in crypto.empty_file_macs(aes, nonce):
        check_empty(crypto.FileKey(aes, nonce, mac), "x")
    with pytest.raises(IntegrityError, match="key of some data"):
        check_empty(_key(b"some data"), "node h")
    check_size("node h", 0)
    for size in (-1, chunks.MAX_FILE_SIZE + 1, 1.5, True):
        with pytest.raises(ProtocolError):
            check_size("node h", size)      # type: ignore[arg-type]
