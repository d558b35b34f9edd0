"""``megafs serve``: run the local MEGA-compatible API server until SIGINT/SIGTERM.

Parses the options, opens the data directory, binds the socket, prints the API base URL as
the first stdout line (flushed, so a parent process can wait for it), serves until a signal
arrives, then stops cleanly with exit status 0.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import select
import signal
import sys
import threading
from pathlib import Path

from .app import DEFAULT_EASINESS, DEFAULT_QUOTA, DEFAULT_WAIT_TIMEOUT, App, Config
from .faults import FaultRuleError, parse_cli_rule

log = logging.getLogger(__name__)

DEFAULT_PORT = 8733
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "share")
    return Path(base) / "megafs-server"


def parse_size(text: str) -> int:
    """Bytes from "1000", "512M", "20G", "20GiB" (binary multiples)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError("not a size: %r (e.g. 1000000, 512M, 20G)" % text)
    power = " kmgt".index((match.group(2) or " ").lower())
    return int(match.group(1)) * 1024 ** power


def fault_arg(text: str) -> list[dict]:
    try:
        return parse_cli_rule(text)
    except FaultRuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def easiness_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError("easiness is an integer 0-255")
    return value


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else is reachable "
                             "from other machines and has no authentication)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="TCP port (default %d; 0 picks a free one)" % DEFAULT_PORT)
    parser.add_argument("--data", type=Path, default=None,
                        help="state directory (default $XDG_DATA_HOME/megafs-server, i.e. "
                             "~/.local/share/megafs-server)")
    parser.add_argument("--quota", type=parse_size, default=DEFAULT_QUOTA,
                        help="storage quota per account in bytes; K/M/G/T suffixes allowed "
                             "(default 20G)")
    parser.add_argument("--fault", type=fault_arg, action="append", default=[],
                        metavar="JSON",
                        help="fault-injection rule (JSON object or array); repeatable; see "
                             "the README's fault-injection section")
    parser.add_argument("--hashcash-easiness", type=easiness_arg, default=DEFAULT_EASINESS,
                        metavar="E",
                        help="easiness 0-255 of X-Hashcash challenges from rules that give "
                             "none (default %d: a few tries to solve)" % DEFAULT_EASINESS)
    parser.add_argument("--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT,
                        metavar="SECONDS",
                        help="how long the sc wait URL blocks without news (default %g)"
                             % DEFAULT_WAIT_TIMEOUT)


def _url_host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return "[%s]" % host if address.version == 6 else host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from .http import MegaHTTPServer   # after argument parsing: keeps --help fast

    data_dir = args.data or default_data_dir()
    if args.wait_timeout <= 0:
        print("megafs serve: --wait-timeout must be positive", file=sys.stderr)
        return 2
    rules = [rule for group in args.fault for rule in group]
    app = App(Config(data_dir=Path(data_dir), host=args.host, port=args.port, quota=args.quota,
                     hashcash_easiness=args.hashcash_easiness,
                     wait_timeout=args.wait_timeout, faults=rules))
    try:
        server = MegaHTTPServer(args.host, args.port, app)
    except OSError as exc:
        app.close()
        print("megafs serve: cannot listen on %s:%d: %s" % (args.host, args.port, exc.strerror),
              file=sys.stderr)
        return 1
    port = server.server_address[1]
    app.base_url = "http://%s:%d/" % (_url_host(args.host), port)
    if not _is_loopback(args.host):
        log.warning("listening on %s: the server has no authentication and anyone who can "
                    "reach this address can use it", args.host)
    # Signal-safe shutdown: the handler only flips a flag (re-entrant: a second signal
    # arriving inside the first handler is harmless), and the C-level wakeup fd wakes the main
    # loop's select() at once.  Calling threading.Event.set() from the handler deadlocked the
    # server when two SIGTERMs came close together: the second handler ran inside the first
    # one's set(), which held the event's non-reentrant lock.
    stopping: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="megafs-serve", daemon=True)
    thread.start()
    print(app.base_url, flush=True)
    log.info("serving the MEGA API at %s (data in %s, quota %d bytes%s)", app.base_url,
             data_dir, args.quota, ", %d fault rule(s)" % len(rules) if rules else "")
    try:
        while not stopping:
            try:
                select.select([wake_r], [], [], 0.5)
                os.read(wake_r, 512)
            except (BlockingIOError, InterruptedError):
                pass
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_r)
        os.close(wake_w)
    log.info("stopping")
    app.stop()
    server.shutdown()
    server.server_close()
    thread.join(5)
    app.close()
    return 0
