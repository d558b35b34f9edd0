"""Processes the benchmarks run: a local server (``megafs serve``) and a mount
(``megafs mount --foreground``), each as a subprocess with its log in a file.

Kept separate from the test suite's helpers on purpose: scripts never import from ``tests/``.
The benchmark servers run without a login proof of work (``--hashcash-easiness 0``): a bench
measures transfers, not the one-off solve, whose time ``scripts/bench`` reports on its own.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """``megafs serve`` on a free port; ``url`` is set once it prints its first line."""

    def __init__(self, data: Path, *, extra_args: list[str] | None = None,
                 log_path: Path | None = None) -> None:
        self.data = Path(data)
        self.extra_args = list(extra_args or [])
        self.log_path = Path(log_path or self.data.parent / "server.log")
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""

    def start(self, timeout: float = 30.0) -> "Server":
        cmd = [sys.executable, "-m", "megafs", "serve", "--port", str(self.port), "--data",
               str(self.data), "--hashcash-easiness", "0"] + self.extra_args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http"):
            raise RuntimeError("megafs serve did not start; see %s" % self.log_path)
        self.url = line
        self.port = int(line.rstrip("/").rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            reap(self.proc, 30)
            self.proc = None


def is_mounted(mnt: Path) -> bool:
    real = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as fh:
        return any(len(f) > 4 and f[4] == real for f in (line.split() for line in fh))


def wait_mounted(mnt: Path, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Until ``mnt`` is a mount point; RuntimeError if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not is_mounted(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the mount at %s did not come up; see %s" % (mnt, log))
        time.sleep(0.05)


def unmount(mnt: Path) -> None:
    """Lazy unmount of a FUSE mount point (fusermount3, else umount), if it is one."""
    for cmd in (["fusermount3", "-u", "-z", str(mnt)], ["umount", "-l", str(mnt)]):
        if is_mounted(mnt) and shutil.which(cmd[0]):
            subprocess.run(cmd, capture_output=True, timeout=60)


def reap(proc: subprocess.Popen | None, timeout: float = 60.0) -> None:
    """Wait for ``proc`` to exit; kill it after ``timeout`` seconds."""
    if proc is None:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Mount:
    """``megafs mount --foreground`` of one server and state dir."""

    def __init__(self, mnt: Path, api: str, state: Path, *, log_path: Path,
                 extra: list[str] | None = None, root: Path | None = None) -> None:
        self.mnt, self.api, self.state, self.log_path = Path(mnt), api, Path(state), log_path
        self.extra = list(extra or [])
        self.root = Path(root or ROOT)     # the source tree whose megafs runs (its cwd)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Mount":
        self.mnt.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "megafs", "mount", str(self.mnt), "--api", self.api,
               "--state-dir", str(self.state), "--foreground"] + self.extra
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.root,
                                         stdin=subprocess.DEVNULL)
        wait_mounted(self.mnt, self.proc, timeout, self.log_path)
        return self

    def stop(self) -> None:
        unmount(self.mnt)
        reap(self.proc)
        self.proc = None
