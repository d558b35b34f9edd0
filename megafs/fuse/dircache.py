"""The kernel's readdir cache for folder listings (issue 23: a warm ``ls -l`` of 2,000 files).

What the kernel does (Linux fs/fuse, since 4.20): a folder opened with ``FOPEN_CACHE_DIR``
keeps the entries of its listing (names, types, inode numbers; not their attributes) in the
folder inode's page cache, and a later ``getdents`` is answered from there with no request at
all.  An open without ``FOPEN_KEEP_CACHE`` drops those pages first (``fuse_dir_open``), so only
an open with both reuses the previous listing.  The kernel itself resets the cache when the
folder's mtime or i_version changes, and bumps i_version on every create, mkdir, symlink,
unlink, rmdir and rename it sends into that folder (``fuse_dir_changed``); a
``fuse_lowlevel_notify_inval_inode`` of the folder (libfuse's ``fuse_invalidate_path``, what
the change feed sends for the folders of another client's changes: ``tree/packets.py
paths_touched``) drops the pages, which also resets it.

What megafs adds, so a listing is never older than the folder (``ListingCache``): every open
asks for ``FOPEN_CACHE_DIR``, and ``FOPEN_KEEP_CACHE`` only when (a) the folder's *stamp* is
the one it had when the kernel's cache was last filled (the stamp is the set of maps the
listing is made of, compared by identity: the tree's name map of the folder and the
namespace's overlay of staged files shown in it, both replaced, never changed, on every
change; ``Namespace.stamp``), so a change megafs makes itself (a commit, a retire, the change
feed) is seen at the next open even where no invalidation reached the kernel, and (b) that
fill is younger than ``KEEP_FOR``: the entries' attributes came with that fill (readdirplus)
and the kernel keeps them ``CACHE_TIMEOUT`` seconds; past that an ``ls -l`` answered from the
cache would send one lookup per entry, so the listing is filled afresh instead.

libfuse: the high-level API passes ``cache_readdir`` and ``keep_cache`` from ``opendir`` to
the kernel only since 3.16.1 (libfuse commit 98eb808, "Pass cache_readdir and keep_cache from
high level API"; 3.14.0's ``fuse_lib_opendir`` copies back ``fh`` alone).  For libfuse
3.14-3.16 ``OpendirHook`` puts a wrapper into the session's low-level operation table
(``struct fuse_session`` of lib/fuse_i.h, the same layout in 3.14.0, 3.15.0 and 3.16.1) in
front of libfuse's own ``opendir``; the high-level ``opendir`` then sets the two bits on the
low-level ``fuse_file_info`` that libfuse replies with (``fuse_reply_open``).  The table is
checked before it is touched (the session's ``fd`` and ``mountpoint`` where libfuse's own
functions say they are, every replaced or neighbouring slot a function inside libfuse); if
anything differs the hook is not installed and listings are simply not cached.

Measured (``ls -l`` of 2,000 files, ``scripts/bench --wan --wan-profiles home --wan-rounds 3``
with main as baseline, 3 interleaved rounds, medians; README "Performance"): warm 0.012 s with
the cache against 0.024 s without (main) and rclone mount's 0.021 s.  Without it every warm
listing cost four 128 KiB readdirplus requests, about 9 ms of Python (py-spy: half building
the entries, half handing them to libfuse); with it the kernel sends none.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import mfusepy

from .options import CACHE_TIMEOUT

log = logging.getLogger(__name__)

KEEP_FOR = CACHE_TIMEOUT - 10.0     # s a filled listing is reused (its attributes last 60 s)
REMEMBERED = 1024                   # folders whose last fill is remembered (LRU)
HOOK_VERSIONS = range(314, 317)     # libfuse 3.14-3.16: fuse_session layout checked below
OPENDIR, NEIGHBOURS = 20, (0, 1, 2, 21, 22)   # fuse_lowlevel_ops slots: opendir; init,
#                                   destroy, lookup, readdir, releasedir (fuse_lowlevel.h)


class _SessionHead(ctypes.Structure):
    """The first fields of libfuse 3.14-3.16's ``struct fuse_session`` (lib/fuse_i.h); its
    ``struct fuse_lowlevel_ops op`` follows at the next pointer-aligned offset."""

    _fields_ = [("mountpoint", ctypes.c_void_p), ("exited", ctypes.c_int),
                ("fd", ctypes.c_int), ("io", ctypes.c_void_p), ("mo", ctypes.c_void_p),
                ("debug", ctypes.c_int), ("deny_others", ctypes.c_int)]


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


FileInfoPtr = ctypes.POINTER(mfusepy.fuse_file_info)
_OPENDIR_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, FileInfoPtr)


def _library_base(address: int | None) -> int | None:
    """The load address of the shared object holding ``address`` (``dladdr``), or None."""
    dladdr = ctypes.CDLL(None).dladdr     # glibc's, among the process's global symbols
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if not address or not dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
        return None
    return info.dli_fbase


class OpendirHook:
    """Gives the high-level ``opendir`` the low-level ``fuse_file_info`` that libfuse 3.14-3.16
    reply with (see the module docstring).  ``install`` once, from a FUSE callback; then
    ``current()`` inside ``opendir`` is that struct, or None without the hook."""

    def __init__(self) -> None:
        self._pending: dict[int, Any] = {}     # libfuse thread -> its low-level fi
        self._original: Callable | None = None
        self._wrapper = _OPENDIR_T(self._opendir)   # kept alive as long as the hook
        self.installed = False

    def install(self, fuse: int, mountpoint: str) -> bool:
        """Put the wrapper in front of libfuse's low-level ``opendir`` of the session of
        ``fuse`` (libfuse's ``struct fuse *``); False (nothing changed) unless libfuse is
        3.14-3.16 and the session looks exactly as expected."""
        lib = mfusepy._libfuse
        try:
            lib.fuse_version.restype = ctypes.c_int
            version = lib.fuse_version()
            if version not in HOOK_VERSIONS or not fuse:
                return False
            lib.fuse_get_session.argtypes = [ctypes.c_void_p]
            lib.fuse_get_session.restype = ctypes.c_void_p
            lib.fuse_session_fd.argtypes = [ctypes.c_void_p]
            lib.fuse_session_fd.restype = ctypes.c_int
            session = lib.fuse_get_session(ctypes.c_void_p(fuse))
            if not session:
                return False
            head = _SessionHead.from_address(session)
            if head.fd != lib.fuse_session_fd(ctypes.c_void_p(session)) or not head.mountpoint \
                    or ctypes.string_at(head.mountpoint) != mountpoint.encode():
                log.info("readdir cache off: libfuse's session is not laid out as expected")
                return False
            ops = (ctypes.c_void_p * 64).from_address(session + ctypes.sizeof(_SessionHead))
            base = _library_base(ctypes.cast(lib.fuse_version, ctypes.c_void_p).value or 0)
            if base is None or any(_library_base(ops[i] or 0) != base
                                   for i in (OPENDIR,) + NEIGHBOURS):
                log.info("readdir cache off: libfuse's operation table is not as expected")
                return False
            self._original = _OPENDIR_T(ops[OPENDIR] or 0)
            ops[OPENDIR] = ctypes.cast(self._wrapper, ctypes.c_void_p).value
        except (AttributeError, OSError, ValueError, TypeError) as exc:
            log.info("readdir cache off: %s", exc)
            return False
        self.installed = True
        return True

    def _opendir(self, req: int, ino: int, llfi: Any) -> None:
        thread = threading.get_ident()
        self._pending[thread] = llfi
        try:
            assert self._original is not None
            self._original(req, ino, llfi)
        finally:
            self._pending.pop(thread, None)

    def current(self) -> Any:
        """The low-level ``fuse_file_info`` of the ``opendir`` this thread is serving, or
        None (no hook, or called elsewhere)."""
        return self._pending.get(threading.get_ident())


class ListingCache:
    """When an open folder may keep the kernel's cached listing (see the module docstring):
    the stamp and time of the last fill of each folder, by (path, folder handle)."""

    def __init__(self, keep_for: float = KEEP_FOR, remembered: int = REMEMBERED) -> None:
        self.keep_for, self.remembered = keep_for, remembered
        self._lock = threading.Lock()
        self._fills: OrderedDict[tuple[str, str], tuple[tuple, float]] = OrderedDict()

    def filled(self, key: tuple[str, str], stamp: tuple) -> None:
        """The kernel is being given the whole listing of ``key`` as of ``stamp`` (taken
        before the listing was made)."""
        with self._lock:
            self._fills[key] = (stamp, time.monotonic())
            self._fills.move_to_end(key)
            while len(self._fills) > self.remembered:
                self._fills.popitem(last=False)

    def keep(self, key: tuple[str, str], stamp: tuple) -> bool:
        """Whether an open of ``key`` whose stamp is now ``stamp`` may keep the kernel's
        cached listing: same stamp (every part the same object) and a fill younger than
        ``keep_for``."""
        with self._lock:
            last = self._fills.get(key)
        if last is None or time.monotonic() - last[1] >= self.keep_for:
            return False
        return len(last[0]) == len(stamp) and all(a is b for a, b in zip(last[0], stamp))


__all__ = ["KEEP_FOR", "ListingCache", "OpendirHook"]
