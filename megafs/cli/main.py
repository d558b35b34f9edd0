"""The ``megafs`` command: argument parsing, logging set-up and dispatch to subcommands.

Each subcommand lives in its own module that defines ``add_arguments(parser, name)`` and
``run(args) -> int``; this file only wires them together and turns every failure a person can
cause into one line on stderr and a non-zero exit status (never a traceback): a
``MegafsError`` (exit 1), a local ``OSError`` (exit 1), Ctrl-C (exit 130), SIGTERM/SIGHUP
where a command turns them into ``Stopped`` (exit 128 + the signal) and a closed
output pipe (``megafs status | head``: exit 141, quietly).  The common options (``-v``,
``--log-file``, ``--log-level``) are accepted before and after the subcommand.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Any, NoReturn

from .. import __version__
from ..config import printable, setup_logging
from ..errors import MegafsError, Stopped, describe
from ..mount.options import MOUNT_OPTIONS
from .args import arg_type

log = logging.getLogger(__name__)

# subcommand -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "mount": ("megafs.cli.mount", "mount the MEGA Cloud Drive on a directory"),
    "umount": ("megafs.cli.mount", "wait for pending uploads, then unmount"),
    "status": ("megafs.cli.mount", "show pending, uploading and failed files of a mount"),
    "retry": ("megafs.cli.mount", "retry failed uploads of a mount now"),
    "upload": ("megafs.cli.transfer", "upload files and print their public links"),
    "get": ("megafs.cli.transfer", "download and verify a public file or folder link"),
    "login": ("megafs.cli.account", "log in to your own MEGA account (email and password)"),
    "logout": ("megafs.cli.account", "end an account's session and remove its file"),
    "signup": ("megafs.cli.account", "create a MEGA account; --confirm LINK finishes it"),
    "session": ("megafs.cli.account", "list sessions; --show prints one (a secret)"),
    "serve": ("megafs.server.cli", "run the local MEGA-compatible API server"),
    "completion": ("megafs.cli.extras", "print a bash or zsh completion script"),
    "install-helper": ("megafs.cli.extras", "link /sbin/mount.fuse.megafs, for mount -t "
                                            "fuse.megafs and fstab"),

}

# `megafs --help`: what megafs is, for a person meeting it.
DESCRIPTION = (
    "megafs mounts your MEGA (mega.nz) Cloud Drive as a folder.  Files copied into it are\n"
    "encrypted on this machine, uploaded in the background (they survive a crash or a\n"
    "reboot) and get a public link: read X.link next to a file X, or its user.mega.link\n"
    "extended attribute (DIR.link next to a folder: a link to the whole folder).  Without\n"
    "an account megafs uses an anonymous one of its own; `megafs login` uses yours.\n"
    "`--local` runs a MEGA-compatible server on this machine to try it offline.")

# Shown at the end of `megafs COMMAND --help`.
EXAMPLES: dict[str, str] = {
    "mount": """examples:
  megafs mount ~/mega --local             # try it offline: the bundled local server
  megafs mount ~/mega                     # the real MEGA, an anonymous account
  megafs mount ~/mega -o uploads=8,staging_max=20G,allow_other
  megafs mount ~/mega -f -v               # stay in the foreground, log to stderr
  megafs mount ~/album --link 'https://mega.nz/folder/H#K'   # a folder link, read-only
  mount -t fuse.megafs local ~/mega -o state_dir=/var/lib/megafs   # via mount.megafs

