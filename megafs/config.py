"""Configuration owned in one place: state directories, the API URL, environment knobs, logging.

Every default path and every ``MEGAFS_*`` environment variable is read here, and logging is
configured here once (``setup_logging``).  Also the one helper that writes a small private file
atomically (``atomic_write``) and the one that makes a private (0700) directory.  No network
I/O; raises ``MegafsError`` with a one-line reason for a bad value.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import sys
from typing import TextIO
from urllib.parse import urlsplit

from . import DEFAULT_API
from .errors import MegafsError

# --- environment knobs ------------------------------------------------------------------------
ENV_API = "MEGAFS_API"                    # API base URL when --api is not given
ENV_RETRY_SECONDS = "MEGAFS_RETRY_SECONDS"  # how long one request retries transient errors
ENV_SWITCH_INTERVAL = "MEGAFS_SWITCH_INTERVAL"  # the mount's GIL switch interval (seconds)
ENV_PIN_THREADS = "MEGAFS_PIN_THREADS"    # 0 turns the libfuse thread-state workaround off

DEFAULT_RETRY_SECONDS = 300.0
DEFAULT_SWITCH_INTERVAL = 0.0005


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        raise MegafsError("%s must be a number of seconds, not %r" % (name, value)) from None


def retry_seconds() -> float:
    """``$MEGAFS_RETRY_SECONDS``: how long one request retries transient errors (default 300)."""
    return _env_float(ENV_RETRY_SECONDS, DEFAULT_RETRY_SECONDS)


def switch_interval() -> float:
    """``$MEGAFS_SWITCH_INTERVAL``: the mount process's ``sys.setswitchinterval`` (seconds)."""
    return _env_float(ENV_SWITCH_INTERVAL, DEFAULT_SWITCH_INTERVAL)


def pin_threads() -> bool:
    """``$MEGAFS_PIN_THREADS`` (default on): keep Python thread states of libfuse threads."""
    value = os.environ.get(ENV_PIN_THREADS, "1").strip().lower()
    return value not in ("0", "no", "off", "false")


# --- state directories -----------------------------------------------------------------------
def default_state_dir() -> str:
    """``$XDG_DATA_HOME/megafs`` (else ``~/.local/share/megafs``): sessions, queues, logs."""
    base = (os.environ.get("XDG_DATA_HOME")
            or os.path.join(os.path.expanduser("~"), ".local", "share"))
    return os.path.join(base, "megafs")


def state_dir_ready(path: str) -> str:
    """Make the state directory (0700) and check that it is usable, or raise ``MegafsError``
    with one line saying what to do (an unwritable ``$HOME``, ``--state-dir /proc/x``)."""
    try:
        private_dir(path)
        probe = os.path.join(path, ".megafs-write-test-%d" % os.getpid())
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise MegafsError("cannot use the state directory %s: %s; choose a writable one with "
                          "--state-dir DIR (or set XDG_DATA_HOME)"
                          % (path, exc.strerror or exc)) from None
    return path


def private_dir(path: str) -> str:
    """Create ``path`` and its missing parents with mode 0700; return ``path``.

    A folder that already exists keeps its mode: megafs never changes the mode of a folder it
    did not create (``--log-file /tmp/megafs.log`` once made ``/tmp`` 0700, issue 20).  What
    megafs keeps inside is private by its own modes (0700 folders, 0600 files).  Raises
    OSError (``NotADirectoryError`` if ``path`` is a file)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        private_dir(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", path) from None
        return path
    os.chmod(path, 0o700)        # made here: 0700 whatever the umask
    return path


def atomic_write(path: str, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file, fsync, rename).

    The file is created with ``mode`` (private by default); a crash leaves either the old or the
    new contents, never a mix.  Raises OSError on failure (the temp file is removed)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# --- the API URL -----------------------------------------------------------------------------
def resolve_api(api: str | None) -> str:
    """The API base URL: the argument, else ``$MEGAFS_API``, else ``megafs.DEFAULT_API``."""
    return normalise_api(api or os.environ.get(ENV_API) or DEFAULT_API)


def normalise_api(api: str) -> str:
    """Lower-case scheme and host, drop a default port, exactly one trailing slash."""
    text = api.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MegafsError("API URL must be http:// or https://host/..., got %r" % text)
    host = parts.hostname.lower()
    if ":" in host:
        host = "[%s]" % host
    port = parts.port
    if port and not (parts.scheme == "http" and port == 80
                     or parts.scheme == "https" and port == 443):
        host += ":%d" % port
    path = parts.path.rstrip("/") + "/"
    return "%s://%s%s" % (parts.scheme, host, path)


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- logging ---------------------------------------------------------------------------------
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

# What must not reach a terminal as is (issue 20, item 8): C0 and C1 controls and DEL
# (escape sequences, newlines, bells), the bidirectional overrides and isolates of Unicode
# (U+061C, U+200E/F, U+202A-E, U+2066-9: "RTLO" names that read backwards), the line and
# paragraph separators, and lone surrogates (not encodable at all).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe to show on a terminal or in a log line: every character of ``_UNSAFE``
    becomes ``\\xNN`` or ``\\uNNNN``, the rest is kept (so names stay readable)."""
    return _UNSAFE.sub(lambda m: "\\x%02x" % ord(m.group()) if ord(m.group()) < 0x100
                       else "\\u%04x" % ord(m.group()), text)


def has_unsafe(text: str) -> bool:
    """Whether ``printable`` would change ``text``."""
    return _UNSAFE.search(text) is not None


class _PrintableFormatter(logging.Formatter):
    """Log lines with their message passed through ``printable``: remote names and server
    text in a message cannot forge log lines or drive the terminal (tracebacks are kept)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(verbosity: int = 0, stream: TextIO | None = None, *,
                  level: str | None = None, log_file: str | None = None) -> None:
    """Configure the root logger once: WARNING, INFO with ``-v``, DEBUG with ``-vv``, or
    ``level`` by name; to ``log_file`` (appended, 0600) if given, else ``stream`` (stderr).

    Replaces handlers set before (a daemonized mount re-points its log at its log file).
    urllib3 logs full URLs (session ids included) at DEBUG, so it stays at WARNING; fusepy
    logs a traceback at DEBUG for every errno answer, so it stays at INFO below ``-vvv``.
    Raises OSError if ``log_file`` cannot be opened."""
    root = logging.getLogger()
    handler: logging.Handler
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    for old in list(root.handlers):
        root.removeHandler(old)
    handler.setFormatter(_PrintableFormatter(LOG_FORMAT))
    root.addHandler(handler)
    if level:
        root.setLevel(getattr(logging, level.upper()))
    else:
        root.setLevel(max(logging.DEBUG, logging.WARNING - 10 * verbosity))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if verbosity < 3:
        logging.getLogger("fuse").setLevel(logging.INFO)


# --- sizes -----------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``20G``, ``1.5T`` (binary multiples) as bytes; ValueError."""
    found = _SIZE.match(str(text))
    if found is None:
        raise ValueError("not a size: %r (try 500M or 20G)" % text)
    number, unit = found.groups()
    return int(float(number) * 1024 ** " kmgt".index(unit.lower() or " "))


def format_size(n: float) -> str:
    """``12.0 MiB``-style text for people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return "%.1f TiB" % n
