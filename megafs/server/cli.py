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
from typing import Any

from .app import App
from .datadir import TOKEN_HEADER, TOKEN_NAME, prepare

from .config import (DEFAULT_COMPLETION_TTL, DEFAULT_EASINESS, DEFAULT_LOGIN_ATTEMPTS,
                     DEFAULT_HEAD_TIMEOUT, DEFAULT_LOGIN_WINDOW, DEFAULT_MAX_CONNECTIONS,
                     DEFAULT_PACKET_LOG, DEFAULT_UPLOAD_MEMORY,
                     DEFAULT_QUOTA, DEFAULT_TRANSFER_WINDOW, DEFAULT_UPLOAD_IDLE,
                     DEFAULT_WAIT_TIMEOUT, DELETED_TARGET, LATE_UPLOAD_POST, MAX_SECONDS, Config,
                     Policy)
from .faults import FaultRuleError, parse_cli_rule

log = logging.getLogger(__name__)

DEFAULT_PORT = 8733
EXIT_USAGE = 2
EXIT_FAILED = 1
EASINESS_MAX = 255
SELECT_TIMEOUT = 0.5
JOIN_TIMEOUT = 5
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                           ".local", "share")
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
    if not 0 <= value <= EASINESS_MAX:
        raise argparse.ArgumentTypeError("easiness is an integer 0-255")
    return value


