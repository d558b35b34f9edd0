"""Which mount point uses which queue: ``<state-dir>/mounted/<key>.json`` and /proc/mounts.

Each running mount writes its entry (mount point, pid, per-mount state dir, API, log); it stays
after unmount so ``megafs status``/``retry`` still find the queue of that mount point.  Per-API
mount directories live in ``<state-dir>/mounts/<sha256(API)[:16]>``.  No FUSE here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from .. import config
from ..api import hashcash

log = logging.getLogger(__name__)


def mount_key(api: str) -> str:
    """The per-API key of a mount directory (16 hex digits of SHA-256 of the API URL)."""
    return hashlib.sha256(config.normalise_api(api).encode("utf-8")).hexdigest()[:16]


def mount_dir_for(state_dir: str, api: str) -> str:
    """The queue and staging directory of mounts of ``api`` with this state dir."""
    return os.path.join(state_dir, "mounts", mount_key(api))


def _entry_path(state_dir: str, mountpoint: str) -> str:
    real = os.path.realpath(mountpoint)
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(state_dir, "mounted", key + ".json")


def write_entry(state_dir: str, mountpoint: str, info: dict) -> str:
    """Record (atomically, 0600) which queue a mount point uses; returns the file's path."""
    path = _entry_path(state_dir, mountpoint)
    config.private_dir(os.path.dirname(path))
    config.atomic_write(path, json.dumps(info))
    return path


def find_mount(state_dir: str, mountpoint: str) -> dict | None:
    """The registry entry of a mount point (None if this state dir never mounted it); a live
    mount without an entry (mounted with another state dir) is asked for its queue directory
    and its process id through xattrs."""
    try:
        with open(_entry_path(state_dir, mountpoint)) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        info = None
    if info is None and is_mounted(mountpoint):
        try:
            mdir = os.getxattr(mountpoint, "user.megafs.mountdir").decode()
            info = {"mountpoint": os.path.realpath(mountpoint), "mount_dir": mdir, "pid": None}
        except OSError:
            info = None
        if info is not None:
            try:
                info["pid"] = int(os.getxattr(mountpoint, "user.megafs.pid"))
            except (OSError, ValueError):
                pass          # a mount of an older megafs: umount cannot wait for it
    return info


def is_mounted(mountpoint: str) -> bool:
    """Whether ``mountpoint`` is a mount point now (from /proc/self/mountinfo)."""
    return mount_type(mountpoint) is not None


def mount_type(mountpoint: str) -> str | None:
    """The filesystem type of the mount at ``mountpoint`` (``fuse.megafs``, ``tmpfs``, ...;
    the topmost one when several are stacked), or None when nothing is mounted there.  From
    /proc/self/mountinfo: field 5 is the mount point, the first field after ``-`` the type
    (proc(5))."""
    real = os.path.realpath(mountpoint)
    found = None
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == real:
                    try:
                        found = fields[fields.index("-", 6) + 1]
                    except (ValueError, IndexError):
                        found = "unknown"
    except OSError:
        pass
    return found


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def live_entries(state_dir: str) -> list[dict]:
    """Registry entries of this state dir whose mount process is alive and still mounted."""
    from .localserver import alive
    out: list[dict] = []
    folder = os.path.join(state_dir, "mounted")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            continue
        pid = info.get("pid")
        if pid and alive(pid) and is_mounted(info.get("mountpoint", "")):
            out.append(info)
    return out


def log_path_for(state_dir: str, mountpoint: str) -> str:
    """The default log file of a background mount: one per mount point, named after it
    (``/home/ann/mega`` -> ``logs/mount-home-ann-mega.log``)."""
    real = os.path.realpath(mountpoint)
    name = real.strip("/").replace("/", "-") or "root"
    if len(name) > 80:
        digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        name = name[-70:] + "-" + digest
    return os.path.join(state_dir, "logs", "mount-%s.log" % name)


def _pow_path(state_dir: str, mountpoint: str) -> str:
    return _entry_path(state_dir, mountpoint)[:-len(".json")] + ".pow"


def write_pow(state_dir: str, mountpoint: str, report: dict | None) -> None:
    """Record (0600) the proof of work a mount process is solving for ``megafs status``
    (``hashcash.Progress.as_dict`` plus ``pid``); None removes the record."""
    path = _pow_path(state_dir, mountpoint)
    if report is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    config.private_dir(os.path.dirname(path))
    config.atomic_write(path, json.dumps(report))


def read_pow(state_dir: str, mountpoint: str) -> dict | None:
    """The proof of work the mount process of ``mountpoint`` is solving now, or None (none
    recorded, or its process is gone)."""
    from .localserver import alive
    try:
        with open(_pow_path(state_dir, mountpoint)) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    pid = info.get("pid") if isinstance(info, dict) else None
    return info if isinstance(pid, int) and alive(pid) else None


class PowRecord:
    """While this process solves a proof of work (a mount's login before mounting, or a
    re-login later), its progress is kept with ``write_pow`` for ``megafs status``.  A context
    manager: observes every solve of the process (``hashcash.add_observer``) meanwhile."""

    def __init__(self, state_dir: str, mountpoint: str) -> None:
        self.state_dir, self.mountpoint = state_dir, mountpoint

    def __call__(self, report: Any) -> None:
        try:
            write_pow(self.state_dir, self.mountpoint, None if report.state != "solving"
                      else dict(report.as_dict(), pid=os.getpid(), mountpoint=self.mountpoint))
        except OSError as exc:
            log.debug("cannot record the proof of work's progress: %s", exc)

    def __enter__(self) -> "PowRecord":
        hashcash.add_observer(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        hashcash.remove_observer(self)
        try:
            write_pow(self.state_dir, self.mountpoint, None)
        except OSError:
            pass
