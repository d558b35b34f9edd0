"""Whether local bytes are exactly those of a remote file, without downloading it.

A MEGA file key carries the file's meta-MAC: chunk CBC-MACs of the plaintext under the file's
AES key and nonce, folded into 8 bytes.  Computing the MAC of local bytes under the *old* key
and comparing it with the stored one tells whether they are the same bytes (a false match
needs a 64-bit MAC collision under a key the writer never saw).  The write-back queue uses it
so that copying a file in again with the same bytes keeps its node and its public link instead
of uploading a copy (issue 13); ``megafs get`` of a folder link uses it to find files already
complete.  The MAC check is ``remotefile``'s (shared with every download).  Reads the file in
MAC-chunk steps (at most 1 MiB in memory); no network I/O.
"""
from __future__ import annotations

import os
import threading

from .. import chunks, crypto
from ..errors import IntegrityError
from ..osio import read_at
from .remotefile import FileMac, check_empty

READ_STEP = 1 << 20


def same_content(path: str, key: crypto.FileKey, size: int,
                 cancel: threading.Event | None = None) -> bool:
    """Whether the file at ``path`` holds exactly the ``size`` bytes MAC'd by ``key``.

    False as soon as the sizes differ, when ``cancel`` is set, or on a read error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_size == size and fd_matches(fd, key, size, cancel)
    except OSError:
        return False
    finally:
        os.close(fd)


def fd_matches(fd: int, key: crypto.FileKey, size: int,
               cancel: threading.Event | None = None) -> bool:
    """Whether the first ``size`` bytes of ``fd`` have the meta-MAC in ``key`` (the MAC check
    of ``remotefile``: ``FileMac``, and ``check_empty`` for an empty file).  False when
    ``cancel`` is set, on a read error or when the file is shorter."""
    try:
        if size == 0:
            check_empty(key, "the file")
            return True
        mac = FileMac(key, size)
        buf = bytearray(READ_STEP)
        for offset, length in chunks.spans(size):
            if cancel is not None and cancel.is_set():
                return False
            view = memoryview(buf)[:length]
            if read_at(fd, view, offset) != length:
                return False
            mac.add(offset, crypto.chunk_mac(key.aes_key, key.nonce, view))
        mac.check("the file")
        return True
    except (OSError, IntegrityError):
        return False