def port_arg(text: str) -> int:
    """A TCP port 0-65535 (0: any free port); ``serve --port 99999`` gave a traceback."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is a whole number 0-65535 (0: any free port), "
                                         "not %r" % text)
    return value


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError("a number of seconds > 0")
    return value


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("an integer >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else is reachable "
                             "from other machines and has no authentication)")
    parser.add_argument("--port", type=port_arg, default=DEFAULT_PORT,
                        help="TCP port of the API (default %d; 0 picks a free one)"
                             % DEFAULT_PORT)
    parser.add_argument("--wait-port", type=port_arg, default=0, metavar="PORT",
                        help="TCP port of the change feed's wait URLs (default 0: a free one)")
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
                        help="easiness 0-255 of the proof of work demanded on `up` (new "
                             "account) and `us` (login); lower is harder, 100 is the real "
                             "service's; 0 = none (default %d, as in the MEGA SDK's tests)"
                             % DEFAULT_EASINESS)
    parser.add_argument("--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT,
                        metavar="SECONDS",
                        help="how long the sc wait URL blocks without news (default %g)"
                             % DEFAULT_WAIT_TIMEOUT)
    parser.add_argument("--tls", action="store_true",
                        help="serve https transfer URLs to `u`/`g` with `ssl` (own port); a "
                             "CA and certificate are made in DATA/tls on first run")
    parser.add_argument("--tls-port", type=port_arg, default=0, metavar="PORT",
                        help="TCP port of the https transfers (default 0: a free one)")
    parser.add_argument("--tls-api", action="store_true",
                        help="serve the API (and wait URLs) over https too; implies --tls")
    parser.add_argument("--tls-name", action="append", default=[], metavar="NAME",
                        help="also name NAME (host name or address) in the server certificate, "
                             "e.g. g.api.mega.co.nz for a client reaching this server through a "
                             "proxy, also a host name the server answers to (any other name in "
                             "a request's Host header gets HTTP 421); repeatable")
    parser.add_argument("--proxy-port", type=port_arg, default=None, metavar="PORT",
                        help="also listen on PORT (0: a free one) as an HTTP CONNECT proxy whose "
                             "every tunnel goes to this API, for clients that only talk to "
                             "g.api.mega.co.nz (with --tls-api and --tls-name); off by default")
    parser.add_argument("--advertise", action="append", default=[], metavar="ROLE=URL",
                        help="hand out URL (scheme://host:port/) instead of the listener's own "
                             "address in the URLs of ROLE: wait (sc wait URLs) or transfers "
                             "(https transfer URLs); for a forwarding proxy in front of them, "
                             "as scripts/bench --wan puts; repeatable")
    parser.add_argument("--transfer-quota", type=parse_size, default=0, metavar="BYTES",
                        help="download bytes per client address and window; past it HTTP 509 "
                             "+ X-MEGA-Time-Left (default 0: unlimited)")
    parser.add_argument("--transfer-window", type=seconds_arg,
                        default=DEFAULT_TRANSFER_WINDOW, metavar="SECONDS",
                        help="window of the transfer quota (default %g)"
                             % DEFAULT_TRANSFER_WINDOW)
    parser.add_argument("--packet-log", type=count_arg, default=DEFAULT_PACKET_LOG,
                        metavar="N",
                        help="action packets kept per account; an older sn answers -6 "
                             "(default %d)" % DEFAULT_PACKET_LOG)
    parser.add_argument("--snapshot-over", type=count_arg, default=0, metavar="N",
                        help="`f` of an account of more than N nodes answers the tree kept from "
                             "an earlier `f` and its sn, as the real service does for big "
                             "accounts: clients catch up with sc (default 0: always the "
                             "current tree)")
    parser.add_argument("--upload-idle", type=seconds_arg, default=DEFAULT_UPLOAD_IDLE,
                        metavar="SECONDS",
                        help="an upload URL without data this long expires and its bytes are "
                             "deleted (default %g)" % DEFAULT_UPLOAD_IDLE)
    parser.add_argument("--completion-ttl", type=seconds_arg, default=DEFAULT_COMPLETION_TTL,
                        metavar="SECONDS",
                        help="an upload's completion token not used by `p` this long is "
                             "dropped with its bytes (default %g)" % DEFAULT_COMPLETION_TTL)
    parser.add_argument("--deleted-target", choices=DELETED_TARGET, default="rubbish",
                        help="`p` into a deleted folder: put the node in the Rubbish Bin (the "
                             "real service; default) or answer -9 (older megafs servers)")
    parser.add_argument("--no-temp-links", action="store_true",
                        help="refuse `l` (export a link) from temporary accounts with -11")
    parser.add_argument("--api-lock", action=argparse.BooleanOptionalAction, default=True,
                        help="answer -3 (API lock) to a second overlapping /cs request of one "
                             "session that is not only `g`, as the real service does (default: "
                             "on)")
    parser.add_argument("--late-upload-post", choices=LATE_UPLOAD_POST, default="error",
                        help="a POST to an upload URL that has completed: answer -4 (default) "
                             "or the completion token again")
    parser.add_argument("--login-attempts", type=count_arg, default=DEFAULT_LOGIN_ATTEMPTS,
                        metavar="N",
                        help="wrong passwords or 2FA codes per email within --login-window "
                             "before logins answer -6 (default %d; 0: no lockout)"
                             % DEFAULT_LOGIN_ATTEMPTS)
    parser.add_argument("--login-window", type=seconds_arg, default=DEFAULT_LOGIN_WINDOW,
                        metavar="SECONDS",
                        help="how long failed logins count (default %g)" % DEFAULT_LOGIN_WINDOW)
    parser.add_argument("--max-connections", type=count_arg, default=DEFAULT_MAX_CONNECTIONS,
                        metavar="N",
                        help="open connections per listener; more get HTTP 503 (default %d)"
                             % DEFAULT_MAX_CONNECTIONS)
    parser.add_argument("--head-timeout", type=seconds_arg, default=DEFAULT_HEAD_TIMEOUT,
                        metavar="SECONDS",
                        help="time for a request line and headers after their first byte; "
                             "slower clients are cut off (default %g)" % DEFAULT_HEAD_TIMEOUT)
    parser.add_argument("--upload-memory", type=parse_size, default=DEFAULT_UPLOAD_MEMORY,
                        metavar="BYTES",
                        help="upload POST bodies held in memory at once; more wait (default "
                             "512M)")


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


def build_config(args: argparse.Namespace) -> Config:
    policy = Policy(hashcash_easiness=args.hashcash_easiness, deleted_target=args.deleted_target,
                    temp_account_links=not args.no_temp_links,
                    late_upload_post=args.late_upload_post,
                    transfer_quota=args.transfer_quota, transfer_window=args.transfer_window,
                    packet_log=args.packet_log, snapshot_over=args.snapshot_over,
                    upload_idle=args.upload_idle,
                    completion_ttl=args.completion_ttl, login_attempts=args.login_attempts,
                    login_window=args.login_window, api_lock=args.api_lock)
    return Config(data_dir=Path(args.data or default_data_dir()), host=args.host,
                  port=args.port, wait_port=args.wait_port, tls=args.tls or args.tls_api,
                  tls_api=args.tls_api, tls_port=args.tls_port, quota=args.quota,
                  wait_timeout=args.wait_timeout,
                  faults=[rule for group in args.fault for rule in group], policy=policy,
                  names=tuple(args.tls_name), max_connections=max(1, args.max_connections),
                  head_timeout=args.head_timeout, upload_memory=args.upload_memory)


def run(args: argparse.Namespace) -> int:
    from .web.connect import ConnectProxy
    from .web.listeners import Listener   # after argument parsing: keeps --help fast
    from .tls import TlsError, ensure_certificates

    if args.wait_timeout <= 0:
        print("megafs serve: --wait-timeout must be positive", file=sys.stderr)
        return EXIT_USAGE
    config = build_config(args)
    advertised = {}
    for item in args.advertise:
        role, _, url = item.partition("=")
        if role not in ("wait", "transfers") or not url.startswith(("http://", "https://")):
            print("megafs serve: --advertise wants wait=URL or transfers=URL with an http(s) "
                  "URL, not %r" % item, file=sys.stderr)
            return EXIT_USAGE
        advertised[role] = url.rstrip("/") + "/"
    try:
        prepare(config.data_dir)          # before tls/: every folder made 0700
    except OSError as exc:
        print("megafs serve: cannot use the data directory %s: %s"
              % (config.data_dir, exc.strerror or exc), file=sys.stderr)
        return EXIT_FAILED
    tls = None
    if config.tls:
        try:
            tls = ensure_certificates(config.data_dir, args.host, tuple(args.tls_name))
        except TlsError as exc:
            print("megafs serve: %s" % exc, file=sys.stderr)
            return EXIT_FAILED
    if args.proxy_port is not None and not config.tls_api:
        print("megafs serve: --proxy-port needs --tls-api (clients that use it speak https)",
              file=sys.stderr)
        return EXIT_USAGE
    app = App(config)
    listeners: list[Any] = []
    context = tls.context() if tls is not None else None
    try:
        api = Listener(args.host, args.port, app, "api", context if config.tls_api else None)
        listeners.append(api)
        listeners.append(Listener(args.host, args.wait_port, app, "wait",
                                  context if config.tls_api else None))
        if tls is not None:
            listeners.append(Listener(args.host, args.tls_port, app, "transfers", context,
                                      buffers=api.buffers))
        if args.proxy_port is not None:
            listeners.append(ConnectProxy(args.host, args.proxy_port,
                                          (args.host, api.server_address[1])))
    except OSError as exc:
        for listener in listeners:
            listener.server_close()
        app.close()
        print("megafs serve: cannot listen on %s: %s" % (args.host, exc.strerror),
              file=sys.stderr)
        return EXIT_FAILED
    host = _url_host(args.host)
    bases = ["%s://%s:%d/" % (lsn.scheme, host, lsn.server_address[1]) for lsn in listeners]
    app.urls.api, app.urls.wait = bases[0], bases[1]
    if tls is not None:
        app.urls.secure_transfers, app.urls.ca_file = bases[2], str(tls.ca)
    if args.proxy_port is not None:
        app.urls.proxy = bases[-1]
    for role, url in advertised.items():
        setattr(app.urls, "wait" if role == "wait" else "secure_transfers", url)
    if not _is_loopback(args.host):
        log.warning("listening on %s: the server has no authentication and anyone who can "
                    "reach this address can use it", args.host)
    return _serve(app, listeners)


def _serve(app: App, listeners: list) -> int:
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
    threads = [threading.Thread(target=lsn.serve_forever, kwargs={"poll_interval": 0.2},
                                name="megafs-serve-" + lsn.role, daemon=True)
               for lsn in listeners]
    for thread in threads:
        thread.start()
    app.start()
    print(app.urls.api, flush=True)
    policy = app.policy
    log.info("serving the MEGA API at %s, wait URLs at %s (data in %s, quota %d bytes, "
             "hashcash easiness %d%s)", app.urls.api, app.urls.wait, app.config.data_dir,
             app.config.quota, policy.hashcash_easiness,
             ", %d fault rule(s)" % len(app.config.faults) if app.config.faults else "")
    print("megafs serve: control endpoints (%s_megafs/...) take the header %s with the "
          "token in %s" % (app.urls.api, TOKEN_HEADER, app.config.data_dir / TOKEN_NAME),
          file=sys.stderr, flush=True)
    if app.urls.ca_file:
        print("megafs serve: https transfers at %s; trust the CA %s (e.g. "
              "REQUESTS_CA_BUNDLE=%s)" % (app.urls.secure_transfers, app.urls.ca_file,
                                          app.urls.ca_file), file=sys.stderr, flush=True)
        log.info("https transfers at %s, CA certificate %s", app.urls.secure_transfers,
                 app.urls.ca_file)
    if app.urls.proxy:
        print("megafs serve: CONNECT proxy to this API at %s (HTTPS_PROXY=%s)"
              % (app.urls.proxy, app.urls.proxy.rstrip("/")), file=sys.stderr, flush=True)
    try:
        while not stopping:
            try:
                select.select([wake_r], [], [], SELECT_TIMEOUT)
                os.read(wake_r, 512)
            except (BlockingIOError, InterruptedError):
                pass
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_r)
        os.close(wake_w)
    log.info("stopping")
    app.stop()
    # shutdown() waits up to a poll interval for its loop: all at once, not one after another
    # (a test server took 0.6 s to stop, 136 of them per suite run)
    stoppers = [threading.Thread(target=lsn.shutdown, name="megafs-serve-stop")
                for lsn in listeners]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()
    for lsn in listeners:
        lsn.server_close()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    app.close()
    return 0
