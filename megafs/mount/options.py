"""The one table of megafs' mount options (issue 21 step 5).

Every setting of ``megafs mount`` is one ``MountOption`` in ``MOUNT_OPTIONS``: its name (the
``-o`` name; the flag is ``--name-with-dashes`` unless ``flags`` says otherwise), its parser
(text or ``True`` -> value; ValueError with the reason in words), its default, its help text
and whether it is a ``MountConfig`` field.  Derived from it: the ``-o`` parsing
(``split_options``; fstab lines and ``mount -t fuse.megafs`` go through it), the flags of
``megafs mount`` (``cli/mount.py``), ``-v``'s siblings ``--log-file``/``--log-level``
(``cli/main.py``), the defaults filled in after both (``cli/mount.apply_options``), the
defaults of ``mount/runtime.MountConfig`` and the ``-o`` list of ``megafs mount --help``
(``describe_options``; the man page and the shell completion are generated from the parser).
The libfuse and kernel options megafs passes on, and those mount(8)/systemd keep for
themselves, are in ``fuse/options.py``.

Kept light (no import of the mount's parts): ``megafs --help`` and every command load it.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..config import LOG_LEVELS, parse_size
from ..fuse.options import FUSE_OPTIONS, IGNORED_OPTIONS, IGNORED_PREFIXES


class OptionError(ValueError):
    """A ``-o`` option that megafs does not know or whose value is wrong."""


# --- parsers: text from -o or a flag (True for a bare -o name) -> value; ValueError in words --
def _shown(value: str | bool) -> str:
    return "" if value is True else str(value)


def parse_switch(value: str | bool) -> bool:
    """``-o name`` or ``name=yes|no|1|0|true|false|on|off``; ValueError otherwise."""
    if value is True:
        return True
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise ValueError("expected yes or no")


def parse_text(value: str | bool) -> str:
    """Any non-empty text; ValueError for a bare ``-o name`` or an empty value."""
    if value is True or not str(value):
        raise ValueError("needs a value")
    return str(value)


def parse_count(low: int, high: int) -> Callable[[str | bool], int]:
    """A parser of whole numbers from ``low`` to ``high``."""
    def convert(value: str | bool) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError("%r is not a whole number (give one between %d and %d)"
                             % (_shown(value), low, high)) from None
        if not low <= number <= high:
            raise ValueError("must be between %d and %d" % (low, high))
        return number
    return convert


def _seconds(value: str | bool) -> float:
    """``value`` as a number of seconds (any float, checked by the caller)."""
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError("%r is not a number of seconds" % _shown(value)) from None


def parse_seconds(value: str | bool) -> float:
    """A finite number of seconds above 0 and at most a year; ValueError says what is
    wrong in words (``--link-timeout -5`` was accepted before, issue 24)."""
    number = _seconds(value)
    if not 0 < number <= 365 * 86400:     # also refuses nan and inf
        raise ValueError("must be more than 0 seconds and at most a year, not %s" % value)
    return number


def parse_hold(value: str | bool) -> float:
    """Seconds from 0 to 60 (``upload_hold``); ValueError says what is wrong in words."""
    number = _seconds(value)
    if not 0 <= number <= 60:             # also refuses nan and inf
        raise ValueError("must be from 0 to 60 seconds, not %s" % value)
    return number


def parse_port(value: str | bool) -> int:
    """A TCP port 1-65535; ValueError says what is wrong in words."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if not 1 <= number <= 65535:
        raise ValueError("a port is a whole number 1-65535, not %r" % _shown(value))
    return number


def parse_bytes(value: str | bool) -> int:
    """A size, ``20G``, ``512M``, ``1048576`` (``config.parse_size``); ValueError."""
    return parse_size(parse_text(value))


