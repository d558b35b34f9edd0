"""Whether local bytes are exactly those of a remote file, without downloading it.

A MEGA file key carries the file's meta-MAC: chunk CBC-MACs of the plaintext under the file's
AES key and nonce, folded into 8 bytes.  Computing the MAC of local bytes under the *old* key
and comparing it with the stored one tells whether they are the same bytes (a false match
needs a 64-bit MAC collision under a key the writer never saw).  The write-back queue uses it
so that copying a file in again with the same bytes keeps its node and its public link instead
of uploading a copy (issue 13).  Reads the file in MAC-chunk steps (at most 1 MiB in memory);
no network I/O.
"""
from __future__ import annotations

import os
import threading

from .. import chunks, crypto

READ_STEP = 1 << 20


def same_content(path: str, key: crypto.FileKey, size: int,
                 cancel: threading.Event | None = None) -> bool:
    """Whether the file at ``path`` holds exactly the ``size`` bytes MAC'd by ``key``.

    False as soon as the sizes differ, when ``cancel`` is set, or on a read error."""
    try:
        with open(path, "rb", buffering=0) as fh:
            if os.fstat(fh.fileno()).st_size != size:
                return False
            macs = []
            for offset, length in chunks.spans(size):
                if not length:
                    continue
                if cancel is not None and cancel.is_set():
                    return False
                data = fh.read(length)
                if len(data) != length:
                    return False
                macs.append(crypto.chunk_mac(key.aes_key, key.nonce, data))
    except OSError:
        return False
    return crypto.meta_mac(crypto.condense_macs(key.aes_key, macs)) == key.mac
