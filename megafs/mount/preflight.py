"""Checks made before a mount starts anything, so that the mistakes people make are answered
with one line naming the cause and the fix instead of a libfuse error code in a log file.

* the mount point: missing, not a folder, already mounted, a dead mount left by a killed
  process ("Transport endpoint is not connected"), not empty (libfuse 3 would mount over
  it and hide the files; ``-o nonempty`` allows it), or overlapping the state dir;
* ``/dev/fuse``: missing (no FUSE module, or a container without the device) or not
  accessible to this user; non-root mounts also need ``fusermount3``;
* ``allow_other`` as a non-root user without ``user_allow_other`` in ``/etc/fuse.conf``;
* the API: whether its host accepts a TCP connection within a few seconds and answers an HTTP
  request within ``API_REPLY_TIMEOUT``, so a wrong or unreachable ``--api`` (or a forgotten
  ``--local``), a port that accepts connections but never answers, or ``https://`` for a
  plain-http server is reported at once instead of after minutes of retries.  Once a mount is
  up, outages are retried quietly in the background.

Every check raises ``FsError``/``MegafsError`` with the message to print; none changes
anything.  No FUSE import here.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import threading
from typing import Callable
from urllib.parse import urlsplit

from ..config import is_loopback
from ..errors import FsError, MegafsError
from .registry import is_mounted

log = logging.getLogger(__name__)

FUSE_DEVICE = "/dev/fuse"
FUSE_CONF = "/etc/fuse.conf"
API_CONNECT_TIMEOUT = 5.0
API_REPLY_TIMEOUT = 10.0     # seconds for the first HTTP reply of the API (issue 24: 3-7 min)
_CHECKED: set[str] = set()   # API URLs check_api found working in this process


def check_mountpoint(mnt: str, *, nonempty: bool = False) -> None:
    """The mount point exists, is an empty folder and is not mounted (alive or dead)."""
    try:
        st = os.stat(mnt)
    except FileNotFoundError:
        raise FsError(errno.ENOENT, "mount point %s does not exist; create it with "
                      "`mkdir -p %s`" % (mnt, mnt)) from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN or is_mounted(mnt):
            raise FsError(errno.EBUSY, "%s is a dead mount (its megafs process was killed); "
                          "clear it with `megafs umount %s` (or `fusermount3 -u %s`), then "
                          "mount again" % (mnt, mnt, mnt)) from None
        raise FsError(exc.errno or errno.EIO, "cannot use mount point %s: %s"
                      % (mnt, exc.strerror or exc)) from None
    import stat as stat_mod
    if not stat_mod.S_ISDIR(st.st_mode):
        raise FsError(errno.ENOTDIR, "mount point %s is not a folder" % mnt)
    if is_mounted(mnt):
        if _dead(mnt):
            raise FsError(errno.EBUSY, "%s is a dead mount (its megafs process was killed); "
                          "clear it with `megafs umount %s` (or `fusermount3 -u %s`), then "
                          "mount again" % (mnt, mnt, mnt))
        raise FsError(errno.EBUSY, "%s is already mounted; unmount it first (`megafs umount "
                      "%s`) or choose another folder" % (mnt, mnt))
    if not os.access(mnt, os.W_OK | os.X_OK):
        raise FsError(errno.EACCES, "no write access to mount point %s; use a folder you "
                      "own" % mnt)
    if not nonempty:
        with os.scandir(mnt) as entries:
            if any(True for _ in entries):
                raise FsError(errno.ENOTEMPTY, "mount point %s is not empty (the mount would "
                              "hide its files); use an empty folder, or -o nonempty" % mnt)


def check_state_dir_apart(mnt: str, state_dir: str) -> None:
    """The mount point is neither the state dir, nor inside it, nor above it: the mount
    stages its files in the state dir, so writing there through itself would wait on its own
    FUSE requests (issue 24: the first write hung in D state until the connection was
    aborted by hand)."""
    m, s = os.path.realpath(mnt), os.path.realpath(state_dir)
    if m == s or m.startswith(s.rstrip("/") + "/"):
        raise FsError(errno.EINVAL, "mount point %s is inside the state dir %s (megafs keeps "
                      "its staged files there); mount elsewhere or pass another --state-dir"
                      % (mnt, state_dir))
    if s.startswith(m.rstrip("/") + "/"):
        raise FsError(errno.EINVAL, "the state dir %s is inside the mount point %s (megafs "
                      "would stage files through its own mount); pass a --state-dir outside it"
                      % (state_dir, mnt))


def _dead(mnt: str, timeout: float = 2.0) -> bool:
    """Whether a mount point's FUSE connection is gone (statvfs: ENOTCONN).  The root's
    attributes may still come from the kernel's cache, so stat alone cannot tell; a mount that
    does not answer within ``timeout`` counts as alive (busy)."""
    import threading

    box: list[bool] = []

    def probe() -> None:
        try:
            os.statvfs(mnt)
            box.append(False)
        except OSError as exc:
            box.append(exc.errno == errno.ENOTCONN)
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(box and box[0])


def check_fuse_device(*, allow_other: bool = False, device: str = FUSE_DEVICE,
                      conf: str = FUSE_CONF) -> None:
    """``/dev/fuse`` can be opened by this user, and what a non-root mount needs is there."""
    if not os.path.exists(device):
        raise FsError(errno.ENODEV, "%s is missing: load the FUSE module (`modprobe fuse`) "
                      "or, in a container, pass the device (`--device /dev/fuse`)" % device)
    try:
        os.close(os.open(device, os.O_RDWR))
    except OSError as exc:
        raise FsError(exc.errno or errno.EACCES, "cannot open %s (%s): this user may not "
                      "use FUSE; make it readable and writable for you (Debian: mode 0666, "
                      "package fuse3) or mount as root" % (device, exc.strerror or exc)
                      ) from None
    if os.geteuid() == 0:
        return
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        raise FsError(errno.ENOENT, "fusermount3 is missing: install the fuse3 package "
                      "(`apt-get install fuse3`)")
    if allow_other and not _conf_allows_other(conf):
        raise FsError(errno.EPERM, "allow_other needs `user_allow_other` in %s for users "
                      "other than root; add that line (as root) or drop allow_other" % conf)


def _conf_allows_other(conf: str) -> bool:
    try:
        with open(conf) as fh:
            return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in fh)
    except OSError:
        return False


def check_api(api: str, timeout: float = API_CONNECT_TIMEOUT) -> None:
    """The API host accepts a TCP connection within ``timeout`` seconds and answers HTTP.

    Once per process and URL: ``megafs mount`` checks before it forks (so the error reaches
    the terminal) and the mount checks again for a URL only its session file names; the
    second check of the same URL cost three more round trips (TCP, TLS, GET: 0.45 s at
    150 ms, issue 23) for nothing.  A forked daemon inherits what its parent checked."""
    if api in _CHECKED:
        return
    parts = urlsplit(api)
    host = parts.hostname or ""
    if parts.scheme == "http" and not is_loopback(api):
        # said before the connection is tried, so it is said even when the host is down
        log.warning("API URL %s uses plain http on a non-loopback host: session ids would "
                    "travel unencrypted", api)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise MegafsError("the API URL %s has a bad port" % api) from None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        if isinstance(exc, socket.gaierror):
            reason = "unknown host %s" % host
        elif isinstance(exc, (socket.timeout, TimeoutError)):
            reason = "no answer within %.0f s" % timeout
        else:
            reason = exc.strerror or str(exc)
        hint = ("start the local server with --local (or `megafs serve`)"
                if host in ("127.0.0.1", "localhost", "::1") else
                "check the --api URL and your network")
        raise MegafsError("cannot reach the MEGA API at %s (%s); %s" % (api, reason, hint)
                          ) from None
    check_api_speaks_http(api, sock=sock)
    _CHECKED.add(api)


def check_api_soon(api: str) -> Callable[[], None]:
    """``check_api(api)`` on a thread of its own, started now; returns the function that
    waits for it and raises what it raised (MegafsError).  ``megafs mount`` starts it before
    its local checks and imports and waits before it forks or builds the mount: the probe's
    TCP and TLS handshakes (two round trips) no longer wait for ~0.1 s of imports (issue
    23)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            check_api(api)
        except BaseException as exc:     # noqa: B902 - handed to the waiting thread
            failed.append(exc)
    worker = threading.Thread(target=run, name="api-check", daemon=True)
    worker.start()

    def wait() -> None:
        worker.join()
        if failed:
            raise failed[0]
    return wait