def parse_choice(choices: tuple[str, ...], what: str = "") -> Callable[[str | bool], str]:
    """A parser of one of ``choices`` (a ``what``), any case, returned as in ``choices``."""
    listed = ", ".join(choices[:-1]) + " or " + choices[-1]

    def convert(value: str | bool) -> str:
        text = parse_text(value).strip()
        for choice in choices:
            if text.lower() == choice.lower():
                return choice
        raise ValueError("%r is not %s" % (text, "a %s (%s)" % (what, listed) if what
                                           else listed))
    return convert


@dataclass(frozen=True)
class MountOption:
    """One mount option.  ``metavar`` "" makes it a switch (``-o name``, ``--name``)."""

    name: str                                  # the -o name, with _
    parse: Callable[[str | bool], Any]         # text (True: a bare -o name) -> value
    help: str                                  # one sentence or two, without the default
    metavar: str = ""                          # shown as name=METAVAR / --name METAVAR
    default: Any = None                        # after -o and flags; None: decided elsewhere
    default_text: str = ""                     # the default in words, for the help text
    flags: tuple[str, ...] | None = None       # None: ("--name-with-dashes",); (): -o only
    in_o: bool = True                          # reachable as -o name
    choices: tuple[str, ...] = ()              # the values a flag completes to
    field: str | None = None                   # the MountConfig field ("": not one)
    common: bool = False                       # a flag of every command (cli/main.py)
    libfuse: bool = False                      # also handed to libfuse when on

    @property
    def flag_names(self) -> tuple[str, ...]:
        if self.flags is not None:
            return self.flags
        return ("--" + self.name.replace("_", "-"),)

    @property
    def config_field(self) -> str | None:
        """The ``MountConfig`` field this option sets, or None."""
        if self.field is None:
            return self.name
        return self.field or None

    def help_text(self) -> str:
        """The help text with its default, as both ``--help`` lists show it."""
        return self.help + (" (default: %s)" % self.default_text if self.default_text else "")


_COUNT = parse_count(1, 64)

# The order is the order of `megafs mount --help`.
MOUNT_OPTIONS: dict[str, MountOption] = {o.name: o for o in (
    MountOption("api", parse_text, "MEGA API base URL", "URL",
                default_text="$MEGAFS_API or the real MEGA"),
    MountOption("local", parse_switch, "start the bundled local server (data in the state "
                "dir) and mount it; links then open in a browser", default=False),
    MountOption("local_port", parse_port, "with local: serve on PORT from now on, e.g. when "
                "the kept one is taken (links made before name the old port)", "PORT"),
    MountOption("state_dir", parse_text, "sessions, upload queue, staged files and logs",
                "DIR", default_text="$XDG_DATA_HOME/megafs", field=""),
    MountOption("session", parse_text, "use this session file instead of the state dir's",
                "FILE", field="session_file"),
    MountOption("account", parse_text, "mount this logged-in account (`megafs login EMAIL`) "
                "instead of the anonymous one", "EMAIL"),
    MountOption("link", parse_text, "mount this public folder link read-only, without an "
                "account (no login, no session); the owner's changes show within seconds, "
                "writes answer EROFS", "FOLDERLINK"),
    MountOption("foreground", parse_switch, "stay attached and log to stderr (for systemd: "
                "Type=notify)", default=False, flags=("--foreground", "-f"), in_o=False,
                field=""),
    MountOption("debug", parse_switch, "stay in the foreground with the DEBUG log and "
                "libfuse's request trace on stderr (like other FUSE file systems)",
                default=False, flags=("--debug", "-d"), field="", libfuse=True),
    MountOption("link_timeout", parse_seconds, "longest wait of a read of X.link (or "
                "user.mega.link) for X's upload, then ETIMEDOUT", "SECONDS", default=600.0,
                default_text="600"),
    MountOption("uploads", _COUNT, "files uploaded in parallel, 1-64", "N", default=4,
                default_text="4"),
    MountOption("upload_hold", parse_hold, "files of at most 1 MiB closed in a burst (cp -r) "
                "wait at most this long for a 30 ms pause in the closes (longer when they come "
                "slower, at most 0.25 s) before their uploads start, so that the copy keeps "
                "the cores and they go in few requests; 0: each is uploaded as soon as it is "
                "closed", "SECONDS", default=3.0, default_text="3"),
    MountOption("connections", _COUNT, "parallel connections per file transfer, 1-64", "N",
                default=4, default_text="4"),
    MountOption("allow_other", parse_switch, "let other users use the mount (non-root: needs "
                "user_allow_other in /etc/fuse.conf)", default=False, field="", libfuse=True),
    MountOption("show_links", parse_switch, "list the virtual X.link (and DIR.link) files in "
                "directory listings", default=False),
    MountOption("fsync", parse_choice(("upload", "local")), "upload: fsync returns once the data "
                "is on MEGA; local: once it is durable on the local disk, the upload follows",
                "upload|local", default="upload", default_text="upload",
                choices=("upload", "local")),
    MountOption("staging_max", parse_bytes, "most bytes staged for upload at once, e.g. 20G; "
                "writes past it wait for uploads, then fail with ENOSPC", "SIZE", default=0,
                default_text="no limit but the disk"),
    MountOption("nonempty", parse_switch, "allow mounting over a folder that is not empty "
                "(hides its files)", default=False, field=""),
    MountOption("log_file", parse_text, "write the log to FILE", "FILE", field="",
                default_text="<state-dir>/logs/mount-<mount point>.log for a background mount",
                common=True),
    MountOption("log_level", parse_choice(LOG_LEVELS, "log level"), "%s (overrides -v)"
                % ", ".join(LOG_LEVELS), "LEVEL", field="", choices=LOG_LEVELS,
                default_text="INFO for a background mount", common=True),
)}


