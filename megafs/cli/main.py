"""The ``megafs`` command: argument parsing, logging set-up and dispatch to subcommands.

Each subcommand lives in its own module that defines ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together and turns an escaped ``MegafsError``
into a one-line message and a non-zero exit status (never a traceback).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..config import setup_logging
from ..errors import MegafsError, describe

log = logging.getLogger(__name__)

# subcommand -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("megafs.server.cli", "run the local MEGA-compatible API server"),
    "upload": ("megafs.client_cli", "upload files and print their public links"),
    "get": ("megafs.client_cli", "download and verify a public file link"),
    "session": ("megafs.cli.account", "list sessions; --show prints one (a secret)"),
    "login": ("megafs.cli.account", "log in to your own MEGA account (email and password)"),
    "logout": ("megafs.cli.account", "end an account's session and remove its file"),
    "signup": ("megafs.cli.account", "create a MEGA account; --confirm LINK finishes it"),
    "mount": ("megafs.cli.mount", "mount the MEGA Cloud Drive on a directory"),
    "umount": ("megafs.cli.mount", "wait for pending uploads, then unmount"),
    "status": ("megafs.cli.mount", "show pending, uploading and failed files of a mount"),
    "retry": ("megafs.cli.mount", "retry failed uploads of a mount now"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megafs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version="megafs " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("-v", "--verbose", action="count", default=0,
                         help="more log output (repeat for debug)")
        getattr(module, "add_arguments")(cmd, name)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except MegafsError as exc:
        print("megafs %s: %s" % (args.command, describe(exc)), file=sys.stderr)
        return 1