-o options (comma separated; each is also a flag: -o link_timeout=60 is --link-timeout 60):
%(options)s""",
    "umount": """examples:
  megafs umount ~/mega                    # wait for uploads (with progress), then unmount
  megafs umount ~/mega --timeout 600      # give up (exit 1, still mounted) after 10 minutes
  megafs umount ~/mega --no-wait          # unmount now; uploads resume at the next mount""",
    "status": """examples:
  megafs status ~/mega                    # pending, uploading and failed files
  megafs status ~/mega --watch            # live bytes, rates and ETA until all are uploaded
  megafs status ~/mega --json | jq .files""",
    "retry": """examples:
  megafs retry ~/mega                     # failed uploads are tried again now""",
    "upload": """examples:
  megafs upload photo.png notes.pdf       # one link per file on stdout
  megafs upload --local photo.png         # to the server of a `megafs mount --local`""",
    "get": """examples:
  megafs get 'https://mega.nz/file/HANDLE#KEY'
  megafs get 'http://127.0.0.1:8733/file/HANDLE#KEY' -o copy.png   # a --local link
  megafs get LINK -o downloads/           # into a folder, under the file's own name
  megafs get LINK -o copy.png --force     # replace copy.png if it exists
  megafs get 'https://mega.nz/folder/HANDLE#KEY' -o album   # a whole folder; run it
                                          # again after an interruption to finish it
  megafs get 'https://mega.nz/folder/HANDLE#KEY/file/H'     # one file of a folder link""",
    "session": """examples:
  megafs session                          # the sessions of the state dir
  megafs session --show --local           # one session's JSON (a secret)
  megafs session --new                    # start a new anonymous account (the old file is kept)""",
    "login": """examples:
  megafs login ann@example.com            # asks for the password (or $MEGAFS_PASSWORD)
  megafs login ann@example.com --password-file ~/.mega-pw
  megafs mount ~/mega --account ann@example.com""",
    "logout": """examples:
  megafs logout ann@example.com           # ends the session and removes its file""",
    "signup": """examples:
  megafs signup ann@example.com --name Ann          # then open the mailed link:
  megafs signup --confirm 'https://mega.nz/#confirm...'""",
    "completion": """examples:
  megafs completion bash > ~/.local/share/bash-completion/completions/megafs
  megafs completion zsh > ~/.zfunc/_megafs      # with fpath+=(~/.zfunc) in ~/.zshrc""",
    "install-helper": """examples:
  sudo megafs install-helper              # /sbin/mount.fuse.megafs -> mount.megafs
  megafs install-helper --dir ~/sbin      # somewhere else""",
    "serve": """examples:
  megafs serve --port 0 --data /tmp/mega-local     # prints its URL, e.g. http://127.0.0.1:41234/
  megafs serve --tls --fault '{"where":"cs","error":-3,"rate":0.1,"seed":1}'""",
}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (the usage block is what ``--help`` is for)."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, "%s: %s (see `%s --help`)\n" % (self.prog, message, self.prog))


