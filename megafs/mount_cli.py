"""``megafs mount / umount / status / retry``: mount life cycle, daemonizing, the mount registry.

``mount`` builds the client, the node tree, the write-back queue and the filesystem core, then
hands ``fuse_ops.MegaOps`` to fusepy.  Without ``--foreground`` it forks: the child mounts and
tells the parent through a pipe once the kernel mount is live (FUSE ``init``), or why it could
not; the parent exits 0 only then.  ``--local`` runs the bundled server
(``megafs serve --data <state-dir>/local-server``) as a child process on a persisted port and
stops it when the mount ends.  Each running mount writes ``<state-dir>/mounted/<key>.json``
(mount point, pid, per-mount state dir) so ``umount``/``status``/``retry`` can find its queue.
No filesystem logic here.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

from .config import default_state_dir
from .errors import FsError, describe

log = logging.getLogger(__name__)

READY_TIMEOUT = 180.0


# --- arguments -------------------------------------------------------------------------------
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
        parser.add_argument("--foreground", "-f", action="store_true",
                            help="stay attached and log to stderr")
        parser.add_argument("-o", dest="options", metavar="OPTIONS", default=None,
                            help="extra FUSE mount options, comma separated")
        parser.add_argument("--link-timeout", type=float, default=600.0, metavar="SECONDS",
                            help="how long reading X.link waits for X's upload (default 600)")
        parser.add_argument("--uploads", type=int, default=4, metavar="N",
                            help="files uploaded in parallel (default 4)")
        parser.add_argument("--connections", type=int, default=4, metavar="N",
                            help="parallel connections per file transfer (default 4)")
        parser.add_argument("--allow-other", action="store_true",
                            help="let other users access the mount (needs user_allow_other)")
    elif name == "umount":
        parser.add_argument("--no-wait", action="store_true",
                            help="unmount at once; pending uploads resume at the next mount")
        parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                            help="give up waiting for uploads after this long (exit 1)")
    elif name == "status":
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "mount":
        return run_mount(args)
    if cmd == "umount":
        return run_umount(args)
    if cmd == "status":
        return run_status(args)
    if cmd == "retry":
        return run_retry(args)
    raise SystemExit("megafs: unknown mount command %r" % cmd)


# --- registry --------------------------------------------------------------------------------
def _state_dir(args: argparse.Namespace) -> str:
    return os.path.abspath(args.state_dir or default_state_dir())


def mount_key(api: str) -> str:
    from .config import normalise_api
    return hashlib.sha256(normalise_api(api).encode("utf-8")).hexdigest()[:16]


def mount_dir_for(state_dir: str, api: str) -> str:
    return os.path.join(state_dir, "mounts", mount_key(api))


def _registry_path(state_dir: str, mountpoint: str) -> str:
    real = os.path.realpath(mountpoint)
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(state_dir, "mounted", key + ".json")


def _write_registry(state_dir: str, mountpoint: str, info: dict) -> str:
    path = _registry_path(state_dir, mountpoint)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        json.dump(info, fh)
    os.replace(tmp, path)
    return path


def find_mount(state_dir: str, mountpoint: str) -> dict | None:
    """The registry entry of a mount (None if this state dir never mounted it)."""
    try:
        with open(_registry_path(state_dir, mountpoint)) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        info = None
    if info is None and is_mounted(mountpoint):
        try:
            mdir = os.getxattr(mountpoint, "user.megafs.mountdir").decode()
            info = {"mountpoint": os.path.realpath(mountpoint), "mount_dir": mdir, "pid": None}
        except OSError:
            info = None
    return info


def is_mounted(mountpoint: str) -> bool:
    real = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == real:
                    return True
    except OSError:
        pass
    return False


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


# --- local server ----------------------------------------------------------------------------
class LocalServer:
    """The bundled server as a child process, on a port persisted in the state dir."""

    def __init__(self, state_dir: str) -> None:
        self.data = os.path.join(state_dir, "local-server")
        self.port_file = os.path.join(state_dir, "local-server.port")
        self.pid_file = os.path.join(state_dir, "local-server.pid")
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        os.makedirs(self.data, mode=0o700, exist_ok=True)
        try:
            with open(self.port_file) as fh:
                port = int(fh.read().strip())
        except (OSError, ValueError):
            port = 0
        log_path = os.path.join(os.path.dirname(self.data), "local-server.log")
        self._stop_orphan()
        log_fh = open(log_path, "ab")
        cmd = [sys.executable, "-m", "megafs", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--data", self.data]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_fh,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        log_fh.close()
        with open(os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                  "w") as fh:
            fh.write(str(self.proc.pid))
        assert self.proc.stdout is not None
        line = _readline_timeout(self.proc.stdout, 30.0)
        if not line:
            self.stop()
            raise FsError(5, "the local server did not start (port %s in use?); see %s"
                          % (port or "any", log_path))
        self.url = line.strip()
        chosen = int(self.url.rstrip("/").rsplit(":", 1)[1])
        if chosen != port:
            with open(os.open(self.port_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                      "w") as fh:
                fh.write(str(chosen))
        log.info("local server running on port %d", chosen)
        return self.url

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
        for sig, wait in ((15, 5.0), (9, 5.0)):
            try:
                os.kill(pid, sig)
            except OSError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if not _alive(pid):
                return

    def stop(self) -> None:
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


def _die_with_parent() -> None:
    """In the server child: die with the mount process (even when that is kill -9'd).

    SIGKILL rather than SIGTERM: the mount is already gone abruptly, the server's state is
    crash-safe, and a handler-free signal cannot hang (two SIGTERMs in quick succession were
    seen to deadlock ``megafs serve``'s handler)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)   # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def _readline_timeout(stream: Any, timeout: float) -> str:
    result: list[bytes] = []

    def reader() -> None:
        result.append(stream.readline())
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return result[0].decode() if result and result[0].endswith(b"\n") else ""


# --- mount -----------------------------------------------------------------------------------
def run_mount(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if not os.path.isdir(mnt):
        raise FsError(20, "mount point %s is not a directory" % mnt)
    if is_mounted(mnt):
        raise FsError(16, "%s is already mounted" % mnt)
    if args.foreground:
        return _mount_foreground(args, mnt, ready=None)
    return _daemonize(args, mnt)


def _daemonize(args: argparse.Namespace, mnt: str) -> int:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: becomes the mount process
        os.close(rfd)
        code = 1
        try:
            os.setsid()
            state_dir = _state_dir(args)
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            log_path = os.path.join(state_dir, "mount.log")
            logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.close(devnull)
            os.close(logfd)
            root = logging.getLogger()
            for h in list(root.handlers):
                root.removeHandler(h)
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(
                "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
            root.setLevel(min(logging.INFO, root.level or logging.INFO))
            code = _mount_foreground(args, mnt, ready=wfd)
        except BaseException as exc:  # report to the waiting parent, never raise in the child
            try:
                os.write(wfd, ("E" + describe(exc) + "\n").encode())
            except OSError:
                pass
            log.error("mount failed: %s", describe(exc))
        finally:
            os._exit(code)
    os.close(wfd)
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([rfd], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(rfd, 4096)
        if not chunk:
            break
        buf += chunk
        if buf.startswith(b"R") and buf.endswith(b"\n"):
            os.close(rfd)
            api = buf[1:].decode(errors="replace").strip()
            print("megafs: mounted %s (pid %d, API %s)" % (mnt, pid, api), file=sys.stderr)
            return 0
        if buf.endswith(b"\n"):
            break
    os.close(rfd)
    if buf.startswith(b"E"):
        raise FsError(5, buf[1:].decode(errors="replace").strip())
    raise FsError(5, "the mount process exited before the mount was ready (see %s)"
                  % os.path.join(_state_dir(args), "mount.log"))


def _mount_foreground(args: argparse.Namespace, mnt: str, ready: int | None) -> int:
    from fuse import FUSE

    from .api.client import MegaClient
    from .fs import MegaFS
    from .fuse_ops import MegaOps, fuse_options
    from .tree.changes import RemoteWatcher
    from .tree.tree import Tree
    from .vfs.readcache import ReadCache
    from .writeback import WriteBack

    state_dir = _state_dir(args)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    # FUSE requests wait for the GIL behind upload and commit threads; with the default 5 ms
    # switch interval a copy of 4 KiB files spent most of each create/flush waiting for it.
    sys.setswitchinterval(float(os.environ.get("MEGAFS_SWITCH_INTERVAL", "0.0005")))
    # fusepy logs a traceback at DEBUG for every errno answer (ENOENT on each lookup miss).
    if args.verbose < 3:
        logging.getLogger("fuse").setLevel(logging.INFO)
    server = None
    client = None
    wb = None
    watcher = None
    registry = None
    reads = None
    try:
        api = args.api
        if args.local:
            server = LocalServer(state_dir)
            api = server.start()
        client = MegaClient.open(api=api, state_dir=state_dir, connections=args.connections)
        api = client.api
        mount_dir = mount_dir_for(state_dir, api)
        os.makedirs(mount_dir, mode=0o700, exist_ok=True)
        lock_fd = _lock_mount_dir(mount_dir)
        session = client.session
        assert session is not None
        tree = Tree(session.master_key, session.user_handle)
        listing = client.fetch()
        tree.load(listing.nodes, listing.public)
        wb = WriteBack(mount_dir, client, tree, workers=args.uploads)
        wb.recover()
        reads = ReadCache(client)
        core = MegaFS(client, tree, wb, link_timeout=args.link_timeout, readcache=reads,
                      mount_dir=mount_dir)
        watcher = RemoteWatcher(client, tree, listing.sn, on_recover=wb.kick)
        registry = _write_registry(state_dir, mnt, {
            "mountpoint": mnt, "pid": os.getpid(), "mount_dir": mount_dir, "api": api,
            "local": bool(args.local)})

        def on_init() -> None:
            wb.start()
            watcher.start()
            log.info("mounted %s", mnt)
            if ready is not None:
                os.write(ready, ("R%s\n" % api).encode())
                os.close(ready)

        ops = MegaOps(core, on_init=on_init)
        opts = fuse_options(args.options, allow_other=args.allow_other)
        FUSE(ops, mnt, foreground=True, nothreads=False, raw_fi=True, **opts)
        log.info("unmounted %s", mnt)
        del lock_fd
        return 0
    finally:
        if watcher is not None:
            watcher.stop()
        if wb is not None:
            wb.stop()
        if reads is not None:
            reads.close()
        if registry is not None:
            # Kept after unmount: `status`/`retry` still find the queue of this mount point.
            _write_registry(state_dir, mnt, {"mountpoint": mnt, "pid": None,
                                             "mount_dir": mount_dir_for(state_dir, api),
                                             "api": api, "local": bool(args.local)})
        if client is not None:
            client.close()
        if server is not None:
            server.stop()


def _lock_mount_dir(mount_dir: str) -> int:
    """One mount per queue: a second mount of the same API and state dir would race uploads."""
    import fcntl
    fd = os.open(os.path.join(mount_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise FsError(16, "another megafs mount is using %s (same API and state dir)"
                      % mount_dir) from None
    return fd  # held (and released by the kernel) for the life of this process


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


def _rows(info: dict) -> list[dict]:
    from .writeback import read_status
    return read_status(info["mount_dir"])


def run_umount(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    state_dir = _state_dir(args)
    info = find_mount(state_dir, mnt)
    if not is_mounted(mnt):
        raise FsError(22, "%s is not mounted" % mnt)
    if info is not None and not args.no_wait:
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        last = ""
        while True:
            rows = _rows(info)
            waiting = [r for r in rows if r["state"] in ("pending", "uploading")]
            failed = [r for r in rows if r["state"] == "failed"]
            if not waiting:
                break
            pid = info.get("pid")
            if pid and not _alive(pid):
                print("megafs umount: the mount process is gone; %d upload(s) resume at the "
                      "next mount" % len(waiting), file=sys.stderr)
                break
            line = "megafs umount: waiting for %d upload(s) (%d failed)" % (len(waiting),
                                                                            len(failed))
            if line != last:
                print(line, file=sys.stderr, flush=True)
                last = line
            if deadline is not None and time.monotonic() > deadline:
                raise FsError(110, "uploads still pending after %.0f s; not unmounted"
                              % args.timeout)
            time.sleep(0.5)
        if failed:
            print("megafs umount: %d failed upload(s) stay queued and are retried at the next "
                  "mount (see `megafs status`)" % len(failed), file=sys.stderr)
    _unmount(mnt)
    pid = info.get("pid") if info else None
    if pid:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
    print("megafs umount: unmounted %s" % mnt, file=sys.stderr)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


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
    raise FsError(16, "could not unmount %s: %s" % (mnt, "; ".join(e for e in errors if e)))


def run_status(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    info = find_mount(_state_dir(args), mnt)
    live = _live_status(mnt) if is_mounted(mnt) else None
    if live is not None:
        files = live["files"]
    elif info is not None:
        files = _rows(info)
    else:
        raise FsError(2, "no megafs mount or queue known for %s (try --state-dir)" % mnt)
    if args.json:
        print(json.dumps({"mounted": live is not None, "files": files}))
        return 0
    counts: dict[str, int] = {}
    for f in files:
        counts[f["state"]] = counts.get(f["state"], 0) + 1
    print("%s: %s; %d pending, %d uploading, %d failed"
          % (mnt, "mounted" if live is not None else "not mounted", counts.get("pending", 0),
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
        raise FsError(2, "no megafs mount or queue known for %s (try --state-dir)" % mnt)
    from .writeback import mark_failed_for_retry
    n = mark_failed_for_retry(info["mount_dir"])
    print("megafs retry: %d failed upload(s) will be retried at the next mount" % n,
          file=sys.stderr)
    return 0


__all__ = ["add_arguments", "run", "find_mount", "is_mounted", "mount_dir_for"]
