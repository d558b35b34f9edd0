"""Daemonizing ``megafs mount``: fork, detach, and report readiness (or the reason for failing)
to the waiting parent through a pipe.

The child becomes a session leader, points stdin at /dev/null and stdout/stderr at the log file,
configures logging once, and runs the mount; it writes ``R<api>\\n`` once the kernel mount is
live (FUSE ``init``) or ``E<reason>\\n`` if it fails.  The parent returns (pid, api) on ``R``
and raises ``FsError`` with the child's reason otherwise.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import time
from typing import Callable

from .. import config
from ..errors import FsError, describe

log = logging.getLogger(__name__)

READY_TIMEOUT = 180.0


def daemonize(run: Callable[[Callable[[str], None]], int], log_path: str, verbosity: int
              ) -> tuple[int, str]:
    """Run ``run(ready)`` in a detached child; ``ready(api)`` reports the mount live.

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
            config.setup_logging(max(1, verbosity))

            def ready(api: str) -> None:
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
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([rfd], [], [], 1.0)
            if not readable:
                continue
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            buf += chunk
            if buf.endswith(b"\n"):
                break
    finally:
        os.close(rfd)
    if buf.startswith(b"R"):
        return pid, buf[1:].decode(errors="replace").strip()
    if buf.startswith(b"E"):
        raise FsError(errno.EIO, buf[1:].decode(errors="replace").strip())
    raise FsError(errno.EIO, "the mount process exited before the mount was ready (see %s)"
                  % log_path)
