"""The mfusepy (libfuse 3) adapter: translate FUSE arguments and errors, nothing else.

Every operation calls into ``vfs.links.LinkLayer`` (an account's mount) or
``vfs.linkfs.LinkFileSystem`` (a folder link, read-only).  Every exception becomes
``FuseOSError`` with the errno from ``errors.to_errno`` (the binding would otherwise answer
EINVAL for anything that is not an OSError); an exception that is not a ``MegafsError`` or
``OSError`` is a bug and is logged at ERROR with its traceback.  ``MegaFUSE`` subclasses the
binding's ``FUSE`` where libfuse 3 gives more than mfusepy passes on: the open file of
``truncate``/``utimens`` (needed after the file was unlinked) and ``UTIME_OMIT``/``UTIME_NOW``
(``touch -m``, ``futimens``).  ``.link`` files are opened with ``direct_io`` (their size changes
when the link is known).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import struct
import threading
import time
from typing import Any, Callable, Iterable

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")   # before the binding picks a libfuse

import mfusepy  # noqa: E402
from mfusepy import FuseOSError, Operations  # noqa: E402

from ..errors import MegafsError, to_errno  # noqa: E402
from ..vfs.linkfs import LinkFileSystem  # noqa: E402
from ..vfs.links import LinkLayer  # noqa: E402
from . import threadstate  # noqa: E402
from .dircache import ListingCache, OpendirHook  # noqa: E402
from .options import CACHE_TIMEOUT  # noqa: E402

log = logging.getLogger(__name__)

UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2     # utimensat(2) tv_nsec markers
NS = 1_000_000_000
FUSE_READDIR_PLUS, FUSE_FILL_DIR_PLUS = 1, 2              # libfuse 3 fuse.h enums
_PIN = threadstate.enabled()


def _translate(func: Callable) -> Callable:
    name = func.__name__

    @functools.wraps(func)
    def wrapper(self: "MegaOps", *args: Any) -> Any:
        if _PIN:
            threadstate.pin()
        try:
            return func(self, *args)
        except FuseOSError:
            raise
        except MegafsError as exc:
            log.debug("%s %s: %s", name, args[0] if args and isinstance(args[0], str) else "",
                      exc)
            raise FuseOSError(to_errno(exc)) from None
        except OSError as exc:
            if not exc.errno:
                log.error("%s failed with an OSError without errno", name, exc_info=True)
            raise FuseOSError(to_errno(exc)) from None
        except Exception as exc:
            log.error("unexpected error in %s", name, exc_info=True)
            raise FuseOSError(to_errno(exc)) from None
    return wrapper


def _fh(fi: Any) -> int:
    """The file handle number in whatever the binding passed (struct, int or None)."""
    if fi is None or isinstance(fi, bool):
        return 0
    if isinstance(fi, int):
        return fi
    try:
        return int(fi.fh)
    except (AttributeError, ValueError):   # a NULL fuse_file_info pointer
        return 0


class MegaOps(Operations):
    """The operations table handed to libfuse."""

    use_ns = True

    def __init__(self, fs: LinkLayer | LinkFileSystem,
                 on_init: Callable[[], None] | None = None) -> None:
        self.fs = fs
        self.on_init = on_init
        self.invalidate = Invalidator()
        fs.interrupted = interrupted

    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            config.entry_timeout = CACHE_TIMEOUT
            config.attr_timeout = CACHE_TIMEOUT
            config.negative_timeout = 0.0
            # Not hard_remove: libfuse renames a file removed while open to a hidden name
            # (the core treats that as the removal) so that fstat, which the kernel sends
            # without the open file, still finds it by that path until the last close.
            config.hard_remove = 0
            config.nullpath_ok = 1
            config.use_ino = 0
        self.invalidate.bind()
        if self.on_init is not None:
            try:
                self.on_init()
            except Exception:
                log.error("readiness callback failed", exc_info=True)

    @_translate
    def getattr(self, path: str | None, fh: Any = None) -> dict:
        return self.fs.getattr(path, _fh(fh) or None)

    @_translate
    def readdir(self, path: str | None, fh: Any) -> list[str]:
        return [".", ".."] + self.fs.readdir(path, _fh(fh) or None)

    @_translate
    def readdir_plus(self, path: str | None, fh: int) -> list[tuple[str, dict | None]]:
        """Entries with their attributes (see ``MegaFUSE.readdir_fuse_3``)."""
        return [(".", None), ("..", None)] + list(self.fs.readdir_attrs(path, fh or None))

    @_translate
    def opendir(self, path: str) -> int:
        return self.fs.opendir(path)

    @_translate
    def releasedir(self, path: str | None, fh: Any) -> int:
        self.fs.releasedir(_fh(fh))
        return 0

    def listing_stamp(self, path: str | None, fh: int) -> tuple[str, tuple] | None:
        """(folder handle, stamp) of an open folder's listing (``fuse/dircache.py``), or None
        if it has none now (then nothing of it is cached)."""
        try:
            return self.fs.listing_stamp(path, fh or None)
        except (MegafsError, OSError):
            return None

    @_translate
    def statfs(self, path: str) -> dict:
        return self.fs.statfs()

    @_translate
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        flags = getattr(fi, "flags", os.O_WRONLY)
        fh = self.fs.create(path, flags, mode & 0o7777)
        if fi is not None and not isinstance(fi, int):
            fi.fh = fh
            return 0
        return fh

    @_translate
    def open(self, path: str, fi: Any) -> int:
        flags = fi.flags if hasattr(fi, "flags") else int(fi)
        fh = self.fs.open(path, flags)
        if hasattr(fi, "fh"):
            fi.fh = fh
            if fh and self.fs.is_link(fh):
                fi.direct_io = 1
            return 0
        return fh

    @_translate
    def read(self, path: str | None, size: int, offset: int, fi: Any) -> bytes:
        return self.fs.read(_fh(fi), size, offset)

    @_translate
    def write(self, path: str | None, data: bytes, offset: int, fi: Any) -> int:
        return self.fs.write(_fh(fi), data, offset)

    @_translate
    def truncate(self, path: str | None, length: int, fh: Any = None) -> None:
        self.fs.truncate(path, length, _fh(fh) or None)

    @_translate
    def flush(self, path: str | None, fi: Any) -> None:
        self.fs.flush(_fh(fi))

    @_translate
    def release(self, path: str | None, fi: Any) -> None:
        self.fs.release(_fh(fi))

    @_translate
    def fsync(self, path: str | None, datasync: int, fi: Any) -> None:
        self.fs.fsync(_fh(fi))

    @_translate
    def mkdir(self, path: str, mode: int) -> None:
        self.fs.mkdir(path, mode & 0o7777)

    @_translate
    def rmdir(self, path: str) -> None:
        self.fs.rmdir(path)

    @_translate
    def unlink(self, path: str) -> None:
        self.fs.unlink(path)

    @_translate
    def rename(self, old: str, new: str) -> None:
        self.fs.rename(old, new)

    @_translate
    def utimens(self, path: str | None, mtime_ns: int | None = None, fh: Any = None) -> None:
        self.fs.utimens(path, mtime_ns, _fh(fh) or None)

    @_translate
    def chmod(self, path: str | None, mode: int, fh: Any = None) -> None:
        self.fs.chmod(path, mode & 0o7777, _fh(fh) or None)

    @_translate
    def chown(self, path: str | None, uid: int, gid: int) -> None:
        self.fs.chown(path)              # accepted, not stored

    @_translate
    def symlink(self, target: str, source: str) -> None:
        # mfusepy's names: ``target`` is the new link's path, ``source`` what it points to
        self.fs.symlink(target, source)

    @_translate
    def link(self, target: str, source: str) -> None:
        raise FuseOSError(errno.EPERM)

    @_translate
    def mknod(self, path: str, mode: int, dev: int) -> None:
        raise FuseOSError(errno.EPERM)

    @_translate
    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    @_translate
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.fs.getxattr(path, name)

    @_translate
    def listxattr(self, path: str) -> list[str]:
        return self.fs.listxattr(path)

    @_translate
    def setxattr(self, path: str, name: str, value: bytes, options: int,
                 position: int = 0) -> None:
        self.fs.setxattr(path, name, value, options)

    @_translate
    def removexattr(self, path: str, name: str) -> None:
        self.fs.removexattr(path, name)

    def access(self, path: str, amode: int) -> int:
        return 0


class Invalidator:
    """Drops the kernel's cached attributes of mount paths (``fuse_invalidate_path``), so
    another client's changes show at once although the kernel may cache for
    ``CACHE_TIMEOUT``.  Bound to libfuse at ``init``; safe to call from any thread."""

    def __init__(self) -> None:
        self._fuse: int | None = None
        lib = mfusepy._libfuse
        self._call = getattr(lib, "fuse_invalidate_path", None)
        if self._call is not None:
            self._call.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            self._call.restype = ctypes.c_int

    def bind(self) -> None:
        """Remember libfuse's ``struct fuse`` (call from a FUSE callback, e.g. ``init``)."""
        self._fuse = mfusepy._libfuse.fuse_get_context().contents.fuse

    def __call__(self, paths: Iterable[str]) -> None:
        if self._fuse is None or self._call is None:
            return
        for path in paths:
            # -ENOENT: the kernel has nothing cached for it; nothing to do
            self._call(self._fuse, path.encode("utf-8", "surrogateescape"))


