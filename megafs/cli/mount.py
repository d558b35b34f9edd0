"""``megafs mount / umount / status / retry``: the mount life cycle from the command line.

``mount`` checks everything a person can get wrong before it starts anything (the ``-o``
options, the mount point, ``/dev/fuse``, a second mount of the same state dir, an unreachable
API: ``mount/preflight.py``), turns the options into a ``MountConfig``, builds the mount with
``MountRuntime`` (the one composition root) and serves it through the FUSE adapter; without
``--foreground`` it daemonizes first and returns once the kernel mount is live, logging to a
log file of its own per mount point.  libfuse's own complaints (printed on stderr while it
mounts) are caught and reported in the one-line error.  ``umount`` waits for pending uploads
(as the live mount reports them, or the queue file when the mount does not answer), showing
bytes, rates and ETA, then unmounts and returns once the mount process has exited.  No
filesystem logic here.

Several mount points per state dir: one mount per state dir, API and account at a time (they
would share one upload queue); a second one is refused before it touches anything.  Other
accounts of the same API mount side by side (each has its own queue); with ``--local`` the
bundled server belongs to the mount that started it, so another account needs another
``--state-dir``.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from .. import config
from ..errors import FsError, MegafsError
from ..mount.localserver import alive
from ..mount.registry import (find_mount, is_mounted, live_entries, log_path_for, mount_dir_for,
                              PowRecord, read_pow, write_entry)
from ..mount.unmount import refuse_foreign_mount, unmount
from ..mount.options import check_together, MOUNT_OPTIONS, OptionError, split_options
from .args import add_option_flag
from .libfuse_messages import LibfuseMessages, libfuse_reason

log = logging.getLogger(__name__)

EXIT_WAIT = 60.0          # seconds umount waits for the mount process to exit


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    if name != "mount":
        parser.add_argument("--state-dir", metavar="DIR", default=None,
                            help=MOUNT_OPTIONS["state_dir"].help_text())
    if name == "mount":
        # every flag from the one table (mount/options.py); --log-file and --log-level are
        # every command's (cli/main.py)
        parser.add_argument("-o", dest="options", metavar="OPTIONS", default=None,
                            help="mount options, comma separated (listed below)")
        source = parser.add_mutually_exclusive_group()
        for opt in MOUNT_OPTIONS.values():
            if opt.flag_names and not opt.common:
                add_option_flag(source if opt.name in ("api", "local") else parser, opt)
    elif name == "umount":
        parser.add_argument("--no-wait", action="store_true",
                            help="unmount at once; pending uploads resume at the next mount")
        parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                            help="give up waiting for uploads after this long (exit 1)")
    elif name == "status":
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--watch", action="store_true",
                            help="show bytes, rates and ETA until nothing is left to upload")


def run(args: argparse.Namespace) -> int:
    runner: dict[str, Callable[[argparse.Namespace], int]] = {
        "mount": run_mount, "umount": run_umount, "status": run_status, "retry": run_retry}
    return runner[args.command](args)


def _state_dir(args: argparse.Namespace) -> str:
    return os.path.abspath(os.path.expanduser(args.state_dir or config.default_state_dir()))


# --- mount -----------------------------------------------------------------------------------
def apply_options(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``-o`` into ``args`` (a flag given on the command line wins), then the table's
    defaults for what neither gave; returns the libfuse options.  MegafsError for an unknown
    or malformed option, or options that exclude each other."""
    try:
        own, fuse = split_options(args.options)
        for key, value in own.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        check_together(vars(args))
    except OptionError as exc:
        raise MegafsError(str(exc)) from None
    for opt in MOUNT_OPTIONS.values():
        if getattr(args, opt.name, None) is None:
            setattr(args, opt.name, opt.default)
        if opt.libfuse and getattr(args, opt.name):
            fuse[opt.name] = True          # allow_other, debug: libfuse's too
    if args.link:
        from ..api.folderlink import parse_folder_link
        parse_folder_link(args.link)       # LinkError (exit 1) says what is wrong, not the key
        fuse["ro"] = True                  # a folder link: the kernel refuses writes too
    if args.debug:
        # -d / -o debug, as FUSE file systems take it (sshfs, libfuse's own -d): stay in
        # the foreground with the DEBUG log on stderr, and libfuse traces its requests
        args.foreground = True
        if args.log_level is None:
            args.log_level = "DEBUG"
    return fuse


