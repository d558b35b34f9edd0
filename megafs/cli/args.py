"""Argument helpers the ``megafs`` commands share: the API source (``--api`` or ``--local``),
``--state-dir``, ``argparse`` types made from the mount option table's parsers (so a flag and
its ``-o`` twin refuse a bad value in the same words) and the flags of that table."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from ..mount.options import MountOption, parse_count, parse_port, parse_seconds

API_HELP = "MEGA API base URL (default: $MEGAFS_API or https://g.api.mega.co.nz/)"


def arg_type(parse: Callable[[str | bool], Any], name: str = "") -> Callable[[str], Any]:
    """An ``argparse`` type from a mount option parser: its ValueError becomes
    ``ArgumentTypeError`` with the same words (argparse prints it after the flag's name)."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = name or getattr(parse, "__name__", "value")
    return convert


count_arg = arg_type(parse_count(1, 64), "count")       # 1-64, e.g. --connections
seconds_arg = arg_type(parse_seconds, "seconds")        # above 0, at most a year
port_arg = arg_type(parse_port, "port")                 # 1-65535


def add_option_flag(parser: Any, opt: MountOption) -> None:
    """``opt``'s flag(s) on ``parser`` (or a group of it).  The default is None, so that
    ``-o`` can still set it and ``cli/mount.apply_options`` fills in the table's default."""
    kwargs: dict[str, Any] = {"dest": opt.name, "default": None, "help": opt.help_text()}
    if not opt.metavar:
        kwargs["action"] = "store_true"
    else:
        kwargs["type"] = arg_type(opt.parse, opt.name)
        if opt.choices:
            kwargs["choices"] = opt.choices
        else:
            kwargs["metavar"] = opt.metavar
    parser.add_argument(*opt.flag_names, **kwargs)


def add_source(parser: argparse.ArgumentParser, *, local_help: str, state_help: str,
               api_help: str = API_HELP) -> None:
    """``--api URL`` or ``--local`` (one of them), and ``--state-dir DIR``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--api", metavar="URL", default=None, help=api_help)
    source.add_argument("--local", action="store_true", default=None, help=local_help)
    parser.add_argument("--state-dir", metavar="DIR", default=None, help=state_help)