def _common_options(top: bool) -> "_Parser":
    """``-v``, ``--log-file`` and ``--log-level``, for the top parser (``top``) and for every
    subcommand; values given after the subcommand are kept apart and merged in ``main``."""
    common = _Parser(add_help=False)
    prefix = "" if top else "sub_"
    default = None if top else argparse.SUPPRESS
    common.add_argument("-v", "--verbose", dest=prefix + "verbose", action="count",
                        default=0 if top else argparse.SUPPRESS,
                        help="more log output: -v INFO, -vv DEBUG (anywhere on the line)")
    for opt in (MOUNT_OPTIONS["log_file"], MOUNT_OPTIONS["log_level"]):   # the mount's too
        common.add_argument(*opt.flag_names, dest=prefix + opt.name, metavar=opt.metavar,
                            default=default, type=arg_type(opt.parse, opt.name),
                            choices=opt.choices or None, help=opt.help_text())
    return common


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only`` (a subcommand), only that subcommand's module is
    imported and its arguments added (the others are listed, without arguments): a mount
    does not import the server, the account and the download commands (issue 23)."""
    parser = _Parser(
        prog="megafs", description=DESCRIPTION, parents=[_common_options(True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="getting started:\n"
               "  mkdir ~/mega && megafs mount ~/mega --local   # or without --local: MEGA\n"
               "  cp photo.png ~/mega/ && cat ~/mega/photo.png.link\n"
               "  megafs umount ~/mega                          # waits for the uploads\n\n"
               "`megafs COMMAND --help` shows a command's options and examples; `man megafs` "
               "lists every command's options.")
    parser.add_argument("--version", action="version", version="megafs " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = _common_options(False)
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, description=help_text, parents=[common])
            continue
        module = importlib.import_module(module_name)
        epilog = EXAMPLES.get(name)
        if epilog and "%(options)s" in epilog:
            from ..mount.options import describe_options
            epilog = epilog.replace("%(options)s", describe_options())
        cmd = sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                             epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        getattr(module, "add_arguments")(cmd, name)
        cmd.set_defaults(_module=module)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand of a command line, when it is plain to see: the first word that is not
    a common option (``-v``, ``--log-file F``, ``--log-level L``) or its value; None when
    anything else comes first (an abbreviated option, ``--help``...)."""
    takes_value = {flag for opt in (MOUNT_OPTIONS["log_file"], MOUNT_OPTIONS["log_level"])
                   for flag in opt.flag_names}
    words = iter(argv)
    for word in words:
        if word in takes_value:
            next(words, None)
        elif word.split("=", 1)[0] in takes_value or word in ("-v", "--verbose") \
                or (len(word) > 1 and word.strip("v") == "-"):
            continue
        else:
            return word if word in COMMANDS else None
    return None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; the common options given after the subcommand win."""
    only = _command_of(sys.argv[1:] if argv is None else argv)
    args = build_parser(only).parse_args(argv)
    if getattr(args, "_module", None) is None:      # not the command guessed: all of them
        args = build_parser().parse_args(argv)
    args.verbose = args.verbose + getattr(args, "sub_verbose", 0)
    for name in ("log_file", "log_level"):
        value = getattr(args, "sub_" + name, None)
        if value is not None:
            setattr(args, name, value)
    return args


# Commands that may log in or make an account, so may be asked for a proof of work: they show
# its progress line on a terminal (``progress.ProofOfWorkLine``).
POW_COMMANDS = {"mount", "upload", "login", "signup"}
# Commands that end with one line on SIGTERM as on Ctrl-C (a mount has its own handling).
TERM_COMMANDS = {"upload", "get", "login", "signup"}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so everything unwinds."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except KeyboardInterrupt:
        print("\nmegafs: interrupted", file=sys.stderr)
        return 130
    try:
        setup_logging(args.verbose, level=args.log_level, log_file=args.log_file)
    except OSError as exc:
        print("megafs %s: cannot write the log file %s: %s" % (args.command, args.log_file,
                                                               exc.strerror or exc),
              file=sys.stderr)
        return 1
    if args.command in TERM_COMMANDS:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command in POW_COMMANDS:
            from .progress import ProofOfWorkLine
            with ProofOfWorkLine.installed():
                return int(args._module.run(args) or 0)
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("\nmegafs %s: interrupted" % args.command, file=sys.stderr)
        return 130
    except Terminated:
        print("megafs %s: terminated (SIGTERM)" % args.command, file=sys.stderr)
        return 143
    except Stopped as exc:      # `get` during a download: SIGTERM, SIGHUP (cli/transfer.py)
        print("megafs %s: terminated (%s)" % (args.command, exc.name), file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:
        # `megafs status | head`: the reader is gone; say nothing more, and keep Python's
        # exit-time flush of stdout from printing a traceback.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except MegafsError as exc:
        # one line: server text and remote names in it are escaped (``printable``)
        print("megafs %s: %s" % (args.command, printable(describe(exc))), file=sys.stderr)
        return 1
    except OSError as exc:
        # a local file or directory problem: one line, no traceback
        where = "%s: " % exc.filename if exc.filename else ""
        print("megafs %s: %s" % (args.command, printable("%s%s" % (where, exc.strerror or exc))),
              file=sys.stderr)
        return 1
