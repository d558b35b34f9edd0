"""Reads of remote files: ranged downloads, a bounded block cache, read-ahead, MAC checking.

Owns the download URLs of remote nodes (refreshed when the transfer server refuses one), an LRU
cache (cachetools) of decrypted *blocks* and the per-file chunk MACs.  A block is a run of whole
MEGA MAC chunks of at most 1 MiB (``chunks.groups(size, 1 MiB)``), so every fetched block yields
the chunk MACs it contains; once every chunk of a file has been seen (a full read, sequential
or not) the meta-MAC is compared with the one in the file key, and a mismatch makes that read
and every later read of the node fail with EIO (``IntegrityError``) and is logged at ERROR.
Sequential readers get read-ahead: the next blocks are fetched on a small thread pool while the
current one is consumed; on a slow link the depth grows while it raises the throughput
(``api.widen``), and the first blocks of a read share one ``g``.  Never imports FUSE, never
logs keys or URLs.

Past MEGA's transfer quota the block downloads wait at the client's gate (``api.xferquota``)
for the time the server gives, then go on; a reader waiting for such a block gives up with
EINTR as soon as its ``cancelled()`` says so (the FUSE request was interrupted: Ctrl-C, a
killed reader), while the block's download keeps waiting for whoever asks next.  ``close``
ends the waits (unmount).

Concurrency contract: ``self._lock`` guards the cache, the in-flight table, the URL table and
the MAC tables; it is never held during a download.  One block is downloaded once even when
several readers (or the read-ahead) want it at the same time: later askers wait on the same
Future.
"""
from __future__ import annotations

import bisect
import errno
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from cachetools import LRUCache

from .. import chunks, crypto, sealing
from ..api.widen import Budget, Widener
from ..errors import ApiCode, FsError, IntegrityError, MegaError, ProtocolError

log = logging.getLogger(__name__)

BLOCK = 1048576
READ_AHEAD = 4            # blocks fetched ahead of a sequential reader, at first
# More on a slow link (api/widen.py: while each more block in flight raises the throughput):
# far profile of scripts/bench --wan (RTT 150 ms, 20 Mbit/s per connection) 1 MiB blocks take
# 0.57 s, so 4 in flight carry 7.3 MB/s of the 12.5; up to 12 more blocks (12 MiB) per mount.
READ_AHEAD_EXTRA = 12
LOOK = 0.25               # seconds between a waiting reader's looks at its cancel condition
# Block starts: MAC chunks merged into runs of at most 1 MiB (0, 768K, 1280K, 1920K, 2688K,
# 3584K), then one block per 1 MiB chunk; the last block ends at EOF.  Computed, never listed:
# a node's claimed size must not decide how much memory a read takes (issue 20).
_HEAD = [start for start, _ in chunks.groups(chunks.LINEAR_START, BLOCK)]


def block_index(offset: int) -> int:
    """Index of the block holding byte ``offset``."""
    if offset >= chunks.LINEAR_START:
        return len(_HEAD) + (offset - chunks.LINEAR_START) // BLOCK
    return bisect.bisect_right(_HEAD, offset) - 1


def block_span(index: int, size: int) -> tuple[int, int]:
    """(start, length) of block ``index`` of a ``size``-byte file (clipped at EOF)."""
    if index < len(_HEAD):
        start = _HEAD[index]
        end = _HEAD[index + 1] if index + 1 < len(_HEAD) else chunks.LINEAR_START
    else:
        start = chunks.LINEAR_START + (index - len(_HEAD)) * BLOCK
        end = start + BLOCK
    return start, min(end, size) - start


def block_count(size: int) -> int:
    return block_index(size - 1) + 1 if size > 0 else 0


def _check_size(handle: str, size: int) -> None:
    if not chunks.storable(size):
        raise ProtocolError("node %s claims %d bytes, more than MEGA stores" % (handle, size))


class ReadState:
    """Per open handle: where the last read ended (sequential detection)."""

    def __init__(self) -> None:
        self.next_offset = 0
        self.sequential = 0


