"""Chunk MACs of a staged copy computed while the file is still being written.

MEGA's upload protocol asks for the file's size before the first byte is sent (``u`` with
``s``), so no POST can start before the writer closes the file.  What can start is the
CBC-MAC of every chunk (about half the upload's CPU time): a file written sequentially from
empty (``cp``, ``dd``, a download) has its complete chunks MACed in the background, under the
key its upload will use, a step of ``STEP`` bytes at a time read back from the staged copy
(page cache; memory bounded by one step).  At the upload, ``take`` hands the key and the MACs
to the uploader, which then only encrypts those chunks (``api.upload``, ``premac``).

Correctness rests on three rules, so that a MAC can never describe bytes other than those the
upload sends:

- ``before_write`` runs before the bytes reach the staged copy and gives up (``invalidate``)
  on any write that does not continue the file exactly at its end; truncating does the same
  (to 0: a fresh start with a new key).  A background step stores its MACs only if nothing gave
  up since it started (the ``epoch``), and a giving-up write happens before its ``pwrite``, so
  a step that read rewritten bytes is always discarded.
- ``take`` is valid only when the whole file, up to its size at the upload, was written
  sequentially under this tracker; anything else uploads with a fresh key as before.
- ``take`` spends the key: one key encrypts one content once (a retried attempt or a later
  upload of the file after more appends uses a fresh key, so CTR keystream is never reused).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from .. import chunks, crypto, sealing
from ..crypto import FileKey
from ..osio import read_at

log = logging.getLogger(__name__)

STEP = 8 * chunks.MIB       # bytes MACed per background step (the memory it holds)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One thread for every mount's background steps; each step spreads its chunks over every
    core itself (``sealing.chunk_macs``)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="megafs-premac")
        return _pool


class Premac:
    """The MAC tracker of one staged file (``StagedFile.premac``); see the module docstring.

    Thread-safe (its own lock, never held during I/O or crypto)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._valid = False         # everything in [0, end) was written in order under key
        self._key: FileKey | None = None
        self._end = 0               # bytes written sequentially so far
        self._done = 0              # chunk boundary up to which macs are known
        self._macs: dict[int, bytes] = {}
        self._epoch = 0             # bumped whenever the tracker gives up or starts again
        self._running = False       # a background step is queued or running
        self._path = ""

    @property
    def made(self) -> int:
        """Bytes from the start of the file whose chunk MACs are made (0 once given up)."""
        with self._lock:
            return self._done if self._valid else 0

    def start(self, path: str) -> None:
        """The staged copy at ``path`` is now empty (a new file, or truncated to 0): track it
        from offset 0 under a fresh key."""
        with self._lock:
            self._epoch += 1
            self._valid, self._key, self._path = True, crypto.new_file_key(), path
            self._end = self._done = 0
            self._macs = {}

    def invalidate(self) -> None:
        """Give up: the staged copy is about to change other than by appending."""
        with self._lock:
            if self._valid:
                self._give_up()

    def _give_up(self) -> None:
        """Forget the key and the MACs; a running step's result will be dropped (under the
        lock)."""
        self._epoch += 1
        self._valid, self._key, self._macs = False, None, {}

    def before_write(self, offset: int) -> None:
        """Called before ``length`` bytes are written at ``offset`` (before the ``pwrite``)."""
        with self._lock:
            if self._valid and offset == self._end:
                return
        self.invalidate()

    def after_write(self, offset: int, length: int) -> None:
        """Called after the bytes are in the staged copy; may start a background step."""
        with self._lock:
            if not self._valid:
                return
            if offset != self._end:      # another write moved the end meanwhile
                self._give_up()
                return
            self._end += length
            if self._running or chunks.floor(self._end) - self._done < STEP:
                return
            self._running = True
        try:
            _executor().submit(self._steps)
        except RuntimeError:             # interpreter shutting down: the upload MACs all
            with self._lock:
                self._running = False

    def take(self, size: int) -> tuple[FileKey, dict[int, bytes]] | None:
        """At the upload of a staged copy of ``size`` bytes: (key, {chunk offset: MAC}) if the
        whole copy was written in order under this tracker, else None.  Spends the key."""
        with self._lock:
            ok = self._valid and self._end == size and self._key is not None
            key, macs = self._key, self._macs
            self._give_up()
        if not ok or key is None:
            return None
        return key, macs

    def _steps(self) -> None:
        """Background: MAC complete chunks of [done, end) a step at a time until caught up."""
        buf = bytearray(STEP + chunks.MIB)
        while True:
            with self._lock:
                stop = chunks.floor(self._end)
                if not self._valid or self._key is None or stop - self._done < STEP:
                    self._running = False
                    return
                # a chunk boundary past done: done + len(buf) - 1 MiB >= done + STEP
                stop = chunks.floor(min(stop, self._done + len(buf)))
                epoch, key, start, path = self._epoch, self._key, self._done, self._path
            try:
                view = memoryview(buf)[:stop - start]
                with open(path, "rb", buffering=0) as f:
                    got = read_at(f.fileno(), view, start)
                if got != len(view):
                    raise OSError("short read of the staged copy")
                macs = sealing.chunk_macs(key.aes_key, key.nonce, start, view)
            except OSError as exc:
                log.debug("background MACs stopped: %s", exc)
                self.invalidate()
                with self._lock:
                    self._running = False
                return
            with self._lock:
                if self._epoch != epoch or not self._valid:
                    self._running = False
                    return
                self._macs.update(macs)
                self._done = stop
