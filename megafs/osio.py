"""Operating-system helpers shared by the client and the local server (ground floor: imports
nothing of megafs).

``read_at`` fills a caller's buffer from a file at an offset with ``preadv`` (no intermediate
bytes object: reading 1 GiB from the page cache into a bytearray took 0.5 s with ``pread`` +
copy and 0.1 s with ``preadv``, see ``api/http.py``), looping over short reads."""
from __future__ import annotations

import os

_preadv = getattr(os, "preadv", None)


def read_at(fd: int, view: memoryview, offset: int, *, align: int = 0) -> int:
    """Fill ``view`` from ``fd`` at ``offset``; return the bytes read (fewer only at the end
    of the file).  With ``align`` (files opened ``O_DIRECT``), a short read that ends off a
    multiple of ``align`` is the end of the file and stops the loop.  OSError as the system
    raises it."""
    got = 0
    while got < len(view):
        if _preadv is not None:
            n = _preadv(fd, [view[got:]], offset + got)
        else:
            data = os.pread(fd, len(view) - got, offset + got)
            n = len(data)
            view[got:got + n] = data
        if not n:
            break
        got += n
        if align and got % align:
            break
    return got
