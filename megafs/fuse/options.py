"""Mount options: what megafs asks of the kernel and libfuse, and the user's ``-o`` list.

Kernel caches: names and attributes are cached for ``CACHE_TIMEOUT`` seconds; what another
client changes is invalidated as soon as the change feed applies it (``adapter.Invalidator``),
and negative lookups are not cached, so a new name shows at once.  A file removed while open
is renamed by libfuse to a hidden ``.fuse_hidden*`` name until its last close (not
``hard_remove``: the kernel asks for the attributes of an open file by inode only, and libfuse
needs a path for that); the core treats that rename as the removal
and never lists hidden names.  ``nullpath_ok``: operations on open files may arrive without a
path.  ``default_permissions``: the kernel checks modes.

The ``-o`` list is checked here, before anything is started: megafs' own options
(``OWN_OPTIONS``: the same settings as the command-line flags, so that ``mount -t fuse.megafs``
and ``/etc/fstab`` can give all of them), the libfuse and kernel options megafs passes on
(``FUSE_OPTIONS``), and the options ``mount(8)`` and systemd use for themselves
(``IGNORED_OPTIONS``).  Anything else is refused with one line naming it, instead of libfuse's
"RuntimeError: 1".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

CACHE_TIMEOUT = 60.0      # seconds; remote changes invalidate what they touch at once
MAX_THREADS = 16        # libfuse worker threads serving requests at once


class OptionError(ValueError):
    """A ``-o`` option that megafs does not know or whose value is wrong."""


def _flag(value: str | bool) -> bool:
    if value is True:
        return True
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise ValueError("expected yes or no")


def _size(value: str | bool) -> int:
    from ..config import parse_size
    return parse_size(str(value))


def _count(low: int, high: int) -> Callable[[str | bool], int]:
    def convert(value: str | bool) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError("%r is not a whole number (give one between %d and %d)"
                             % (value if value is not True else "", low, high)) from None
        if not low <= number <= high:
            raise ValueError("must be between %d and %d" % (low, high))
        return number
    return convert


def parse_seconds(value: str | bool) -> float:
    """A finite number of seconds above 0 and at most a year; ValueError says what is
    wrong in words (``--link-timeout -5`` was accepted before, issue 24)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError("%r is not a number of seconds" % (value if value is not True
                                                            else "")) from None
    if not 0 < number <= 365 * 86400:     # also refuses nan and inf
        raise ValueError("must be more than 0 seconds and at most a year, not %s" % value)
    return number


_seconds = parse_seconds