def check_api_speaks_http(api: str, timeout: float = API_REPLY_TIMEOUT,
                          sock: socket.socket | None = None) -> None:
    """The API answers an HTTP request (any status) within ``timeout`` seconds.  A GET of the
    base URL changes nothing on any server; what fails is named: no reply at all, TLS asked
    of a plain-http server (and the reverse), an untrusted certificate.  Over https on
    ``sock`` (not through a proxy) a completed TLS handshake with a trusted certificate is the
    answer and no GET is sent.

    ``sock`` (check_api's TCP connection to the API host) carries the GET, and the pool it is
    kept alive in goes to the process's first API client (``api/probe.take_spare``): the
    check costs no connection of its own and the first ``sc`` of a mount none either."""
    import requests

    from ..api.apireq import ReplyTooLarge, untrusted_certificate
    from ..api.http import HttpPool
    from ..api.probe import adopt, keep_spare
    parts = urlsplit(api)
    where = "%s:%s" % (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    pool = HttpPool()
    kept = False
    try:
        if sock is not None and adopt(pool, api, sock, timeout) and parts.scheme == "https":
            # the handshake answered with a certificate this machine trusts for the API's
            # name: that host is the API, and a GET would cost one more round trip before
            # the mount's first listing (issue 23; 0.15 s at 150 ms)
            keep_spare(pool)
            kept = True
            return
        try:
            pool.request("GET", api, timeout=(API_CONNECT_TIMEOUT, timeout), limit=1 << 16)
        except ReplyTooLarge:
            pass                    # a long answer is an answer
        keep_spare(pool)
        kept = True
    except requests.exceptions.SSLError as exc:
        text = str(exc)
        if untrusted_certificate(exc):
            raise MegafsError("the MEGA API at %s: its certificate is not trusted by this "
                              "machine; for a private CA, set REQUESTS_CA_BUNDLE to its "
                              "certificate" % api) from None
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text \
                or "record layer failure" in text or "packet length too long" in text:
            raise MegafsError("%s speaks plain http, not https: use --api http://%s/"
                              % (where, where)) from None
        raise MegafsError("TLS with the MEGA API at %s failed (%s)" % (api, text[:120])
                          ) from None
    except requests.exceptions.ReadTimeout:
        raise MegafsError("%s accepts connections but sends no HTTP reply within %.0f s; "
                          "check the --api URL (host and port)" % (where, timeout)) from None
    except requests.exceptions.ConnectionError as exc:
        text = str(exc)
        if parts.scheme == "http" and any(sign in text for sign in (
                "BadStatusLine", "RemoteDisconnected", "ConnectionResetError",
                "Connection aborted")):
            raise MegafsError("%s does not answer plain http (if it speaks https, use --api "
                              "https://%s/)" % (where, where)) from None
        raise MegafsError("cannot reach the MEGA API at %s (%s)" % (api, text[:120])) from None
    except requests.RequestException as exc:
        raise MegafsError("the MEGA API at %s gave no usable HTTP reply (%s)"
                          % (api, type(exc).__name__)) from None
    finally:
        if not kept:
            pool.close()