class ReadCache:
    def __init__(self, client: Any, *, cache_bytes: int = 128 * BLOCK,
                 prefetch_threads: int = 4) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._cache: LRUCache = LRUCache(maxsize=cache_bytes, getsizeof=len)
        self._inflight: dict[tuple[str, int], Future] = {}
        self._urls: dict[str, str] = {}
        self._asking: dict[str, Future] = {}            # handle -> the `g` in flight
        self._macs: LRUCache = LRUCache(maxsize=4096)      # handle -> {chunk offset: mac}
        self._bad: set[str] = set()
        self._pool = ThreadPoolExecutor(prefetch_threads + READ_AHEAD_EXTRA,
                                        thread_name_prefix="megafs-readahead")
        self._widener = Widener(READ_AHEAD, Budget(READ_AHEAD_EXTRA))
        self.read_ahead = READ_AHEAD      # grows on a slow link (``_widener``)

    def close(self) -> None:
        gate = getattr(self.client, "transfer_quota", None)
        if gate is not None:
            gate.close()      # a download waiting out the transfer quota ends now
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- public -----------------------------------------------------------------------------
    def read(self, handle: str, key: crypto.FileKey, size: int, offset: int, length: int,
             state: ReadState | None = None,
             cancelled: Callable[[], bool] | None = None) -> bytes:
        """Plaintext bytes [offset, offset+length) of a remote file, clipped at EOF.
        FsError(EINTR) when ``cancelled()`` turns true while a block is still coming."""
        if handle in self._bad:
            raise IntegrityError("MAC mismatch: node %s is corrupt" % handle)
        _check_size(handle, size)
        if size == 0 and key.mac not in crypto.empty_file_macs(key.aes_key, key.nonce):
            # "empty" from the server, but the key carries the MAC of some data (issue 20)
            raise IntegrityError("node %s: the server says it is empty, but its key is the key "
                                 "of some data" % handle)
        if offset >= size or length <= 0:
            return b""
        end = min(size, offset + length)
        count = block_count(size)
        first = block_index(offset)
        last = block_index(end - 1)
        if state is not None:
            if offset == state.next_offset:
                state.sequential += 1
            else:
                state.sequential = 0
            state.next_offset = end
            if state.sequential >= 1 or offset == 0:
                for idx in range(last + 1, min(count, last + 1 + self.read_ahead)):
                    self._start(handle, key, size, idx)
        parts = []
        futures = [self._start(handle, key, size, idx) for idx in range(first, last + 1)]
        for idx, fut in zip(range(first, last + 1), futures):
            data = _result(fut, cancelled)
            bstart = block_span(idx, size)[0]
            lo = max(offset, bstart) - bstart
            hi = min(end, bstart + len(data)) - bstart
            parts.append(data[lo:hi])
        if handle in self._bad:
            raise IntegrityError("MAC mismatch: node %s is corrupt" % handle)
        return b"".join(parts)

    def fetch_to_file(self, handle: str, key: crypto.FileKey, size: int, fd: int,
                      cancelled: Callable[[], bool] | None = None) -> None:
        """Download a whole remote file into ``fd`` (staging an existing file for writing).
        FsError(EINTR) when ``cancelled()`` turns true while a block is still coming."""
        _check_size(handle, size)
        count = block_count(size)
        for idx in range(count):
            for ahead in range(idx + 1, min(count, idx + 1 + self.read_ahead)):
                self._start(handle, key, size, ahead)
            data = _result(self._start(handle, key, size, idx), cancelled)
            os.pwrite(fd, data, block_span(idx, size)[0])
        if handle in self._bad:
            raise IntegrityError("MAC mismatch: node %s is corrupt" % handle)
        if size:
            self._check_complete(handle, key, size, force=True)

    def reset_bad(self, handle: str) -> None:
        """A new open of a node that failed its MAC check downloads it afresh."""
        with self._lock:
            if handle not in self._bad:
                return
            self._bad.discard(handle)
            self._urls.pop(handle, None)

    def forget(self, handle: str) -> None:
        with self._lock:
            self._urls.pop(handle, None)
            for k in [k for k in self._cache.keys() if k[0] == handle]:
                self._cache.pop(k, None)

    # --- fetching ---------------------------------------------------------------------------
    def _start(self, handle: str, key: crypto.FileKey, size: int, idx: int) -> Future:
        ck = (handle, idx)
        with self._lock:
            data = self._cache.get(ck)
            if data is not None:
                fut: Future = Future()
                fut.set_result(data)
                return fut
            running = self._inflight.get(ck)
            if running is not None:
                return running
            fut = Future()
            self._inflight[ck] = fut
        start, length = block_span(idx, size)
        self._pool.submit(self._fetch, fut, ck, key, size, start, length)
        return fut

    def _fetch(self, fut: Future, ck: tuple[str, int], key: crypto.FileKey, size: int,
               start: int, length: int) -> None:
        handle = ck[0]
        try:
            began = time.monotonic()
            data = self._download(handle, key, start, length)
            if self._widener.record(length, began, time.monotonic()):
                self.read_ahead = self._widener.width
            self._record_macs(handle, key, start, data)
            with self._lock:
                self._cache[ck] = data
            self._check_complete(handle, key, size)
            fut.set_result(data)
        except BaseException as exc:  # handed to the reader through the Future
            fut.set_exception(exc)
        finally:
            with self._lock:
                self._inflight.pop(ck, None)

    def _url(self, handle: str, refresh: bool = False) -> str:
        """The node's download URL; one ``g`` at a time per node (the first blocks of a read
        all want it at once: one round trip, not four requests)."""
        with self._lock:
            url = None if refresh else self._urls.get(handle)
            asking = self._asking.get(handle)
            mine = url is None and asking is None
            if mine:
                asking = self._asking[handle] = Future()
        if url is not None:
            return url
        assert asking is not None
        if not mine:
            return asking.result()
        try:
            url = self.client.open_download(handle=handle).url
            with self._lock:
                self._urls[handle] = url
            asking.set_result(url)
            return url
        except BaseException as exc:  # the other askers get the same error
            asking.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._asking.pop(handle, None)

    def _download(self, handle: str, key: crypto.FileKey, start: int, length: int) -> bytes:
        """One block; the client retries on its own, and a dead download URL (``-8``: expired,
        or refused by the transfer server) costs one ``g`` for a fresh one."""
        url = self._url(handle)
        try:
            data = self.client.read_range(url, key, start, length)
        except MegaError as exc:
            if exc.code != ApiCode.EEXPIRED:
                raise
            log.info("the download URL of node %s expired; asking for a new one", handle)
            data = self.client.read_range(self._url(handle, refresh=True), key, start, length)
        if len(data) != length:
            raise IntegrityError("short read from the transfer server (%d of %d bytes)"
                                 % (len(data), length))
        return data

    # --- MACs -------------------------------------------------------------------------------
    def _record_macs(self, handle: str, key: crypto.FileKey, start: int, data: bytes) -> None:
        # the block's chunks on every core (a block at the start of a file holds several)
        macs = dict(sealing.chunk_macs(key.aes_key, key.nonce, start, memoryview(data)))
        with self._lock:
            table = self._macs.get(handle)
            if table is None:
                table = {}
                self._macs[handle] = table
            table.update(macs)

    def _check_complete(self, handle: str, key: crypto.FileKey, size: int,
                        force: bool = False) -> None:
        with self._lock:
            table = self._macs.get(handle) or {}
            if len(table) < chunks.count(size) and not force:
                return     # (counted, not listed: the table only holds chunks seen)
            spans = [(o, n) for o, n in chunks.spans(size) if n]
            try:
                macs = [table[o] for o, _ in spans]
            except KeyError:
                return
            # Checked once per complete coverage; drop the table so a later full read rechecks.
            self._macs.pop(handle, None)
        got = crypto.meta_mac(crypto.condense_macs(key.aes_key, macs))
        if got != key.mac:
            with self._lock:
                self._bad.add(handle)
                for k in [k for k in self._cache.keys() if k[0] == handle]:
                    self._cache.pop(k, None)
            log.error("MAC mismatch on node %s: the downloaded data is corrupt or tampered",
                      handle)
            raise IntegrityError("MAC mismatch on node %s" % handle)


def _result(fut: Future, cancelled: Callable[[], bool] | None) -> bytes:
    """The block a Future brings; FsError(EINTR) once ``cancelled()`` says the reader left."""
    if cancelled is None:
        return fut.result()
    while True:
        try:
            return fut.result(timeout=LOOK)
        except FutureTimeout:
            if cancelled():
                raise FsError(errno.EINTR, "read interrupted while waiting for its "
                              "download") from None
