"""``megafs login / logout / signup / session``: using one's own MEGA account from the command
line.  Thin wrappers over ``api.account`` (the protocol) and ``api.session`` (the files).

Passwords come from ``--password-file FILE`` (its first line), ``$MEGAFS_PASSWORD`` or a prompt
on a terminal, never from the command line (other users can read a process's arguments).  A
two-factor code comes from ``--mfa-code`` or a prompt.  ``terminal_reauth`` is the hook the
other commands hand to the client so that a session the server has ended is renewed by asking
for the password again, on a terminal or from ``$MEGAFS_PASSWORD``; otherwise the command
stops with the line saying to run ``megafs login``.  Nothing here prints a password, key or
session id, except ``megafs session --show``, which prints the session on purpose (with a
warning).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from typing import Callable, Iterator

from ..api import account
from ..api.session import (Session, SessionError, account_session_path,
                           account_sessions, archive_session_file, open_session,
                           read_session_file, remove_session_file, session_path,
                           write_session_file)
from ..api.transport import Transport
from .. import config
from ..config import default_state_dir, is_loopback
from ..errors import FsError, MegafsError, TransportError
from .args import add_source
from .credentials import ENV_PASSWORD, mfa_source, read_password
from .transfer import LOCAL_HELP, local_api

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    add_source(parser, local_help=LOCAL_HELP,
               state_help="where sessions live (default: $XDG_DATA_HOME/megafs)")
    if name in ("login", "signup"):
        # Defined so that `--password SECRET` is refused, not taken as --password-file.
        parser.add_argument("--password", action=_RefusePassword, help=argparse.SUPPRESS)
        parser.add_argument("--password-file", metavar="FILE", default=None,
                            help="read the password from the first line of FILE (else "
                                 "$%s, else a prompt on a terminal)" % ENV_PASSWORD)
        parser.add_argument("--mfa-code", metavar="CODE", default=None,
                            help="the current 6-digit two-factor code, if the account uses "
                                 "two-factor authentication (else asked on a terminal)")
    if name == "login":
        parser.add_argument("email", metavar="EMAIL")
    elif name == "logout":
        parser.add_argument("email", metavar="EMAIL")
        parser.add_argument("--forget", action="store_true",
                            help="remove the session file even if the server cannot be told")
    elif name == "signup":
        parser.add_argument("email", metavar="EMAIL", nargs="?",
                            help="start a registration for this address")
        parser.add_argument("--name", default=None, help="the account's display name")
        parser.add_argument("--from-anonymous", action="store_true",
                            help="turn this API's anonymous account (and its files and links) "
                                 "into the new account instead of a fresh temporary one")
        parser.add_argument("--confirm", metavar="LINK", default=None,
                            help="finish a registration with the link of its confirmation "
                                 "mail, then log in")
    elif name == "session":
        parser.add_argument("--show", action="store_true",
                            help="print the session JSON of this API's anonymous account "
                                 "(created if needed) or of --account: a secret")
        parser.add_argument("--account", metavar="EMAIL", default=None,
                            help="with --show: that logged-in account's session")
        parser.add_argument("--new", action="store_true",
                            help="start a new anonymous account and print its session; the "
                                 "old session file is kept, renamed with a timestamp")
        parser.add_argument("--session", metavar="FILE", default=None,
                            help="with --show: this session file instead of the state dir's")


class _RefusePassword(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error("a password is never taken on the command line (other users can read "
                     "it): use --password-file FILE, $%s or the prompt" % ENV_PASSWORD)


def run(args: argparse.Namespace) -> int:
    runner: dict[str, Callable[[argparse.Namespace], int]] = {
        "login": run_login, "logout": run_logout, "signup": run_signup, "session": run_session}
    if not args.local:
        return runner[args.command](args)
    with _local_server(args.state_dir) as api:
        args.api = api
        return runner[args.command](args)


def _speaks_http(api: str) -> str:
    """``api`` if it answers HTTP within seconds, else MegafsError naming it: the kept port of
    ``--local`` may now belong to another program that accepts connections and never replies
    (``login --local`` hung there)."""
    from ..mount.preflight import check_api_speaks_http
    check_api_speaks_http(api)
    return api


@contextlib.contextmanager
def _local_server(state_dir: str | None) -> Iterator[str]:
    """The API URL of the state dir's bundled server (``--local``): the one a running
    ``mount --local`` runs, else one started for this command and stopped after it (issue
    24: ``login --local`` needed a running mount).  FsError if it cannot start."""
    from ..mount.localserver import LocalServer

    try:
        running = local_api(state_dir)
    except MegafsError:
        running = None              # no server running: start one for this command
    if running is not None:
        yield _speaks_http(running)
        return
    state = config.state_dir_ready(os.path.abspath(os.path.expanduser(
        state_dir or default_state_dir())))
    server = LocalServer(state, owner="megafs (pid %d, for one command)" % os.getpid())
    try:
        url = server.start()
        log.info("started the local server of %s for this command (%s)", state, url)
        yield url
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
def _save(session: Session, state_dir: str | None) -> str:
    assert session.email is not None
    path = account_session_path(session.api, session.email, state_dir)
    write_session_file(session, path)
    return path


def run_login(args: argparse.Namespace) -> int:
    password = read_password(args.email, args.password_file)
    with _transport(args) as transport:
        session = account.login(transport, args.email, password, mfa=mfa_source(args.mfa_code))
    path = _save(session, args.state_dir)
    print("megafs login: logged in as %s (user %s) on %s; session in %s"
          % (session.email, session.user_handle, session.api, path), file=sys.stderr)
    return 0


def run_logout(args: argparse.Namespace) -> int:
    _refuse_mounted(args)
    with _transport(args) as transport:
        path = account_session_path(transport.api, args.email, args.state_dir)
        try:
            session = read_session_file(path, transport.api)
        except FileNotFoundError:
            raise SessionError("%s is not logged in on %s" % (args.email, transport.api)) \
                from None
        try:
            ended = account.logout(transport, session)
        except TransportError as exc:
            if not args.forget:
                raise MegafsError("%s; the session file %s is kept (rerun later, or add "
                                  "--forget to remove it anyway)" % (exc, path)) from None
            ended = False
    remove_session_file(path)
    print("megafs logout: %s %s; removed %s"
          % (session.email, "logged out" if ended else "was no longer logged in", path),
          file=sys.stderr)
    return 0


def _refuse_mounted(args: argparse.Namespace) -> None:
    """``logout`` of an account a running mount uses would stop its uploads silently (issue
    24): FsError(EBUSY) naming the mount (from the state dir's mount registry)."""
    from ..mount.registry import live_entries

    state = os.path.abspath(os.path.expanduser(args.state_dir or default_state_dir()))
    api = config.normalise_api(args.api) if args.api else config.resolve_api(None)
    email = args.email.strip().lower()
    for entry in live_entries(state):
        if (entry.get("account") or "").strip().lower() == email and \
                config.normalise_api(entry.get("api") or api) == api:
            raise FsError(errno.EBUSY, "%s is in use by the mount at %s (pid %s): `megafs "
                          "umount %s` first, then log out" % (
                              args.email, entry.get("mountpoint"), entry.get("pid"),
                              entry.get("mountpoint")))


def run_signup(args: argparse.Namespace) -> int:
    if bool(args.email) == bool(args.confirm):
        raise MegafsError("give either EMAIL (to sign up) or --confirm LINK (to finish)")
    if args.confirm:
        return _finish_signup(args)
    password = read_password(args.email, args.password_file, twice=True)
    with _transport(args) as transport:
        temporary = None
        if args.from_anonymous:
            temporary = open_session(transport, state_dir=args.state_dir, create=False)
        base = account.signup(transport, args.email, password, args.name or "", temporary)
    where = " (the local server keeps it: GET %s_megafs/mail with the header X-Megafs-Token " \
        "holding its data dir's control-token)" % base.api \
        if _is_loopback_api(base.api) else ""
    print("megafs signup: a confirmation link was sent to %s%s; finish with `megafs signup "
          "--confirm LINK`" % (args.email, where), file=sys.stderr)
    return 0


def _finish_signup(args: argparse.Namespace) -> int:
    with _transport(args) as transport:
        confirmed = account.confirm(transport, args.confirm)
        print("megafs signup: %s confirmed; logging in" % confirmed.email, file=sys.stderr,
              flush=True)
        password = read_password(confirmed.email, args.password_file)
        session = account.login(transport, confirmed.email, password,
                                mfa=mfa_source(args.mfa_code))
    path = _save(session, args.state_dir)
    anonymous = session_path(session.api, args.state_dir)
    try:
        kept = read_session_file(anonymous, session.api).user_handle == session.user_handle
    except (FileNotFoundError, SessionError):
        kept = False
    if kept:
        old = archive_session_file(anonymous)
        print("megafs signup: the anonymous account's files now belong to %s (its old session "
              "file is kept as %s)" % (confirmed.email, old), file=sys.stderr)
    print("megafs signup: logged in as %s (user %s); session in %s"
          % (confirmed.email, session.user_handle, path), file=sys.stderr)
    return 0


def run_session(args: argparse.Namespace) -> int:
    if args.show or args.new:
        return _show_session(args)
    state = args.state_dir or default_state_dir()
    rows = []
    directory = os.path.join(state, "sessions")
    anonymous = sorted(n for n in os.listdir(directory) if len(n) == 21
                       and n.endswith(".json")) if os.path.isdir(directory) else []
    for name in anonymous:
        try:
            s = read_session_file(os.path.join(directory, name), None)
            rows.append(("anonymous", s.api, s.user_handle, s.created))
        except (SessionError, FileNotFoundError) as exc:
            rows.append(("unreadable", os.path.join(directory, name), str(exc), ""))
    for item in account_sessions(state):
        if isinstance(item, SessionError):
            rows.append(("unreadable", "", str(item), ""))
        else:
            rows.append((item.email or "", item.api, item.user_handle, item.created))
    if not rows:
        print("megafs session: no sessions in %s" % state, file=sys.stderr)
    for row in rows:
        print("\t".join(row))
    return 0


def _show_session(args: argparse.Namespace) -> int:
    from ..api.client import MegaClient

    with MegaClient.open(api=args.api, state_dir=args.state_dir, session_file=args.session,
                         new_session=args.new, account=args.account) as client:
        session = client.session
        assert session is not None
        print("megafs session: warning: this is a secret; anyone holding it controls the "
              "account and every file in it (%s)" % session.path, file=sys.stderr, flush=True)
        sys.stdout.write(session.dumps())
        sys.stdout.flush()
    return 0


class _transport:
    """``with _transport(args) as t``: a Transport for the command's API, closed after."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.transport = Transport(args.api)

    def __enter__(self) -> Transport:
        return self.transport

    def __exit__(self, *exc: object) -> None:
        self.transport.close()


def _is_loopback_api(api: str) -> bool:
    return is_loopback(api)