def _canonical(key: str) -> str:
    return key.strip().replace("-", "_")


def split_options(extra: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's ``-o a,b=c`` string as (megafs options, libfuse options), checked and
    converted; options mount(8) and systemd keep for themselves are dropped.  Raises
    ``OptionError`` naming the first unknown or malformed option."""
    own: dict[str, Any] = {}
    fuse: dict[str, Any] = {}
    for item in (extra or "").split(","):
        item = item.strip()
        if not item or item.startswith(IGNORED_PREFIXES):
            continue
        key, eq, value = item.partition("=")
        name = _canonical(key)
        raw: Any = value if eq else True
        option = MOUNT_OPTIONS.get(name)
        if option is not None and option.in_o:
            try:
                own[name] = option.parse(raw)
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


def check_together(values: Mapping[str, Any]) -> None:
    """The options that make no sense together (after ``-o`` and flags are merged);
    OptionError naming them."""
    if values.get("api") and values.get("local"):
        raise OptionError("give either an API URL or local, not both")
    if values.get("local_port") and not values.get("local"):
        raise OptionError("local_port/--local-port is for --local mounts")
    if values.get("link"):
        others = [name for name in ("account", "session", "local") if values.get(name)]
        if others:
            raise OptionError("a --link mount reads the folder link without an account: give "
                              "either link or %s, not both" % "/".join(others))


def describe_options() -> str:
    """The ``-o`` options for ``megafs mount --help``: megafs' own, with their help texts
    and flags, then the names passed on to libfuse and those ignored."""
    lines = []
    for opt in MOUNT_OPTIONS.values():
        if not opt.in_o:
            continue
        left = opt.name + ("=" + opt.metavar if opt.metavar else "")
        lines += textwrap.wrap(opt.help_text(), 96, initial_indent="  %-22s " % left,
                               subsequent_indent=" " * 25)
    for title, names in (("passed to libfuse/the kernel: ", sorted(FUSE_OPTIONS)),
                         ("ignored (for mount(8)/systemd): ",
                          sorted(IGNORED_OPTIONS) + ["x-*"])):
        lines += textwrap.wrap(", ".join(names), 96, initial_indent="  " + title,
                               subsequent_indent=" " * 4)
    return "\n".join(lines)
