"""Test support: a real ``megafs mount`` in a subprocess, always unmounted, never hanging.

``MountProcess(mnt, api, state_dir).start()`` runs ``python -m megafs mount MNT --api URL
--state-dir DIR --foreground`` with its log in a file, waits (with a deadline) until the mount
point shows up in /proc/self/mountinfo, and ``stop()`` unmounts with ``fusermount3 -u -z`` (or
``umount -l``) and reaps the process, killing it if needed.  ``kill9()`` simulates a crash.
Every wait has a timeout.  ``log_problems()`` returns unexpected WARNING/ERROR lines of the log.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from . import logs

ROOT = Path(__file__).resolve().parent.parent.parent


def is_mounted(mnt: str | Path) -> bool:
    real = os.path.realpath(str(mnt))
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == real:
                return True
    return False


def has_xattr(path: str | Path, name: str) -> bool:
    """Whether ``path`` answers the attribute ``name`` (megafs's own are not listed)."""
    try:
        os.getxattr(path, name)
        return True
    except OSError:
        return False


def force_unmount(mnt: str | Path) -> None:
    mnt = str(mnt)
    for cmd in (["fusermount3", "-u", "-z", mnt], ["fusermount", "-u", "-z", mnt],
                ["umount", "-l", mnt]):
        if not is_mounted(mnt):
            return
        if shutil.which(cmd[0]) is None:
            continue
        try:
            subprocess.run(cmd, capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            pass


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last error on timeout
            last_exc = exc
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s (last error: %r)"
                         % (timeout, what, last_exc))


def run_with_timeout(func: Callable[[], object], timeout: float):
    """Run a blocking filesystem call in a thread; fail instead of hanging the test."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:
            box["error"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError("filesystem call did not return within %.0f s" % timeout)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def megafs(*args: str, timeout: float = 120.0, check: bool = True,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m megafs ARGS`` and return the completed process."""
    proc = subprocess.run([sys.executable, "-m", "megafs", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    if check and proc.returncode != 0:
        raise AssertionError("megafs %s failed (%d): %s"
                             % (" ".join(args), proc.returncode, proc.stderr[-3000:]))
    return proc


class MountProcess:
    def __init__(self, mnt: str | Path, api: str, state_dir: str | Path, *,
                 extra: list[str] | None = None, log_path: str | Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        self.mnt = Path(mnt)
        self.api = api
        self.state_dir = Path(state_dir)
        self.extra = list(extra or [])
        self.log_path = Path(log_path) if log_path else self.state_dir.parent / (
            self.mnt.name + "-mount.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "MountProcess":
        self.mnt.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "megafs", "mount", str(self.mnt), "--api", self.api,
               "--state-dir", str(self.state_dir), "--foreground", "-v"] + self.extra
        log = open(self.log_path, "ab")
        logs.watch(self.log_path)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1",
                                                        **self.env))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(self.mnt):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("megafs mount did not come up; log:\n%s" % self.log()[-4000:])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_problems(self, allowed: tuple[str, ...] = ()) -> list[str]:
        out = []
        for line in self.log().splitlines():
            if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                if not any(a in line for a in allowed):
                    out.append(line)
        return out

    def kill9(self) -> None:
        """Crash the mount process (no unmount, no cleanup), then clear the dead mount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(20)
        force_unmount(self.mnt)
        self.proc = None

    def stop(self, timeout: float = 30.0) -> int | None:
        force_unmount(self.mnt)
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(10)
            self.proc = None
        force_unmount(self.mnt)
        return code

    def wait_exit(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> "MountProcess":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def listing_paths(client) -> dict[str, object]:
    """Path -> node of a brand-new `f` listing by ``client`` (what another client sees),
    caught up with the changes since when the server answered a big account's snapshot."""
    from megafs.tree.changes import catch_up
    from megafs.tree.tree import Tree
    listing = client.fetch()
    t = Tree(client.session.master_key, client.session.user_handle)
    t.load(listing.nodes, listing.public)
    catch_up(client, t, listing.sn, since="the listing")
    out = {}
    for h in t.subtree(t.root):
        p = t.path_of(h)
        if p and p != "/":
            out[p] = t.get(h)
    return out


def fresh_listing(api: str, state_dir: str | Path) -> dict[str, object]:
    """Path -> node from a brand-new `f` by another client on the same session."""
    from megafs.api.client import MegaClient
    with MegaClient.open(api=api, state_dir=str(state_dir)) as c:
        return listing_paths(c)