def run_mount(args: argparse.Namespace) -> int:
    from ..mount.preflight import (check_api, check_api_soon, check_fuse_device,
                                   check_mountpoint, check_state_dir_apart)

    mnt = os.path.abspath(os.path.expanduser(args.mountpoint))
    args.fuse_options = apply_options(args)
    if args.log_level is not None and args.log_file is None and args.foreground:
        config.setup_logging(args.verbose, level=args.log_level)
    api_checked: Callable[[], None] | None = None
    if not args.local and not args.session and not args.link:
        # the API's handshakes run while the local checks and the mount's imports do
        api_checked = check_api_soon(config.resolve_api(args.api))
    check_mountpoint(mnt, nonempty=args.nonempty)
    check_state_dir_apart(mnt, _state_dir(args))
    check_fuse_device(allow_other=args.allow_other)
    state_dir = config.state_dir_ready(_state_dir(args))
    if args.link:
        from ..api.folderlink import parse_folder_link
        # no queue and no mount dir: any number of link mounts run beside each other
        check_api(config.resolve_api(args.api or parse_folder_link(args.link).api))
    else:
        _refuse_second_mount(state_dir, args)
    if args.foreground:
        _import_mount()
    if api_checked is not None:
        api_checked()
    if args.foreground:
        if args.log_file:
            config.setup_logging(args.verbose, level=args.log_level, log_file=args.log_file)
        return mount_foreground(args, mnt, ready=None)
    from ..mount.daemon import daemonize

    log_path = args.log_file or log_path_for(state_dir, mnt)
    config.private_dir(os.path.dirname(log_path))
    from .progress import ProofOfWorkLine
    pid, api = daemonize(lambda ready: mount_foreground(args, mnt, ready, log_path=log_path),
                         log_path, args.verbose, mnt, level=args.log_level,
                         on_progress=ProofOfWorkLine())
    print("megafs: mounted %s (pid %d, API %s, log %s)" % (mnt, pid, api, log_path),
          file=sys.stderr)
    return 0


def _import_mount() -> None:
    """Import what ``_serve`` builds the mount with (while the API check waits on the
    network)."""
    from ..fuse import adapter  # noqa: F401
    from ..mount import runtime  # noqa: F401


def _refuse_second_mount(state_dir: str, args: argparse.Namespace) -> None:
    """One mount per state dir, API and account (the runtime's locks are the guarantee; this
    says it before anything is started, naming the mount that is running).  Other accounts
    (``--account``) of the same API mount side by side: their queues are their own."""
    api = None if args.local else config.resolve_api(args.api)
    mine = (args.account or "").strip().lower()
    for entry in live_entries(state_dir):
        if entry.get("link"):
            continue                  # a folder link mount has no queue to share
        theirs = (entry.get("account") or "").strip().lower()
        if args.local and entry.get("local") and theirs != mine:
            # another account of the same bundled server: the server belongs to that mount
            # (it stops with it), so this mount needs a server, and a state dir, of its own
            raise FsError(errno.EBUSY, "the bundled local server of state dir %s is run by the "
                          "mount at %s (pid %s); a --local mount of another account needs "
                          "its own --state-dir" % (state_dir, entry.get("mountpoint"),
                                                   entry.get("pid")))
        same = entry.get("local") if args.local else (
            not entry.get("local") and entry.get("api") == api)
        if same and theirs == mine:
            raise FsError(errno.EBUSY, "state dir %s is already mounted at %s (pid %s); one "
                          "mount per state dir, API and account: use another --state-dir for "
                          "a second mount, or `megafs umount %s` first"
                          % (state_dir, entry.get("mountpoint"), entry.get("pid"),
                             entry.get("mountpoint")))


def mount_foreground(args: argparse.Namespace, mnt: str,
                     ready: Callable[[str], None] | None, log_path: str = "") -> int:
    """Build the mount and serve it until it is unmounted; ``ready(api)`` once it is live."""
    state_dir = _state_dir(args)
    # FUSE requests wait for the GIL behind upload and commit threads; with the default 5 ms
    # switch interval a copy of 4 KiB files spent most of each create/flush waiting for it.
    sys.setswitchinterval(config.switch_interval())
    with PowRecord(state_dir, mnt):
        return _serve(args, mnt, ready, log_path, state_dir)


