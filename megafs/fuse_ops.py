"""The fusepy adapter: translate FUSE arguments and errors, nothing else.

Every operation calls into ``fs.MegaFS``.  Every exception is turned into ``FuseOSError`` with
the errno from ``errors.to_errno`` (fusepy would otherwise answer EINVAL for anything that is
not an OSError); an exception that is not a ``MegafsError`` or ``OSError`` is a bug and is
logged at ERROR with its traceback.  Uses ``raw_fi`` so that ``.link`` files can be opened with
``direct_io`` (their size changes when the link becomes known).  No filesystem logic here.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import threading
from typing import Any, Callable

from fuse import FuseOSError, Operations

from .errors import MegafsError, to_errno
from .fs import MegaFS

log = logging.getLogger(__name__)


def _translate(func: Callable) -> Callable:
    name = func.__name__

    @functools.wraps(func)
    def wrapper(self: "MegaOps", *args: Any) -> Any:
        try:
            return func(self, *args)
        except FuseOSError:
            raise
        except MegafsError as exc:
            log.debug("%s: %s", name, exc)
            raise FuseOSError(to_errno(exc)) from None
        except OSError as exc:
            code = to_errno(exc)
            if not exc.errno:
                log.error("%s failed with an OSError without errno", name, exc_info=True)
            raise FuseOSError(code) from None
        except Exception as exc:
            log.error("unexpected error in %s", name, exc_info=True)
            raise FuseOSError(to_errno(exc)) from None
    return wrapper


class MegaOps(Operations):
    use_ns = True

    def __init__(self, core: MegaFS, on_init: Callable[[], None] | None = None) -> None:
        self.core = core
        self.on_init = on_init

    def init(self, path: str) -> None:
        if self.on_init is not None:
            try:
                self.on_init()
            except Exception:
                log.error("readiness callback failed", exc_info=True)

    @staticmethod
    def _fh(fi: Any) -> int:
        if fi is None or isinstance(fi, bool):
            return 0
        if isinstance(fi, int):
            return fi
        try:
            return int(fi.fh)
        except (AttributeError, ValueError):  # a NULL fuse_file_info pointer
            return 0

    @_translate
    def getattr(self, path: str, fh: Any = None) -> dict:
        st = self.core.getattr(path, self._fh(fh) or None)
        for key in ("st_mtime", "st_atime", "st_ctime"):
            st[key] = int(st[key] * 1e9)
        return st

    @_translate
    def readdir(self, path: str, fh: Any) -> list[str]:
        return self.core.readdir(path)

    @_translate
    def statfs(self, path: str) -> dict:
        return self.core.statfs()

    @_translate
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fh = self.core.create(path, mode)
        if fi is not None:
            fi.fh = fh
            return 0
        return fh

    @_translate
    def open(self, path: str, fi: Any) -> int:
        flags = fi.flags if hasattr(fi, "flags") else int(fi)
        fh = self.core.open(path, flags)
        if hasattr(fi, "fh"):
            fi.fh = fh
            if self.core.is_link_handle(fh):
                fi.direct_io = 1
            return 0
        return fh

    @_translate
    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        return self.core.read(self._fh(fi), size, offset)

    @_translate
    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        return self.core.write(self._fh(fi), data, offset)

    @_translate
    def truncate(self, path: str, length: int, fh: Any = None) -> None:
        self.core.truncate(path, length, self._fh(fh) or None)

    @_translate
    def flush(self, path: str, fi: Any) -> None:
        self.core.flush(self._fh(fi))

    @_translate
    def release(self, path: str, fi: Any) -> None:
        self.core.release(self._fh(fi))

    @_translate
    def fsync(self, path: str, datasync: int, fi: Any) -> None:
        self.core.fsync(self._fh(fi))

    @_translate
    def mkdir(self, path: str, mode: int) -> None:
        self.core.mkdir(path, mode)

    @_translate
    def rmdir(self, path: str) -> None:
        self.core.rmdir(path)

    @_translate
    def unlink(self, path: str) -> None:
        self.core.unlink(path)

    @_translate
    def rename(self, old: str, new: str) -> None:
        self.core.rename(old, new)

    @_translate
    def utimens(self, path: str, times: Any = None) -> None:
        self.core.utimens(path, times)

    @_translate
    def chmod(self, path: str, mode: int) -> None:
        self.core.resolve(path)  # accepted, not stored

    @_translate
    def chown(self, path: str, uid: int, gid: int) -> None:
        self.core.resolve(path)  # accepted, not stored

    @_translate
    def symlink(self, target: str, source: str) -> None:
        raise FuseOSError(errno.EPERM)

    @_translate
    def link(self, target: str, source: str) -> None:
        raise FuseOSError(errno.EPERM)

    @_translate
    def mknod(self, path: str, mode: int, dev: int) -> None:
        raise FuseOSError(errno.EPERM)

    @_translate
    def readlink(self, path: str) -> str:
        raise FuseOSError(errno.EINVAL)  # nothing here is a symlink (readlink(2) says EINVAL)

    @_translate
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.core.getxattr(path, name)

    @_translate
    def listxattr(self, path: str) -> list[str]:
        return self.core.listxattr(path)

    @_translate
    def setxattr(self, path: str, name: str, value: bytes, options: int,
                 position: int = 0) -> None:
        self.core.setxattr(path, name, value)

    @_translate
    def removexattr(self, path: str, name: str) -> None:
        self.core.removexattr(path, name)

    @_translate
    def opendir(self, path: str) -> int:
        ent = self.core.resolve(path)
        if ent.kind != "dir":
            raise FuseOSError(errno.ENOTDIR)
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def access(self, path: str, amode: int) -> int:
        return 0

    def destroy(self, path: str) -> None:
        return None

    # fusepy calls these through Operations.__call__; keep unknown ops explicit.
    def __call__(self, op: str, *args: Any) -> Any:
        if not _pinned.done:
            _pin_thread_state()
        method = getattr(self, op, None)
        if method is None:
            raise FuseOSError(errno.ENOSYS)
        return method(*args)


# --- keeping a Python thread state per libfuse worker thread -----------------------------------
# libfuse's worker threads are not Python threads: ctypes gives every callback a brand-new
# thread state and deletes it on return, and in CPython 3.11 each new thread state mmaps its own
# frame stack, which the deletion munmaps again (with a TLB shoot-down on every core).  Profiling
# `ls -l` of 10,000 files showed that as ~45% of the mount's CPU (about 50 us per request).
# So the first callback on a libfuse thread takes one extra GIL-state reference, keeping its
# thread state alive; a pthread TLS destructor frees it when libfuse ends the thread (libfuse 2
# keeps at most 10 idle workers and cancels the rest at unmount), so nothing leaks.
class _Pinned(threading.local):
    done = False


_pinned = _Pinned()
_api = ctypes.pythonapi
_api.PyGILState_Ensure.restype = ctypes.c_int
_api.PyGILState_Release.argtypes = [ctypes.c_int]
_api.PyThreadState_Get.restype = ctypes.c_void_p
_api.PyThreadState_Clear.argtypes = [ctypes.c_void_p]
_api.PyThreadState_Delete.argtypes = [ctypes.c_void_p]
_PYGILSTATE_LOCKED = 0
_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_tls = {"key": ctypes.c_uint(0), "ready": False, "failed": False}
_tls_lock = threading.Lock()


def _drop_pinned(pinned: int | None) -> None:
    """TLS destructor at libfuse thread exit (a ctypes callback, so it holds the GIL)."""
    if not pinned:
        return
    if _api.PyThreadState_Get() == pinned:
        # ctypes found our kept state (the interpreter's own TLS slot was still set): drop our
        # reference and the callback's return deletes it.
        _api.PyGILState_Release(_PYGILSTATE_LOCKED)
    else:
        # glibc already cleared the interpreter's TLS slot, so ctypes made a temporary state
        # for this call; the kept one is not current and can be freed directly.
        _api.PyThreadState_Clear(pinned)
        _api.PyThreadState_Delete(pinned)


_destructor = _DESTRUCTOR(_drop_pinned)


def _pin_thread_state() -> None:
    _pinned.done = True
    if threading.get_ident() in threading._active:   # type: ignore[attr-defined]
        return   # a Python thread: its state lives as long as the thread anyway
    if _tls["failed"]:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        with _tls_lock:
            if not _tls["ready"]:
                if libc.pthread_key_create(ctypes.byref(_tls["key"]), _destructor) != 0:
                    _tls["failed"] = True
                    return
                _tls["ready"] = True
        _api.PyGILState_Ensure()
        libc.pthread_setspecific(_tls["key"], ctypes.c_void_p(_api.PyThreadState_Get()))
    except (OSError, AttributeError):
        _tls["failed"] = True
        log.debug("cannot keep the thread states of libfuse threads", exc_info=True)


def fuse_options(extra: str | None, *, allow_other: bool = False) -> dict[str, Any]:
    """Mount options for fusepy's FUSE(); ``extra`` is the user's ``-o a,b=c`` string."""
    opts: dict[str, Any] = {
        "fsname": "megafs", "subtype": "megafs",
        "big_writes": True,
        # libfuse 2 caps max_write at 128 KiB (its receive buffer); asking for more fails.
        "max_write": 131072, "max_read": 131072,
        # Kernel caches of names and attributes expire after 5 s (the sc poller applies remote
        # changes within ~0.5 s, see fs.RemoteWatcher), so another client's change shows within
        # ~5.5 s.  With 1 s, a warm `ls -l` of 10,000 files (20,000 entries with the .link
        # files) found every entry expired and looked all of them up again (1.5 s instead of
        # ~0.1 s).  New remote names show at once: no negative caching.
        "attr_timeout": 5.0, "entry_timeout": 5.0, "negative_timeout": 0.0,
        # Unlinked-but-open files keep working through their handle; no .fuse_hidden renames.
        "hard_remove": True,
        "default_permissions": True,
    }
    if allow_other:
        opts["allow_other"] = True
    for item in (extra or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        opts[key] = value if eq else True
    return opts


__all__ = ["MegaOps", "fuse_options", "os"]