def interrupted() -> bool:
    """Whether the FUSE request served by this thread was interrupted (Ctrl-C, SIGKILL), or
    the process that made it is gone.

    The second matters for reads: the kernel's readahead sends them as background requests,
    which it never interrupts, and the page cache pages such a read holds locked block every
    later ``open`` of the file in an unkillable wait until the read ends (seen with a read
    waiting out the transfer quota: a second ``cat`` of the file sat in
    ``invalidate_inode_pages2_range`` until the window moved).  So a wait also ends once its
    reader has exited."""
    try:
        if mfusepy._libfuse.fuse_interrupted():
            return True
        pid = int(mfusepy._libfuse.fuse_get_context().contents.pid)
    except (AttributeError, OSError, ValueError):
        return False
    return pid > 0 and not _alive(pid)


def _alive(pid: int) -> bool:
    """Whether process (or thread) ``pid`` exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True               # exists, owned by someone else
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            state = handle.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return True               # no /proc: trust kill(0)
    return state not in ([b"Z"], [b"X"])


def _timespec_ns(ts: Any) -> int | None:
    """A utimens timespec in ns; None for ``UTIME_OMIT``; now for ``UTIME_NOW``."""
    if ts.tv_nsec == UTIME_OMIT:
        return None
    if ts.tv_nsec == UTIME_NOW:
        return time.time_ns()
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec


class StatPacker:
    """Writes a stat dict (``FileSystem.stat_entry``'s keys, times in ns) into the binding's
    ``c_stat`` with one ``struct.pack_into``, zeroing every other byte.

    Hand-written because mfusepy's ``set_st_attrs`` (a ctypes assignment per field, after a
    memset) was 40% of a readdirplus of 1,000 entries under py-spy: 2.9 us against 0.85 us
    per entry.  The layout is read from ``c_stat``'s own field offsets, so it follows the
    platform the binding describes."""

    KEYS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blksize", "st_blocks")
    TIMES = ("st_atime", "st_mtime", "st_ctime")
    _CODES = {(4, False): "I", (8, False): "Q", (4, True): "i", (8, True): "q"}

    def __init__(self, c_stat: Any = None, c_timespec: Any = None) -> None:
        c_stat = c_stat or mfusepy.c_stat
        c_timespec = c_timespec or mfusepy.c_timespec
        items: list[tuple[int, int, str, str, int]] = []   # offset, size, code, key, part

        def code(owner: Any, name: str) -> str:
            ctype = dict(owner._fields_)[name]
            return self._CODES[(ctypes.sizeof(ctype), ctype(-1).value < 0)]

        for key in self.KEYS:
            desc = getattr(c_stat, key)
            items.append((desc.offset, desc.size, code(c_stat, key), key, -1))
        for key in self.TIMES:
            base = getattr(c_stat, key + "spec").offset
            for part, sub in enumerate(("tv_sec", "tv_nsec")):
                desc = getattr(c_timespec, sub)
                items.append((base + desc.offset, desc.size, code(c_timespec, sub), key, part))
        items.sort()
        fmt, pos = "=", 0
        for offset, size, fcode, _, _ in items:
            fmt += ("%dx" % (offset - pos) if offset > pos else "") + fcode
            pos = offset + size
        fmt += "%dx" % (ctypes.sizeof(c_stat) - pos) if ctypes.sizeof(c_stat) > pos else ""
        self.struct = struct.Struct(fmt)
        self.order = [(key, part) for _, _, _, key, part in items]

    def pack_into(self, st: Any, attrs: dict) -> None:
        """Fill ``st`` (a ``c_stat``) from ``attrs``; missing keys are 0."""
        values = []
        for key, part in self.order:
            value = attrs.get(key, 0)
            values.append(value if part < 0 else value % NS if part else value // NS)
        self.struct.pack_into(st, 0, *values)


_PACKER = StatPacker()


class MegaFUSE(mfusepy.FUSE):
    """``mfusepy.FUSE`` passing libfuse 3's open file and ``UTIME_*`` markers on."""

    def __init__(self, operations: Any, mountpoint: str, **kwargs: Any) -> None:
        self._listing_lock = threading.Lock()
        self._listings: dict[int, list] = {}   # open folder -> its listing (readdir_fuse_3)
        self._folders: dict[int, tuple[str, str]] = {}   # open folder -> (path, handle)
        self.hook = OpendirHook()
        self.fills = ListingCache()
        self._mountpoint = os.path.realpath(mountpoint)
        super().__init__(operations, mountpoint, **kwargs)

    def _init(self, conn: Any, config: Any) -> None:
        """libfuse's init: the ``opendir`` hook first (``fuse/dircache.py``)."""
        fuse = mfusepy._libfuse.fuse_get_context().contents.fuse
        if mfusepy.fuse_version_major == 3 and mfusepy.fuse_version_minor < 17:
            log.info("kernel readdir cache: %s", "on (opendir hook)" if self.hook.install(
                fuse, self._mountpoint) else "off")
        super()._init(conn, config)

    def opendir(self, path: bytes, fip: Any) -> int:
        """Open a folder; ask the kernel to cache its listing, and to keep the cached one when
        it is still the folder's (``dircache.ListingCache.keep``)."""
        text = self._path(path) or "/"
        fi = fip.contents
        fi.fh = fh = self.operations.opendir(text)
        found = self.operations.listing_stamp(text, fh)
        if found is None:
            return 0
        keep = self.fills.keep((text, found[0]), found[1])
        with self._listing_lock:
            self._folders[fh] = (text, found[0])
        low = self.hook.current()
        for target in (fi, low.contents if low else None):
            if target is not None:
                target.cache_readdir, target.keep_cache = 1, int(keep)
        return 0

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        return self.operations.truncate(self._path(path), length, fh)

    def readdir_fuse_3(self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any,
                       flags: int) -> int:
        """readdir with attributes when the kernel asks for readdirplus: ``ls -l`` of a
        folder then costs one request per buffer of entries instead of one lookup per entry.

        Every entry is passed with its offset (its index + 1).  libfuse 3.14 sends the entries
        of a listing filled at offset 0 with ``ino = 0`` (``readdir_fill_from_list``), which
        tells the kernel to ignore their attributes: it then looked every name up again (2,000
        LOOKUPs for an ``ls -l`` of 2,000 files).  With offsets it answers each buffer as it is
        filled and gives every entry its node id (``fill_dir_plus``).  The listing is taken
        once per open folder (at offset 0) and kept until ``releasedir``, so the next buffers
        continue the same listing."""
        fill = FUSE_FILL_DIR_PLUS if flags & FUSE_READDIR_PLUS else 0
        fh = fip.contents.fh
        with self._listing_lock:
            items = self._listings.get(fh) if offset else None
            key = self._folders.get(fh)
        if items is None:
            # the stamp before the listing: a change in between makes the next open refill
            found = self.operations.listing_stamp(self._path(path), fh) if key and not offset \
                else None
            items = self.operations.readdir_plus(self._path(path), fh)
            if key and found and found[0] == key[1]:
                self.fills.filled(key, found[1])
            if fh:
                with self._listing_lock:
                    self._listings[fh] = items
        st = mfusepy.c_stat()
        ref = ctypes.byref(st)
        pack = _PACKER.pack_into
        encoding, errors = self.encoding, self.errors
        for index in range(offset, len(items)):
            name, attrs = items[index]
            if attrs:
                pack(st, attrs)
            if filler(buf, name.encode(encoding, errors), ref if attrs else None, index + 1,
                      fill if attrs else 0) != 0:
                break
        return 0

    def releasedir(self, path: bytes | None, fip: Any) -> int:
        with self._listing_lock:
            self._listings.pop(fip.contents.fh, None)
            self._folders.pop(fip.contents.fh, None)
        return super().releasedir(path, fip)

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        """``fchmod`` comes without a path (``nullpath_ok``): pass the open file on."""
        fh = fip.contents.fh if fip else None
        return self.operations.chmod(self._path(path), mode, fh)

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        mtime = _timespec_ns(buf.contents.modtime) if buf else time.time_ns()
        fh = fip.contents.fh if fip else None
        return self.operations.utimens(self._path(path), mtime, fh)


def serve(ops: MegaOps, mountpoint: str, options: dict[str, Any]) -> None:
    """Mount and serve until unmounted (foreground, multi-threaded)."""
    log.info("thread states of libfuse threads: %s", "kept" if _PIN else "not kept")
    if mfusepy.fuse_version_major != 3:
        log.warning("libfuse %d.%d is in use; megafs is built for libfuse 3",
                    mfusepy.fuse_version_major, mfusepy.fuse_version_minor)
    MegaFUSE(ops, mountpoint, foreground=True, nothreads=False, raw_fi=True, **options)


__all__ = ["MegaOps", "MegaFUSE", "serve", "interrupted"]