def _serve(args: argparse.Namespace, mnt: str, ready: Callable[[str], None] | None,
           log_path: str, state_dir: str) -> int:
    from ..fuse.adapter import MegaOps, serve
    from ..fuse.options import mount_options
    from ..mount.notify import sd_notify
    from ..mount.runtime import MountConfig, MountRuntime

    cfg = MountConfig.from_options(vars(args), state_dir=state_dir, mountpoint=mnt)
    with MountRuntime(cfg) as rt:
        entry = {"mountpoint": mnt, "pid": os.getpid(), "mount_dir": rt.mount_dir,
                 "api": rt.api, "local": bool(args.local), "log": log_path,
                 "account": args.account, "link": bool(args.link)}
        write_entry(state_dir, mnt, entry)
        messages = LibfuseMessages()

        def on_init() -> None:
            messages.release()
            rt.start()
            log.info("mounted %s", mnt)
            if ready is not None:
                ready(rt.api)
            sd_notify("READY=1\nSTATUS=mounted %s" % mnt)

        try:
            host = urlsplit(rt.api).netloc
            try:
                ops = MegaOps(rt.fs, on_init=on_init)
                rt.invalidate = ops.invalidate
                serve(ops, mnt, mount_options(args.fuse_options, allow_other=args.allow_other,
                                              fsname="megafs:" + host))
            except RuntimeError:
                reason = libfuse_reason(messages.release())
                raise FsError(errno.EIO, "libfuse could not mount %s: %s" % (mnt, reason)
                              ) from None
            finally:
                messages.release()
            sd_notify("STOPPING=1")
            log.info("unmounted %s", mnt)
        finally:
            # Kept after unmount: `status`/`retry` still find the queue of this mount point.
            try:
                write_entry(state_dir, mnt, dict(entry, pid=None))
            except OSError as exc:      # e.g. a full disk: the entry's pid is checked anyway
                log.warning("could not update %s's mount entry: %s", mnt, exc)
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


