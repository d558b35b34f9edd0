"""A CPython workaround: keep one Python thread state per libfuse worker thread.

libfuse's worker threads are not Python threads: ctypes gives every callback a brand-new
thread state and deletes it on return, and in CPython 3.11 each new thread state mmaps its own
frame stack, which the deletion munmaps again (with a TLB shoot-down on every core).  Profiling
``ls -l`` of 10,000 files showed that as ~45% of the mount's CPU (about 50 us per request).  So
the first callback on a libfuse thread takes one extra GIL-state reference, keeping its thread
state alive; a pthread TLS destructor frees it when libfuse ends the thread, so nothing leaks.

Guarded: only for CPython 3.11-3.13 (the versions whose thread-state layout this was measured
on), switched off with ``MEGAFS_PIN_THREADS=0``; the suite runs mount tests both ways.  Any
failure to set it up turns it off quietly (it is an optimisation, never needed for
correctness).
"""
from __future__ import annotations

import ctypes
import logging
import platform
import sys
import threading

from .. import config

log = logging.getLogger(__name__)

SUPPORTED = platform.python_implementation() == "CPython" and (3, 11) <= sys.version_info[:2] \
    < (3, 14)


class _Pinned(threading.local):
    """Per-thread flag: this thread's state is kept (or needs no keeping)."""

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
_tls_key = ctypes.c_uint(0)
_tls = {"ready": False, "failed": False}
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


def enabled() -> bool:
    """Whether the workaround applies here (CPython version and ``$MEGAFS_PIN_THREADS``)."""
    return SUPPORTED and config.pin_threads()


def pin() -> None:
    """Keep the current libfuse thread's Python thread state (first call per thread only)."""
    if _pinned.done:
        return
    _pinned.done = True
    if threading.get_ident() in threading._active:   # type: ignore[attr-defined]
        return   # a Python thread: its state lives as long as the thread anyway
    if _tls["failed"]:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        with _tls_lock:
            if not _tls["ready"]:
                if libc.pthread_key_create(ctypes.byref(_tls_key), _destructor) != 0:
                    _tls["failed"] = True
                    return
                _tls["ready"] = True
        _api.PyGILState_Ensure()
        libc.pthread_setspecific(_tls_key, ctypes.c_void_p(_api.PyThreadState_Get()))
    except (OSError, AttributeError):
        _tls["failed"] = True
        log.debug("cannot keep the thread states of libfuse threads", exc_info=True)
