"""Reads of remote files: ranged downloads, a bounded block cache, read-ahead, MAC checking.

Owns an LRU cache (cachetools) of decrypted *blocks*, the download URL of each remote node and
its chunk MACs; fetching a block, refreshing a dead URL and checking the MAC are
``api.remotefile``'s, shared with ``megafs get``.  A block is a run of whole MEGA MAC chunks of
at most 1 MiB (``chunks.groups(size, 1 MiB)``), so every fetched block yields the chunk MACs it
contains; once every chunk of a file has been seen (a full read, sequential or not) the
meta-MAC is compared with the one in the file key, and a mismatch makes that read and every
later read of the node fail with EIO (``IntegrityError``) and is logged at ERROR.
Sequential readers get read-ahead: the next blocks are fetched on a small thread pool while the
current one is consumed; on a slow link the depth grows while it raises the throughput
(``api.widen``), and the first blocks of a read share one ``g``.  Each sequential reader is a
``_Stream``: up to ``read_ahead`` of its blocks in flight, started as the reader moves *and* as
blocks complete, within a window of ``window`` blocks past the reader.  Once widened the window
is wider than the depth: a block held up on a slow link (they take 0.6-1.9 s on the bench's far
profile) no longer stops the blocks behind it from being replaced, which had left 4-7 of 16 in
flight.  Never imports FUSE, never logs keys or URLs.

*Files ahead* (``vfs.ahead.FilesAhead``): a reader that goes through a folder file by file
gets the next small files of that folder fetched on their own threads while it reads.

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
from functools import partial
from typing import TYPE_CHECKING, Callable

from cachetools import LRUCache

from .. import chunks, crypto
from ..api.remotefile import FileMac, UrlSource, check_empty, check_size, read_block
from ..api.widen import Budget, Widener
from ..errors import FsError, IntegrityError
from .ahead import AHEAD_SIZE, Around, FilesAhead

if TYPE_CHECKING:
    from ..api.interface import NodeReader
    from ..api.commands import DownloadInfo

log = logging.getLogger(__name__)

BLOCK = 1048576
READ_AHEAD = 4            # blocks fetched ahead of a sequential reader, at first
# More on a slow link (api/widen.py: while each more block in flight raises the throughput):
# far profile of scripts/bench --wan (RTT 150 ms, 20 Mbit/s per connection) 1 MiB blocks take
# 0.57 s, so 4 in flight carry 7.3 MB/s of the 12.5; up to 12 more blocks (12 MiB) per mount.
READ_AHEAD_EXTRA = 12
STREAMS = 64              # sequential readers followed (LRU: a closed reader is forgotten)
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


class ReadState:
    """Per open handle: where the last read ended (sequential detection)."""

    def __init__(self) -> None:
        self.next_offset = 0
        self.sequential = 0


class _Stream:
    """The read-ahead of one node's sequential reader: ``reader`` is the block it read last,
    ``next`` the next block to start, ``running`` its blocks in flight (under the cache's lock)."""

    def __init__(self, key: crypto.FileKey, size: int, reader: int) -> None:
        self.key, self.size, self.count = key, size, block_count(size)
        self.reader = reader
        self.next = reader + 1
        self.running = 0


class ReadCache:
    def __init__(self, client: "NodeReader", *, cache_bytes: int = 128 * BLOCK,
                 prefetch_threads: int = 4) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._cache: LRUCache = LRUCache(maxsize=cache_bytes, getsizeof=len)
        self._inflight: dict[tuple[str, int], Future] = {}
        self._urls: dict[str, UrlSource] = {}
        self._macs: LRUCache = LRUCache(maxsize=4096)      # handle -> FileMac
        self._bad: set[str] = set()
        self._pool = ThreadPoolExecutor(prefetch_threads + READ_AHEAD_EXTRA,
                                        thread_name_prefix="megafs-readahead")
        self._widener = Widener(READ_AHEAD, Budget(READ_AHEAD_EXTRA))
        self._streams: LRUCache = LRUCache(maxsize=STREAMS)     # handle -> _Stream
        self.read_ahead = READ_AHEAD      # blocks in flight per reader: grows on a slow link
        self.window = READ_AHEAD          # blocks started past the reader: >= read_ahead
        self.ahead = FilesAhead(self)

    def widened(self, width: int) -> None:
        """``width`` blocks in flight per reader from now on; the window takes as many more
        as the width grew (4 -> 4, 8 -> 12, 16 -> 28 blocks: within the block cache)."""
        self.read_ahead = width
        self.window = width + max(0, width - READ_AHEAD)

    def close(self) -> None:
        gate = getattr(self.client, "transfer_quota", None)
        if gate is not None:
            gate.close()      # a download waiting out the transfer quota ends now
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.ahead.close()

    # --- public -----------------------------------------------------------------------------
    def read(self, handle: str, key: crypto.FileKey, size: int, offset: int, length: int,
             state: ReadState | None = None,
             cancelled: Callable[[], bool] | None = None,
             around: Callable[[], Around] | None = None) -> bytes:
        """Plaintext bytes [offset, offset+length) of a remote file, clipped at EOF.
        FsError(EINTR) when ``cancelled()`` turns true while a block is still coming.
        ``around()``: the file before this one in its folder's listing and the files after it
        (``vfs.ahead.FolderOrder.around``), for the files ahead (``vfs.ahead.FilesAhead``)."""
        if handle in self._bad:
            raise IntegrityError("MAC mismatch: node %s is corrupt" % handle)
        check_size("node %s" % handle, size)
        if size == 0:
            check_empty(key, "node %s" % handle)
        if offset >= size or length <= 0:
            return b""
        end = min(size, offset + length)
        first = block_index(offset)
        last = block_index(end - 1)
        if state is not None:
            if offset == state.next_offset:
                state.sequential += 1
            else:
                state.sequential = 0
            state.next_offset = end
        futures = [self._start(handle, key, size, idx) for idx in range(first, last + 1)]
        if around is not None and offset == 0 and size <= AHEAD_SIZE:
            self.ahead.seen(handle, around)
        if state is not None:
            if state.sequential >= 1 or offset == 0:
                self._follow(handle, key, size, last)
            else:
                with self._lock:
                    self._streams.pop(handle, None)
        parts = []
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
        check_size("node %s" % handle, size)
        count = block_count(size)
        for idx in range(count):
            for ahead in range(idx + 1, min(count, idx + 1 + self.read_ahead)):
                self._start(handle, key, size, ahead)
            data = _result(self._start(handle, key, size, idx), cancelled)
            os.pwrite(fd, data, block_span(idx, size)[0])
        if handle in self._bad:
            raise IntegrityError("MAC mismatch: node %s is corrupt" % handle)
        if size:
            self._check_complete(handle)

    def reset_bad(self, handle: str) -> None:
        """A new open of a node that failed its MAC check downloads it afresh."""
        with self._lock:
            if handle not in self._bad:
                return
            self._bad.discard(handle)
            self._urls.pop(handle, None)
            self._streams.pop(handle, None)

    def forget(self, handle: str) -> None:
        with self._lock:
            self._urls.pop(handle, None)
            self._streams.pop(handle, None)
            for k in [k for k in self._cache.keys() if k[0] == handle]:
                self._cache.pop(k, None)

    # --- for the files ahead (``vfs.ahead.FilesAhead``) -------------------------------------
    def fetched(self, handle: str) -> tuple[bool, bool, bool]:
        """(refused by its MAC, its download URL known, its first block cached or coming)."""
        with self._lock:
            return (handle in self._bad, handle in self._urls,
                    (handle, 0) in self._cache or (handle, 0) in self._inflight)

    def known_url(self, handle: str, url: str) -> None:
        """A download URL that a ``g`` of several files gave (kept unless one is known)."""
        with self._lock:
            if handle not in self._urls:
                self._urls[handle] = UrlSource(partial(self._open_download, handle), url)

    def start_file(self, handle: str, key: crypto.FileKey, size: int,
                   pool: ThreadPoolExecutor) -> None:
        """Start every block of a file on ``pool``."""
        for idx in range(block_count(size)):
            self._start(handle, key, size, idx, pool)

    # --- read-ahead --------------------------------------------------------------------------
    def _follow(self, handle: str, key: crypto.FileKey, size: int, last: int) -> None:
        """A sequential reader of ``handle`` has read up to block ``last``: start its next
        blocks."""
        with self._lock:
            stream = self._streams.get(handle)
            if stream is None or stream.size != size or stream.key != key:
                self._streams[handle] = _Stream(key, size, last)
            else:
                stream.reader = last
                if not last < stream.next <= last + 1 + self.window:
                    stream.next = last + 1        # another reader, or one that moved back
        self._pump(handle)

    def _pump(self, handle: str) -> None:
        """Start the blocks of ``handle``'s stream that its depth and window allow."""
        todo = []
        with self._lock:
            stream = self._streams.get(handle)
            if stream is None or handle in self._bad:
                return
            end = min(stream.count, stream.reader + 1 + self.window)
            while stream.next < end and stream.running < self.read_ahead:
                ck = (handle, stream.next)
                stream.next += 1
                if ck in self._cache or ck in self._inflight:
                    continue
                fut: Future = Future()
                self._inflight[ck] = fut
                stream.running += 1
                todo.append((fut, ck))
        for fut, ck in todo:
            start, length = block_span(ck[1], stream.size)
            try:
                self._pool.submit(self._fetch, fut, ck, stream.key, stream.size, start,
                                  length, stream)
            except RuntimeError:            # closed (unmount): nobody waits for these
                with self._lock:
                    self._inflight.pop(ck, None)
                    stream.running -= 1
                fut.cancel()

    # --- fetching ---------------------------------------------------------------------------
    def _start(self, handle: str, key: crypto.FileKey, size: int, idx: int,
               pool: ThreadPoolExecutor | None = None) -> Future:
        """Block ``idx`` of ``handle``: cached, in flight, or started now on ``pool`` (the
        read-ahead pool by default)."""
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
        try:
            if pool is None:
                self._pool.submit(self._fetch, fut, ck, key, size, start, length)
            else:       # a file ahead: its small blocks say nothing of a stream's throughput
                pool.submit(self._fetch, fut, ck, key, size, start, length, measure=False)
        except RuntimeError:                # closed (unmount)
            with self._lock:
                self._inflight.pop(ck, None)
            fut.set_exception(FsError(errno.EIO, "the mount is stopping"))
        return fut

    def _fetch(self, fut: Future, ck: tuple[str, int], key: crypto.FileKey, size: int,
               start: int, length: int, stream: _Stream | None = None, *,
               measure: bool = True) -> None:
        handle = ck[0]
        try:
            began = time.monotonic()
            data = self._download(handle, key, start, length)
            if measure and self._widener.record(length, began, time.monotonic()):
                self.widened(self._widener.width)
            self._record_macs(handle, key, size, start, data)
            with self._lock:
                self._cache[ck] = data
            self._check_complete(handle)
            fut.set_result(data)
        except BaseException as exc:  # handed to the reader through the Future
            fut.set_exception(exc)
        finally:
            with self._lock:
                self._inflight.pop(ck, None)
                if stream is not None:
                    stream.running -= 1
            if stream is not None:
                self._pump(handle)

    def _download(self, handle: str, key: crypto.FileKey, start: int, length: int) -> bytes:
        """One block (``api.remotefile.read_block``: the client retries on its own, a dead
        download URL costs one ``g`` for a fresh one)."""
        with self._lock:
            source = self._urls.get(handle)
        if source is None:
            self.ahead.wait_url(handle)      # asked with the files ahead: use that answer
            with self._lock:
                source = self._urls.get(handle)
                if source is None:
                    source = UrlSource(lambda: self._open_download(handle))
                    self._urls[handle] = source
        return read_block(lambda url, k, at, n: self.client.read_range(url, k, at, n),
                          source, key, start, length)

    def _open_download(self, handle: str) -> "DownloadInfo":
        """``g`` for a node's download URL; its round trip may widen the read-ahead at once
        (``Widener.long_link``: the first blocks would be slow anyway)."""
        began = time.monotonic()
        info = self.client.open_download(handle=handle)
        if self._widener.long_link(time.monotonic() - began):
            self.widened(self._widener.width)
            self._pump(handle)
        return info

    # --- MACs -------------------------------------------------------------------------------
    def _record_macs(self, handle: str, key: crypto.FileKey, size: int, start: int,
                     data: bytes) -> None:
        with self._lock:
            mac = self._macs.get(handle)
            if mac is None:
                mac = FileMac(key, size)
                self._macs[handle] = mac
        mac.add_block(start, data)       # the block's chunks, on every core

    def _check_complete(self, handle: str) -> None:
        with self._lock:
            mac = self._macs.get(handle)
            if mac is None or not mac.complete:
                return
            # Checked once per complete coverage; drop it so a later full read rechecks.
            self._macs.pop(handle, None)
        try:
            mac.check("node %s" % handle)
        except IntegrityError:
            with self._lock:
                self._bad.add(handle)
                for k in [k for k in self._cache.keys() if k[0] == handle]:
                    self._cache.pop(k, None)
            log.error("MAC mismatch on node %s: the downloaded data is corrupt or tampered",
                      handle)
            raise IntegrityError("MAC mismatch on node %s" % handle) from None


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