def _notes(mnt: str) -> list[str]:
    """The live mount's lines about itself (e.g. reads waiting out the transfer quota)."""
    live = _live_status(mnt)
    notes = live.get("notes") if isinstance(live, dict) else None
    return [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []


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
        raise FsError(errno.ENOENT, "no megafs mount or queue known for %s (is it the right "
                      "folder? try --state-dir)" % mnt)
    if info.get("link"):
        return [], False              # a folder link mount uploads nothing
    from ..writeback.store import read_status
    return read_status(info["mount_dir"]), False


def run_umount(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(os.path.expanduser(args.mountpoint))
    info = find_mount(_state_dir(args), mnt)
    if not is_mounted(mnt):
        raise FsError(errno.EINVAL, "%s is not mounted" % mnt)
    refuse_foreign_mount(mnt, info)
    if info is not None and not args.no_wait:
        from ..writeback.store import QueueUnusable
        try:
            _wait_for_uploads(mnt, info, args.timeout)
        except QueueUnusable as exc:
            raise QueueUnusable("%s (`megafs umount --no-wait %s` unmounts without reading "
                                "it)" % (exc, mnt)) from None
        except KeyboardInterrupt:
            print("\nmegafs umount: interrupted; %s stays mounted and its uploads go on"
                  % mnt, file=sys.stderr)
            return 130
    unmount(mnt)
    pid = info.get("pid") if info else None
    if pid:
        deadline_exit = time.monotonic() + EXIT_WAIT
        while alive(pid):
            if time.monotonic() > deadline_exit:
                raise FsError(errno.ETIMEDOUT, "unmounted %s, but its mount process (pid %d) "
                              "has not exited after %.0f s" % (mnt, pid, EXIT_WAIT))
            time.sleep(0.05)
    print("megafs umount: unmounted %s" % mnt, file=sys.stderr)
    return 0


def _wait_for_uploads(mnt: str, info: dict, timeout: float | None) -> None:
    from .progress import QueueProgress

    deadline = None if timeout is None else time.monotonic() + timeout
    bar = QueueProgress()
    failed: list[dict] = []
    try:
        while True:
            files, _live = _files(mnt, info)
            waiting = [f for f in files if f["state"] in ("pending", "uploading")]
            failed = [f for f in files if f["state"] == "failed"]
            bar.update(files)
            if not waiting:
                break
            pid = info.get("pid")
            if pid and not alive(pid):
                bar.clear()
                print("megafs umount: the mount process is gone; %d upload(s) resume at the "
                      "next mount" % len(waiting), file=sys.stderr)
                break
            bar.draw(force=bar.last_plain == 0)
            if deadline is not None and time.monotonic() > deadline:
                bar.clear()
                raise FsError(errno.ETIMEDOUT, "uploads still pending after %.0f s; not "
                              "unmounted" % (timeout or 0))
            time.sleep(0.5)
    finally:
        bar.clear()
    if bar.finished_files:
        print("megafs umount: %s" % bar.summary(), file=sys.stderr)
    if failed:
        print("megafs umount: %d failed upload(s) stay queued and are retried at the next "
              "mount (see `megafs status`)" % len(failed), file=sys.stderr)
        for f in failed[:10]:
            print("  %s: %s" % (f["path"], f.get("error") or "unknown error"), file=sys.stderr)


def run_status(args: argparse.Namespace) -> int:
    from .progress import why

    mnt = os.path.abspath(os.path.expanduser(args.mountpoint))
    info = find_mount(_state_dir(args), mnt)
    pow_ = read_pow(_state_dir(args), mnt)
    if args.watch:
        return _watch(mnt, info)
    try:
        files, live = _files(mnt, info)
    except FsError:
        if pow_ is None:
            raise
        files, live = [], False       # the first login of this mount is still solving
    notes = _notes(mnt) if live else []
    if args.json:
        print(json.dumps({"mounted": live, "files": files, "notes": notes,
                          "proof_of_work": pow_}))
        return 0
    if pow_ is not None:
        print("%s: %s (pid %s)" % (mnt, "logging in" if not live else "logging in again",
                                   pow_.get("pid")))
        print("  %s" % pow_.get("line", "proof of work in progress"))
    counts: dict[str, int] = {}
    for f in files:
        counts[f["state"]] = counts.get(f["state"], 0) + 1
    print("%s: %s; %d pending, %d uploading, %d failed"
          % (mnt, "mounted" if live else "not mounted", counts.get("pending", 0),
             counts.get("uploading", 0), counts.get("failed", 0)))
    for note in notes:
        print("  " + note)
    for f in files:
        size = f.get("size") or 0
        done = f.get("progress") or 0
        pct = "%3d%%" % (100 * done // size) if size and f["state"] == "uploading" else "    "
        line = "  %-9s %s %10d  %s" % (f["state"], pct, size, config.printable(str(f["path"])))
        reason = why(f, mounted=live)
        if reason:
            line += "  (%s)" % config.printable(str(reason))
        print(line)
    return 0


def _watch(mnt: str, info: dict | None) -> int:
    """``status --watch``: redraw bytes, rates and ETA until nothing is pending or uploading."""
    from .progress import QueueProgress

    bar = QueueProgress(sys.stdout if sys.stdout.isatty() else sys.stderr)
    try:
        while True:
            files, live = _files(mnt, info)
            bar.update(files)
            waiting = [f for f in files if f["state"] in ("pending", "uploading")]
            if not waiting:
                break
            if not live:
                bar.clear()
                print("%s: not mounted; %d upload(s) wait for the next mount"
                      % (mnt, len(waiting)), file=sys.stderr)
                return 1
            bar.draw(force=bar.last_plain == 0)
            time.sleep(0.5)
    finally:
        bar.clear()
    failed = sum(1 for f in files if f["state"] == "failed")
    print("%s: nothing left to upload (%s%s)" % (mnt, bar.summary(),
                                                 ", %d failed" % failed if failed else ""),
          file=sys.stderr)
    return 0


def run_retry(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(os.path.expanduser(args.mountpoint))
    if is_mounted(mnt):
        try:
            os.setxattr(mnt, "user.megafs.retry", b"1")
            print("megafs retry: failed uploads re-queued", file=sys.stderr)
            return 0
        except OSError as exc:
            log.info("retry through the mount failed (%s); updating the queue", exc)
    info = find_mount(_state_dir(args), mnt)
    if info is None:
        raise FsError(errno.ENOENT, "no megafs mount or queue known for %s (is it the right "
                      "folder? try --state-dir)" % mnt)
    from ..writeback.store import mark_failed_for_retry
    n = mark_failed_for_retry(info["mount_dir"])
    print("megafs retry: %d failed upload(s) will be retried at the next mount" % n,
          file=sys.stderr)
    return 0


__all__ = ["add_arguments", "run", "find_mount", "is_mounted", "mount_dir_for"]
