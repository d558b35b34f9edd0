"""The bundled local server of ``megafs mount --local``: a ``megafs serve`` child process.

Its data lives in ``<state-dir>/local-server`` and its port is persisted in
``<state-dir>/local-server.port`` (so links and sessions stay valid across mounts).  The child
is started with ``python -P`` from ``/``, so an unrelated ``megafs/`` folder in the caller's
working directory cannot shadow the installed package; if it does not start, the error is the
server's own last log line.  It dies with the mount (``PR_SET_PDEATHSIG``).

One mount at a time owns a state dir's server: ``start`` first takes ``local-server.lock``
(``flock``, held by the mount process for its life and released by the kernel when it dies).
A second ``mount --local`` of the same state dir is refused at that point, before it touches
anything, so a running mount and its server are never disturbed; only the lock's owner stops
a server left behind by a killed mount (its pid file names it).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from .. import config
from ..errors import FsError

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1


class LocalServer:
    """The bundled server as a child process, on a port persisted in the state dir."""

    def __init__(self, state_dir: str, owner: str = "", port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port                     # None: the kept one (``local-server.port``)
        self.owner = owner                   # who we are, for the refusal of a second mount
        self.lock_fd = -1
        self.data = os.path.join(state_dir, "local-server")
        self.port_file = os.path.join(state_dir, "local-server.port")
        self.pid_file = os.path.join(state_dir, "local-server.pid")
        self.log_path = os.path.join(state_dir, "local-server.log")
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        """Start the server; return its API URL.  FsError with the server's own reason."""
        config.private_dir(self.data)
        self._lock()
        try:
            with open(self.port_file) as fh:
                port = int(fh.read().strip())
        except (OSError, ValueError):
            port = 0
        kept = port
        if self.port is not None:
            port = self.port
        self._stop_orphan()
        log_fh = open(self.log_path, "ab")
        start_at = log_fh.tell()
        cmd = [sys.executable, "-P", "-m", "megafs", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--data", self.data]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_fh,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd="/", preexec_fn=_die_with_parent)
        log_fh.close()
        config.atomic_write(self.pid_file, str(self.proc.pid))
        assert self.proc.stdout is not None
        line = _readline_timeout(self.proc.stdout, START_TIMEOUT)
        if not line:
            self.stop()
            reason = self._last_error(start_at)
            if "in use" in reason and port:
                # issue 24: a kept port that another program took meanwhile
                raise FsError(errno.EADDRINUSE, "port %d of the local server (kept in %s so "
                              "that links stay valid) is taken by another program: stop it, "
                              "or move the server with --local-port PORT (-o local_port=PORT;"
                              " links made before name the old port)"
                              % (port, self.port_file))
            raise FsError(errno.EIO, "the local server did not start: %s (log: %s)"
                          % (reason, self.log_path))
        self.url = line.strip()
        chosen = int(self.url.rstrip("/").rsplit(":", 1)[1])
        if chosen != kept:
            config.atomic_write(self.port_file, str(chosen))
        log.info("local server running on port %d", chosen)
        return self.url

    def _lock(self) -> None:
        """Take the state dir's server lock, or refuse (FsError EBUSY) naming its owner."""
        path = os.path.join(self.state_dir, "local-server.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            raise FsError(errno.EBUSY, "the local server of state dir %s is in use by %s; "
                          "unmount that first, or use another --state-dir for a second "
                          "mount" % (self.state_dir, owner or "another megafs mount")
                          ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (self.owner or "pid %d" % os.getpid()).encode(), 0)
        self.lock_fd = fd

    def _last_error(self, start_at: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(start_at)
                lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines()
                         if ln.strip()]
        except OSError:
            lines = []
        return lines[-1][-300:] if lines else "it exited without a message"

    def _stop_orphan(self) -> None:
        """A server left running by a mount that was killed would hold the persisted port."""
        try:
            with open(self.pid_file) as fh:
                pid = int(fh.read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                cmdline = fh.read().split(b"\0")
        except (OSError, ValueError):
            return
        if b"serve" not in cmdline or self.data.encode() not in cmdline:
            return
        log.warning("stopping a local server (pid %d) left behind by an earlier mount", pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except OSError:
                return
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and alive(pid):
                time.sleep(0.05)
            if not alive(pid):
                return

    def stop(self) -> None:
        try:
            self._stop()
        finally:
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
                self.lock_fd = -1

    def _stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _die_with_parent() -> None:
    """In the server child: die with the mount process (even when that is kill -9'd).

    SIGKILL rather than SIGTERM: the mount is already gone abruptly, the server's state is
    crash-safe, and a handler-free signal cannot hang."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _readline_timeout(stream: IO[bytes], timeout: float) -> str:
    result: list[bytes] = []

    def reader() -> None:
        result.append(stream.readline())
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return result[0].decode() if result and result[0].endswith(b"\n") else ""
