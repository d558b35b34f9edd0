"""Daemonizing ``megafs mount``: fork, detach, and report readiness (or the reason for failing)
to the waiting parent through a pipe.

The child becomes a session leader, points stdin at /dev/null and stdout/stderr at the mount's
log file, configures logging once, and runs the mount; it writes ``R<api>\\n`` once the kernel
mount is live (FUSE ``init``) or ``E<reason>\\n`` if it fails.  While its login solves a proof of
work it writes ``P<json>\\n`` about once a second (``hashcash.Progress``): the parent shows the
progress line and waits on, ``READY_TIMEOUT`` counting from the last message (a solve at the
real service's easiness takes minutes on a small machine, and has no deadline).  The parent
returns (pid, api) on ``R`` and raises ``FsError`` with the child's reason otherwise.  If the
parent is interrupted (Ctrl-C) or gives up before that, it stops the child (SIGTERM, then
SIGKILL) and clears a mount it may have made, so nothing is left behind; the bundled server
of ``--local`` dies with the child (``localserver``).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import select
import signal
import time
from typing import Callable

from .. import config
from ..api import hashcash
from ..errors import FsError, describe
from .localserver import alive
from .registry import is_mounted
from .unmount import unmount

log = logging.getLogger(__name__)

READY_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0


def daemonize(run: Callable[[Callable[[str], None]], int], log_path: str, verbosity: int,
              mountpoint: str, level: str | None = None,
              on_progress: Callable[[hashcash.Progress], None] | None = None
              ) -> tuple[int, str]:
    """Run ``run(ready)`` in a detached child; ``ready(api)`` reports the mount live.

    ``on_progress`` gets the child's proof-of-work reports (e.g. the terminal line).
    Returns (child pid, API URL) once ready; FsError with the child's reason otherwise."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: becomes the mount process
        os.close(rfd)
        code = 1
        try:
            os.setsid()
            logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.close(devnull)
            os.close(logfd)
            config.setup_logging(max(1, verbosity), level=level)

            def tell(report: hashcash.Progress) -> None:
                try:
                    os.write(wfd, b"P" + json.dumps(report.as_dict()).encode() + b"\n")
                except OSError:
                    pass
            hashcash.add_observer(tell)

            def ready(api: str) -> None:
                hashcash.remove_observer(tell)
                os.write(wfd, ("R%s\n" % api).encode())
                os.close(wfd)
            code = run(ready)
        except BaseException as exc:  # report to the waiting parent, never raise in the child
            try:
                os.write(wfd, ("E" + describe(exc).replace("\n", " ") + "\n").encode())
            except OSError:
                pass
            log.error("mount failed: %s", describe(exc))
        finally:
            os._exit(code)
    os.close(wfd)
    buf = b""
    try:
        buf = _wait_ready(rfd, on_progress)
    except BaseException:          # Ctrl-C (or anything else): leave nothing behind
        _stop_child(pid, mountpoint)
        raise
    finally:
        os.close(rfd)
    if buf.startswith(b"R"):
        return pid, buf[1:].decode(errors="replace").strip()
    _stop_child(pid, mountpoint)
    if buf.startswith(b"E"):
        raise FsError(errno.EIO, buf[1:].decode(errors="replace").strip())
    if not buf:
        raise FsError(errno.EIO, "the mount process exited before the mount was ready (see %s)"
                      % log_path)
    raise FsError(errno.ETIMEDOUT, "the mount was not ready after %.0f s; stopped it (see %s)"
                  % (READY_TIMEOUT, log_path))


def _wait_ready(rfd: int,
                on_progress: Callable[[hashcash.Progress], None] | None = None) -> bytes:
    """The child's final message (``R...`` or ``E...``); b"" if it exited without one, b"T"
    after ``READY_TIMEOUT`` seconds without any message.  Progress messages go to
    ``on_progress`` and restart the timeout."""
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([rfd], [], [], 1.0)
        if not readable:
            continue
        chunk = os.read(rfd, 65536)
        if not chunk:
            return buf
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.startswith(b"P"):
                return line + b"\n"
            deadline = time.monotonic() + READY_TIMEOUT
            report = _progress(line[1:])
            if report is not None and on_progress is not None:
                on_progress(report)
    return b"T"


def _progress(text: bytes) -> hashcash.Progress | None:
    """A ``P`` message back into a Progress (None if garbled)."""
    try:
        d = json.loads(text)
        return hashcash.Progress(int(d["easiness"]), int(d["workers"]), int(d["tries"]),
                                 float(d["expected"]), float(d["elapsed"]), str(d["state"]))
    except (ValueError, KeyError, TypeError):
        return None


def _stop_child(pid: int, mountpoint: str) -> None:
    """Stop a mount child that did not become ready, and clear its mount if it made one."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and alive(pid):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)
        if not alive(pid):
            break
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    if is_mounted(mountpoint):
        unmount(mountpoint, lazy=True, check=False)