def parse_port(value: str | bool) -> int:
    """A TCP port 1-65535; ValueError says what is wrong in words."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if not 1 <= number <= 65535:
        raise ValueError("a port is a whole number 1-65535, not %r"
                         % (value if value is not True else ""))
    return number


def _level(value: str | bool) -> str:
    text = _text(value).upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("%r is not a log level (DEBUG, INFO, WARNING or ERROR)" % value)
    return text


def _fsync(value: str | bool) -> str:
    text = _text(value).strip().lower()
    if text not in ("upload", "local"):
        raise ValueError("%r is not upload or local" % value)
    return text


def _text(value: str | bool) -> str:
    if value is True or not str(value):
        raise ValueError("needs a value")
    return str(value)


@dataclass(frozen=True)
class OwnOption:
    name: str                          # as written in -o (with _); --name-with-dashes alike
    convert: Callable[[Any], Any]
    help: str
    value: str = ""                    # shown as name=VALUE; "" for a flag


OWN_OPTIONS: dict[str, OwnOption] = {o.name: o for o in (
    OwnOption("state_dir", _text, "sessions, queue, staged files, logs "
              "(default $XDG_DATA_HOME/megafs)", "DIR"),
    OwnOption("api", _text, "MEGA API base URL (default $MEGAFS_API or the real MEGA)", "URL"),
    OwnOption("local", _flag, "start the bundled local server of the state dir and mount it"),
    OwnOption("local_port", parse_port, "with local: serve on this port from now on (the "
              "state dir keeps it; links made before name the old one)", "PORT"),
    OwnOption("uploads", _count(1, 64), "files uploaded in parallel (default 4)", "N"),
    OwnOption("connections", _count(1, 64), "connections per file transfer, 1-64 (default 4)",
              "N"),
    OwnOption("link_timeout", _seconds, "longest wait of a .link read for its upload "
              "(default 600)", "SECONDS"),
    OwnOption("show_links", _flag, "list the virtual X.link files in directory listings"),
    OwnOption("staging_max", _size, "most bytes staged for upload at once; writes past it "
              "wait for uploads, then fail with ENOSPC (default: no limit but the disk)",
              "SIZE"),
    OwnOption("log_file", _text, "log file of the mount (default "
              "<state-dir>/logs/mount-<mount point>.log)", "FILE"),
    OwnOption("log_level", _level, "DEBUG, INFO, WARNING or ERROR "
              "(default INFO for a background mount)", "LEVEL"),
    OwnOption("nonempty", _flag, "allow mounting over a folder that is not empty (hides its "
              "files)"),
    OwnOption("fsync", _fsync, "upload: fsync returns once the data is on MEGA (one upload "
              "per fsync, the default); local: once it is durable on the local disk, the "
              "upload follows", "upload|local"),
    OwnOption("session", _text, "use this session file instead of the state dir's", "FILE"),
)}

# Passed on to libfuse / the kernel (libfuse 3 mount options, fuse(8) and mount(8)).
FUSE_OPTIONS: dict[str, str] = {
    "allow_other": "let other users use the mount (non-root: needs user_allow_other in "
                   "/etc/fuse.conf)",
    "allow_root": "let root use the mount",
    "auto_unmount": "unmount when the megafs process dies (needs fusermount3)",
    "default_permissions": "the kernel checks modes (always on)",
    "ro": "read-only", "rw": "read-write (the default)",
    "nosuid": "", "suid": "", "nodev": "", "dev": "", "noexec": "", "exec": "",
    "noatime": "", "atime": "", "relatime": "", "nodiratime": "", "diratime": "",
    "sync": "", "async": "", "dirsync": "",
    "fsname": "=NAME: the mount's source in /proc/mounts (default megafs:HOST)",
    "subtype": "=NAME: the type after fuse. (default megafs)",
    "max_read": "=BYTES", "max_threads": "=N: libfuse worker threads (default 16)",
    "max_idle_threads": "=N",
    "umask": "=MODE", "uid": "=UID", "gid": "=GID",
    "kernel_cache": "", "debug": "as -d: stay in the foreground with the DEBUG log and "
                                     "libfuse's request trace on stderr",
}

# Options mount(8), fstab and systemd use for themselves; never given to libfuse.
IGNORED_OPTIONS = frozenset({"defaults", "auto", "noauto", "user", "users", "nouser", "owner",
                             "group", "_netdev", "nofail", "comment", "loop", "bg", "fg"})
IGNORED_PREFIXES = ("x-", "comment=")


def _canonical(key: str) -> str:
    return key.strip().replace("-", "_")


def split_options(extra: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's ``-o a,b=c`` string as (megafs options, libfuse options), checked and
    converted.  Raises ``OptionError`` naming the first unknown or malformed option."""
    own: dict[str, Any] = {}
    fuse: dict[str, Any] = {}
    for item in (extra or "").split(","):
        item = item.strip()
        if not item or item.startswith(IGNORED_PREFIXES):
            continue
        key, eq, value = item.partition("=")
        name = _canonical(key)
        raw: Any = value if eq else True
        if name in OWN_OPTIONS:
            try:
                own[name] = OWN_OPTIONS[name].convert(raw)
            except ValueError as exc:
                raise OptionError("bad value for mount option %s: %s" % (name, exc)) from None
        elif name in FUSE_OPTIONS:
            fuse[name] = raw
        elif name in IGNORED_OPTIONS:
            continue
        else:
            raise OptionError("unknown mount option %r (`megafs mount --help` lists the -o "
                              "options)" % key)
    return own, fuse


def describe_options() -> str:
    """The ``-o`` options for ``megafs mount --help`` and the README."""
    import textwrap

    lines = []
    for opt in OWN_OPTIONS.values():
        left = opt.name + ("=" + opt.value if opt.value else "")
        lines += textwrap.wrap(opt.help, 96, initial_indent="  %-22s " % left,
                               subsequent_indent=" " * 25)
    for title, names in (("passed to libfuse/the kernel: ", sorted(FUSE_OPTIONS)),
                         ("ignored (for mount(8)/systemd): ",
                          sorted(IGNORED_OPTIONS) + ["x-*"])):
        lines += textwrap.wrap(", ".join(names), 96, initial_indent="  " + title,
                               subsequent_indent=" " * 4)
    return "\n".join(lines)


def mount_options(extra: dict[str, Any] | None = None, *, allow_other: bool = False,
                  fsname: str = "megafs:") -> dict[str, Any]:
    """Options for ``mfusepy.FUSE`` (mount options; cache settings go into the libfuse 3
    config at ``init``, see ``adapter.MegaOps.init_with_config``).  ``fsname`` is the mount's
    source in /proc/mounts (``megafs:`` + the API host; a bare word would be taken for a path
    by fusermount)."""
    # max_threads: libfuse 3.14 otherwise warns that its default (-1) is invalid
    opts: dict[str, Any] = {"fsname": fsname, "subtype": "megafs",
                            "default_permissions": True, "max_threads": MAX_THREADS}
    if allow_other:
        opts["allow_other"] = True
    opts.update(extra or {})
    return opts
