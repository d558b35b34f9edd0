"""A remote file's bytes as every reader of MEGA gets them: the mount's read cache
(``vfs/readcache.py``, ranged blocks) and whole-file downloads (``download.py``: ``megafs get``,
``MegaClient.download``).  The one home of (issue 21):

* ``UrlSource``: the download URL of one file (``g``, protocol reference §8) and its refresh when
  the transfer server refuses it (``-8``/HTTP 403/404/410: ``errors.Verdict.NEW_URL``), once
  per dead URL however many workers found it dead at the same time;
* ``read_block``: one ranged block, decrypted (``Downloader.read_range``), its URL refreshed
  once when dead, its length checked;
* ``FileMac``: the file MAC check.  Chunk MACs (CBC-MAC of each MAC chunk of the plaintext under
  the file key, ``chunks.spans``) are gathered by offset, in any order, from any thread; once
  every chunk was seen they are condensed in offset order into the meta-MAC and compared with
  key words 6-7 (protocol reference §7.5; meganz/sdk ``chunkmac_map::macsmac``).  An empty file
  has no bytes to vouch for: the meta-MACs the known clients write for it are accepted, nothing
  else (``check_empty``).

Never logs URLs or keys.
"""
from __future__ import annotations

import hmac
import logging
import threading
from typing import Callable

from .. import chunks, crypto, sealing
from ..errors import ApiCode, IntegrityError, MegaError, ProtocolError
from .commands import DownloadInfo

log = logging.getLogger(__name__)

ReadRange = Callable[[str, crypto.FileKey, int, int], bytes]


def check_size(what: str, size: int) -> None:
    """ProtocolError if ``size`` (bytes, as a server claims it) is not one MEGA can store."""
    if not chunks.storable(size):
        raise ProtocolError("%s claims %d bytes, more than MEGA stores" % (what, size))


def check_empty(key: crypto.FileKey, what: str) -> None:
    """IntegrityError unless ``key`` carries the meta-MAC of no data.  MEGA's web client and SDK
    write (0, 0), megajs MACs one empty chunk and go-mega (rclone) one chunk MAC of zeros
    (``crypto.empty_file_macs``); a key whose MAC is that of some data is not the key of an
    empty file, whatever size the server claims (issue 20)."""
    if not any(hmac.compare_digest(mac, key.mac)
               for mac in crypto.empty_file_macs(key.aes_key, key.nonce)):
        raise IntegrityError("MAC mismatch: the server says %s is empty, but its key is the "
                             "key of some data" % what)


class UrlSource:
    """The download URL of one file.  ``ask()`` is ``g`` for it (a ``DownloadInfo``); None:
    the URL cannot be renewed (``refresh`` raises ``MegaError(-8)``).  Thread-safe."""

    def __init__(self, ask: Callable[[], DownloadInfo] | None, url: str | None = None) -> None:
        self._ask = ask
        self._url = url
        self._lock = threading.Lock()

    def get(self) -> str:
        """The current URL (asked for on first use)."""
        with self._lock:
            if self._url is None:
                self._url = self._fresh()
            return self._url

    def refresh(self, stale: str) -> str:
        """A URL other than ``stale`` (a dead one): ``g`` is asked once per dead URL, callers
        that found the same one dead meanwhile get the new one."""
        with self._lock:
            if self._url is None or self._url == stale:
                log.info("a download URL is no longer valid; asking for a new one")
                self._url = self._fresh()
            return self._url

    def _fresh(self) -> str:
        if self._ask is None:
            raise MegaError(ApiCode.EEXPIRED, "the download URL is no longer valid")
        return self._ask().url


def read_block(read_range: ReadRange, source: UrlSource, key: crypto.FileKey, start: int,
               length: int) -> bytes:
    """Plaintext bytes [start, start+length) of a file (``length`` within its size).  A dead
    URL (``MegaError(-8)`` from ``read_range``) costs one refresh; IntegrityError if the
    transfer server sends fewer bytes."""
    url = source.get()
    try:
        data = read_range(url, key, start, length)
    except MegaError as exc:
        if exc.code != ApiCode.EEXPIRED:
            raise
        data = read_range(source.refresh(url), key, start, length)
    if len(data) != length:
        raise IntegrityError("short read from the transfer server (%d of %d bytes)"
                             % (len(data), length))
    return data


class FileMac:
    """The MAC check of one ``size``-byte file (``size`` > 0) under ``key``; see the module
    docstring.  ``add``/``add_block`` from any thread; ``check`` once ``complete``."""

    def __init__(self, key: crypto.FileKey, size: int) -> None:
        self.key = key
        self.size = size
        self._macs = crypto.MacAccumulator(key.aes_key)
        self._seen = 0
        self._lock = threading.Lock()

    def add(self, offset: int, mac: bytes) -> None:
        """The chunk MAC of the MAC chunk at ``offset``."""
        with self._lock:
            if offset not in self._macs:
                self._seen += 1
            self._macs.add(offset, mac)

    def add_block(self, start: int, data: bytes | memoryview) -> None:
        """Every chunk MAC of plaintext ``data``: whole MAC chunks from ``start`` (on every
        core: ``sealing.chunk_macs``)."""
        for offset, mac in sealing.chunk_macs(self.key.aes_key, self.key.nonce, start,
                                              memoryview(data)):
            self.add(offset, mac)

    @property
    def complete(self) -> bool:
        """Whether every chunk's MAC was seen (counted, not listed: a file's claimed size
        costs no memory here)."""
        return self._seen >= chunks.count(self.size)

    def check(self, what: str) -> None:
        """IntegrityError (naming ``what``) if the meta-MAC of the chunks differs from the
        key's, or if a chunk's MAC is missing."""
        with self._lock:
            try:
                got = self._macs.meta_mac(self.size)
            except ValueError as exc:
                raise IntegrityError("MAC check of %s: %s" % (what, exc)) from None
        if not hmac.compare_digest(got, self.key.mac):
            raise IntegrityError("MAC mismatch: %s" % what)
