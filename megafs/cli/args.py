"""Argument helpers the ``megafs`` commands share: the API source (``--api`` or ``--local``),
``--state-dir`` and a bounded count (``--uploads``, ``--connections``)."""
from __future__ import annotations

import argparse

API_HELP = "MEGA API base URL (default: $MEGAFS_API or https://g.api.mega.co.nz/)"


def count_arg(text: str) -> int:
    """An ``argparse`` type: a whole number from 1 to 64 (``ArgumentTypeError`` otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def seconds_arg(text: str) -> float:
    """An ``argparse`` type: a finite number of seconds above 0 (``ArgumentTypeError``)."""
    from ..fuse.options import parse_seconds
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_arg(text: str) -> int:
    """An ``argparse`` type: a TCP port 1-65535 (``ArgumentTypeError`` otherwise)."""
    from ..fuse.options import parse_port
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_source(parser: argparse.ArgumentParser, *, local_help: str, state_help: str,
               api_help: str = API_HELP) -> None:
    """``--api URL`` or ``--local`` (one of them), and ``--state-dir DIR``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--api", metavar="URL", default=None, help=api_help)
    source.add_argument("--local", action="store_true", default=None, help=local_help)
    parser.add_argument("--state-dir", metavar="DIR", default=None, help=state_help)
