"""``megafs mount / umount / status / retry``: the mount life cycle from the command line.

``mount`` turns the options into a ``MountConfig``, builds the mount with ``MountRuntime`` (the
one composition root) and serves it through the FUSE adapter; without ``--foreground`` it
daemonizes first and returns once the kernel mount is live.  ``umount`` waits for pending
uploads (as the live mount reports them, or the queue file when the mount does not answer),
then unmounts and waits for the mount process to exit.  No filesystem logic here.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from .. import config
from ..errors import FsError
from ..mount.localserver import alive
from ..mount.registry import find_mount, is_mounted, mount_dir_for, write_entry

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("--state-dir", metavar="DIR", default=None,
                        help="sessions, upload queue and staged files (default: "
                             "$XDG_DATA_HOME/megafs)")
    if name == "mount":
        src = parser.add_mutually_exclusive_group()
        src.add_argument("--api", metavar="URL", default=None,
                         help="MEGA API base URL (default: $MEGAFS_API or the real MEGA)")
        src.add_argument("--local", action="store_true",
                         help="start the bundled local server (data in the state dir) and "
                              "mount it")
        parser.add_argument("--account", metavar="EMAIL", default=None,
                            help="mount this logged-in account (`megafs login EMAIL`) instead "
                                 "of the anonymous one")
        parser.add_argument("--foreground", "-f", action="store_true",
                            help="stay attached and log to stderr")
        parser.add_argument("-o", dest="options", metavar="OPTIONS", default=None,
                            help="mount options, comma separated (show_links, allow_other, "
                                 "or any libfuse option)")
        parser.add_argument("--link-timeout", type=float, default=600.0, metavar="SECONDS",
                            help="how long reading X.link waits for X's upload (default 600)")
        parser.add_argument("--uploads", type=int, default=4, metavar="N",
                            help="files uploaded in parallel (default 4)")
        parser.add_argument("--connections", type=int, default=4, metavar="N",
                            help="parallel connections per file transfer (default 4)")
        parser.add_argument("--allow-other", action="store_true",
                            help="let other users access the mount (needs user_allow_other)")
        parser.add_argument("--show-links", action="store_true",
                            help="list the virtual X.link files in directory listings")
    elif name == "umount":
        parser.add_argument("--no-wait", action="store_true",
                            help="unmount at once; pending uploads resume at the next mount")
        parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                            help="give up waiting for uploads after this long (exit 1)")
    elif name == "status":
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    runner: dict[str, Callable[[argparse.Namespace], int]] = {
        "mount": run_mount, "umount": run_umount, "status": run_status, "retry": run_retry}
    return runner[args.command](args)


def _state_dir(args: argparse.Namespace) -> str:
    return os.path.abspath(args.state_dir or config.default_state_dir())


# --- mount -----------------------------------------------------------------------------------
def run_mount(args: argparse.Namespace) -> int:
    from ..fuse.options import split_options

    mnt = os.path.abspath(args.mountpoint)
    if not os.path.isdir(mnt):
        raise FsError(errno.ENOTDIR, "mount point %s is not a directory" % mnt)
    if is_mounted(mnt):
        raise FsError(errno.EBUSY, "%s is already mounted" % mnt)
    own, _fuse = split_options(args.options)
    if own.get("show_links"):
        args.show_links = True
    if args.foreground:
        return mount_foreground(args, mnt, ready=None)
    from ..mount.daemon import daemonize

    state_dir = config.private_dir(_state_dir(args))
    pid, api = daemonize(lambda ready: mount_foreground(args, mnt, ready),
                         os.path.join(state_dir, "mount.log"), args.verbose)
    print("megafs: mounted %s (pid %d, API %s)" % (mnt, pid, api), file=sys.stderr)
    return 0


def mount_foreground(args: argparse.Namespace, mnt: str,
                     ready: Callable[[str], None] | None) -> int:
    """Build the mount and serve it until it is unmounted; ``ready(api)`` once it is live."""
    from ..fuse.adapter import MegaOps, serve
    from ..fuse.options import mount_options, split_options
    from ..mount.runtime import MountConfig, MountRuntime

    state_dir = _state_dir(args)
    # FUSE requests wait for the GIL behind upload and commit threads; with the default 5 ms
    # switch interval a copy of 4 KiB files spent most of each create/flush waiting for it.
    sys.setswitchinterval(config.switch_interval())
    cfg = MountConfig(state_dir=state_dir, api=args.api, local=args.local,
                      uploads=args.uploads, connections=args.connections,
                      link_timeout=args.link_timeout, show_links=args.show_links,
                      account=args.account)
    with MountRuntime(cfg) as rt:
        entry = {"mountpoint": mnt, "pid": os.getpid(), "mount_dir": rt.mount_dir,
                 "api": rt.api, "local": bool(args.local)}
        write_entry(state_dir, mnt, entry)

        def on_init() -> None:
            rt.start()
            log.info("mounted %s", mnt)
            if ready is not None:
                ready(rt.api)

        try:
            _own, fuse_opts = split_options(args.options)
            host = urlsplit(rt.api).netloc
            ops = MegaOps(rt.fs, on_init=on_init)
            rt.invalidate = ops.invalidate
            serve(ops, mnt,
                  mount_options(fuse_opts, allow_other=args.allow_other,
                                fsname="megafs:" + host))
            log.info("unmounted %s", mnt)
        finally:
            # Kept after unmount: `status`/`retry` still find the queue of this mount point.
            write_entry(state_dir, mnt, dict(entry, pid=None))
    return 0


# --- umount / status / retry -----------------------------------------------------------------
def _live_status(mnt: str, timeout: float = 5.0) -> dict | None:
    """Live queue status from the mount itself (with upload progress); None if it does not
    answer within ``timeout`` (a wedged mount must not hang ``megafs status``)."""
    box: list[Any] = []

    def ask() -> None:
        try:
            box.append(json.loads(os.getxattr(mnt, "user.megafs.status")))
        except (OSError, ValueError):
            box.append(None)
    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else None


def _files(mnt: str, info: dict | None) -> tuple[list[dict], bool]:
    """(unfinished files, from the live mount?)."""
    live = _live_status(mnt) if is_mounted(mnt) else None
    if live is not None:
        files = live["files"]
        if info is not None and live.get("total", len(files)) > len(files):
            # the live list is cut to fit an xattr: the rest comes from the queue file
            from ..writeback.store import read_status
            shown = {f["path"] for f in files}
            files = files + [f for f in read_status(info["mount_dir"])
                             if f["path"] not in shown]
        return files, True
    if info is None:
        raise FsError(errno.ENOENT, "no megafs mount or queue known for %s (try --state-dir)"
                      % mnt)
    from ..writeback.store import read_status
    return read_status(info["mount_dir"]), False


def run_umount(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    info = find_mount(_state_dir(args), mnt)
    if not is_mounted(mnt):
        raise FsError(errno.EINVAL, "%s is not mounted" % mnt)
    if info is not None and not args.no_wait:
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        last = ""
        failed: list[dict] = []
        while True:
            files, _live = _files(mnt, info)
            waiting = [f for f in files if f["state"] in ("pending", "uploading")]
            failed = [f for f in files if f["state"] == "failed"]
            if not waiting:
                break
            pid = info.get("pid")
            if pid and not alive(pid):
                print("megafs umount: the mount process is gone; %d upload(s) resume at the "
                      "next mount" % len(waiting), file=sys.stderr)
                break
            line = "megafs umount: waiting for %d upload(s) (%d failed)" % (len(waiting),
                                                                            len(failed))
            if line != last:
                print(line, file=sys.stderr, flush=True)
                last = line
            if deadline is not None and time.monotonic() > deadline:
                raise FsError(errno.ETIMEDOUT, "uploads still pending after %.0f s; not "
                              "unmounted" % args.timeout)
            time.sleep(0.5)
        if failed:
            print("megafs umount: %d failed upload(s) stay queued and are retried at the next "
                  "mount (see `megafs status`)" % len(failed), file=sys.stderr)
    _unmount(mnt)
    pid = info.get("pid") if info else None
    if pid:
        deadline_exit = time.monotonic() + 30
        while time.monotonic() < deadline_exit and alive(pid):
            time.sleep(0.1)
    print("megafs umount: unmounted %s" % mnt, file=sys.stderr)
    return 0


def _unmount(mnt: str) -> None:
    errors = []
    for cmd in (["fusermount3", "-u", mnt], ["fusermount", "-u", mnt], ["umount", mnt]):
        if shutil.which(cmd[0]) is None:
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            return
        errors.append(proc.stderr.strip())
        if not is_mounted(mnt):
            return
    raise FsError(errno.EBUSY, "could not unmount %s: %s"
                  % (mnt, "; ".join(e for e in errors if e)))


def run_status(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    files, live = _files(mnt, find_mount(_state_dir(args), mnt))
    if args.json:
        print(json.dumps({"mounted": live, "files": files}))
        return 0
    counts: dict[str, int] = {}
    for f in files:
        counts[f["state"]] = counts.get(f["state"], 0) + 1
    print("%s: %s; %d pending, %d uploading, %d failed"
          % (mnt, "mounted" if live else "not mounted", counts.get("pending", 0),
             counts.get("uploading", 0), counts.get("failed", 0)))
    for f in files:
        size = f.get("size") or 0
        done = f.get("progress") or 0
        pct = "%3d%%" % (100 * done // size) if size and f["state"] == "uploading" else "    "
        line = "  %-9s %s %10d  %s" % (f["state"], pct, size, f["path"])
        if f.get("error"):
            line += "  (%s)" % f["error"]
        print(line)
    return 0


def run_retry(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if is_mounted(mnt):
        try:
            os.setxattr(mnt, "user.megafs.retry", b"1")
            print("megafs retry: failed uploads re-queued", file=sys.stderr)
            return 0
        except OSError as exc:
            log.info("retry through the mount failed (%s); updating the queue", exc)
    info = find_mount(_state_dir(args), mnt)
    if info is None:
        raise FsError(errno.ENOENT, "no megafs mount or queue known for %s (try --state-dir)"
                      % mnt)
    from ..writeback.store import mark_failed_for_retry
    n = mark_failed_for_retry(info["mount_dir"])
    print("megafs retry: %d failed upload(s) will be retried at the next mount" % n,
          file=sys.stderr)
    return 0


__all__ = ["add_arguments", "run", "find_mount", "is_mounted", "mount_dir_for"]
