"""The ``megafs upload`` and ``megafs get`` commands (``megafs session`` is in ``cli/account``).

Thin wrappers over ``MegaClient``: argument parsing, file names, the stderr progress bar (only
when stderr is a terminal, ``cli/progress.py``) and one-line error reporting.  Before any
request the API host must accept a connection within seconds (``mount/preflight.check_api``),
so a wrong ``--api`` or a forgotten ``--local`` is one line at once, not minutes of retries.
``get`` never replaces an existing file unless ``--force`` says so, never takes a remote name
starting with ``.`` or holding control characters as a local one without ``--force``, leaves no
unverified bytes when SIGTERM/SIGHUP/SIGINT stop it (``api.partfile``), and accepts the links a
``--local`` mount prints (``http://127.0.0.1:PORT/file/H#K``: that server is then the API).
A folder link goes to ``cli/getfolder.py`` (the whole tree, resumable).
Uploaded files carry MEGA's ``c`` fingerprint attribute next to their name and mtime, as the
official clients' uploads do.  Links
go to stdout, one per uploaded file in argument order; everything else goes to stderr.  Never
prints a session id or key.  ``--account EMAIL`` uses that logged-in account (``megafs login``)
instead of the anonymous one; a session the server ended is renewed by asking for the password
on a terminal (or from ``$MEGAFS_PASSWORD``), else the command stops with a line saying so.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import Any

from ..api import fingerprint, folderlink, links
from ..api.client import MegaClient, PutItem
from ..config import default_state_dir, printable
from ..errors import ApiCode, MegaError, MegafsError, UploadFailed, describe
from . import getfolder
from .args import add_source, count_arg
from .getcommon import check_remote_name as _check_remote_name
from .getcommon import quota_line as _quota_line
from .getcommon import signals_stop as _signals_stop
from .progress import Transfer

log = logging.getLogger(__name__)


LOCAL_HELP = "use the local server that `megafs mount --local` runs for the state dir"
LOCAL_PORT_FILE = "local-server.port"   # written by `megafs mount --local` in the state dir


def local_api(state_dir: str | None) -> str:
    """The API URL of the bundled server that a ``mount --local`` runs for ``state_dir``."""
    state = state_dir or default_state_dir()
    try:
        with open(os.path.join(state, LOCAL_PORT_FILE)) as fh:
            port = int(fh.read().strip())
    except (OSError, ValueError):
        raise MegafsError("no local server has run for state dir %s; start one with "
                          "`megafs mount MNT --local`" % state) from None
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        raise MegafsError("the local server of state dir %s (port %d) is not running; mount "
                          "with `megafs mount MNT --local` first" % (state, port)) from None
    return "http://127.0.0.1:%d/" % port


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    add_source(parser, local_help=LOCAL_HELP,
               state_help="where sessions and the --local server live "
                          "(default: $XDG_DATA_HOME/megafs)")
    parser.add_argument("--account", metavar="EMAIL", default=None,
                        help="use this logged-in account (`megafs login EMAIL`) instead of the "
                             "anonymous one")
    if name != "get":
        parser.add_argument("--session", metavar="FILE", default=None,
                            help="use this session file instead of the state dir's")
    if name in ("upload", "get"):
        parser.add_argument("--connections", metavar="N", type=count_arg, default=4,
                            help="parallel transfer connections per file (default 4)%s"
                                 % ("; a folder link fetches up to 4 files at once, at most N"
                                    if name == "get" else ""))
    if name == "upload":
        parser.add_argument("files", nargs="+", metavar="FILE", help="files to upload")
    elif name == "get":
        parser.add_argument("link", metavar="LINK",
                            help="a file link https://mega.nz/file/HANDLE#KEY, or a folder "
                                 "link https://mega.nz/folder/HANDLE#KEY (the whole tree; "
                                 "with /file/H or /folder/H after the key, one item of it)")
        parser.add_argument("-o", "--output", metavar="PATH", default=None,
                            help="file or directory to write (default: the file's name in the "
                                 "current directory); for a folder link, the folder its "
                                 "contents go into (made if missing; default: the folder's "
                                 "name in the current directory)")
        parser.add_argument("--force", action="store_true",
                            help="replace the output file if it exists (for a folder link: "
                                 "files there that differ from the folder's), and take the "
                                 "file's own name even if it starts with '.' or holds control "
                                 "characters")
        parser.add_argument("--no-wait-quota", action="store_true",
                            help="past MEGA's transfer quota, fail at once (exit 1) instead of "
                                 "waiting the time MEGA gives and going on")


def run(args: argparse.Namespace) -> int:
    from ..config import resolve_api, state_dir_ready
    from ..mount.preflight import check_api

    commands = {"upload": run_upload, "get": run_get}
    if args.command != "get" or args.account:     # a plain get needs no state dir
        state_dir_ready(os.path.abspath(args.state_dir or default_state_dir()))
    args.site = None
    if args.local:
        args.api = local_api(args.state_dir)
        args.site = args.api           # links of the local server open in a browser there
    session = getattr(args, "session", None)
    if session and not os.path.exists(session):
        raise MegafsError("session file %s does not exist (a typo?); give an existing file, or "
                          "`megafs session --new --session %s` to start a new account there"
                          % (session, session))
    if session:
        from ..api.session import read_session_file
        # a session of another API, or a corrupt one, is the error to report, not the API
        read_session_file(session, resolve_api(args.api) if args.api else None)
    if args.command == "get":
        args.parsed = folderlink.parse_folder_link(args.link) \
            if folderlink.is_folder_link(args.link) else links.parse_link(args.link)
        if args.parsed.api and args.api is None:
            args.api = args.parsed.api       # a --local mount's link names its server
    if args.api is not None or not session:
        check_api(resolve_api(args.api))
    try:
        return commands[args.command](args)
    except OSError as exc:  # a local file or directory problem: one line, no traceback
        where = exc.filename if exc.filename else ""
        print("megafs %s: %s" % (args.command, printable("%s%s" % (
            where + ": " if where else "", exc.strerror or exc))), file=sys.stderr)
        return 1


def _display_name(path: str) -> str:
    """The node name for a local path: its last component as valid UTF-8."""
    name = os.path.basename(os.path.normpath(path))
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {"api": args.api, "state_dir": getattr(args, "state_dir", None),
               "session_file": getattr(args, "session", None)}
    if getattr(args, "account", None):
        from .credentials import terminal_reauth
        options.update(account=args.account, reauth=terminal_reauth())
    return options


def run_upload(args: argparse.Namespace) -> int:
    failures = 0
    with MegaClient.open(connections=args.connections, **_client_options(args)) as client:
        root = client.fetch().roots().get(2)
        if root is None:
            raise MegafsError("the account has no Cloud Drive root")
        for path in args.files:
            try:
                print(upload_one(client, root, path, args.site), flush=True)
            except (MegafsError, OSError) as exc:
                failures += 1
                reason = describe(exc) if isinstance(exc, MegafsError) else \
                    (exc.strerror or str(exc))
                print("megafs upload: %s: %s" % (printable(path), printable(reason)),
                      file=sys.stderr, flush=True)
    return 1 if failures else 0


def upload_one(client: MegaClient, parent: str, path: str, site: str | None = None) -> str:
    """Upload one file into ``parent`` and return its public link (on ``site``: a local
    server's base URL, else mega.nz)."""
    st = os.stat(path)
    if not os.path.isfile(path):
        raise UploadFailed("not a regular file")
    bar = Transfer(_display_name(path), st.st_size)
    try:
        uploaded = client.upload(path, progress=bar)
    finally:
        bar.finish()
    # ``c`` lets MEGA's own apps recognise the file (sync, skipped re-uploads), as their own
    # uploads carry it; ``t`` stays for clients that read only that.
    attrs = {"n": _display_name(path), "t": int(st.st_mtime),
             "c": fingerprint.fingerprint(path, uploaded.size, st.st_mtime)}
    node = client.put_files([PutItem(parent, uploaded, attrs)])[0]
    if isinstance(node, Exception):
        raise node
    ph = client.export([node["h"]])[0]
    if isinstance(ph, Exception):
        raise ph
    link = client.link_for(node, ph)
    if site:
        link = links.format_link(ph, links.parse_link(link).key, site=site)
    return link


def _safe_name(name: Any, fallback: str) -> str:
    """A file name from remote attributes that cannot escape the target directory."""
    if not isinstance(name, str):
        return fallback
    name = name.replace("/", "_").replace("\0", "_").strip()
    if name in ("", ".", ".."):
        return fallback
    return name[:255]


def _get_client(args: argparse.Namespace) -> MegaClient:
    """A public client, or with ``--account`` that account's (its transfer quota counts)."""
    if args.account:
        return MegaClient.open(connections=args.connections, **_client_options(args))
    return MegaClient.public(api=args.api, connections=args.connections)


def _destination(output: str | None, name: str, force: bool) -> str:
    """Where ``get`` writes: ``output`` (a file, or a folder to put ``name`` in), else ``name``
    here.  MegafsError if its folder is missing or the file exists (without ``force``)."""
    dest = output or name
    if output and (output.endswith(os.sep) or os.path.isdir(output)):
        if not os.path.isdir(output):
            raise MegafsError("folder %s does not exist; create it first (`mkdir -p %s`)"
                              % (output, output))
        dest = os.path.join(output, name)
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise MegafsError("folder %s does not exist; create it first (`mkdir -p %s`) or give "
                          "another -o" % (folder, folder))
    if os.path.lexists(dest) and not force:
        raise MegafsError("%s exists; add --force to replace it, or give another -o"
                          % printable(dest))
    return dest


def run_get(args: argparse.Namespace) -> int:
    link = args.parsed
    if isinstance(link, folderlink.FolderLink):
        return getfolder.run_folder_get(args)       # the whole tree, or one item of it
    with _get_client(args) as client:
        # Past the transfer quota: one line, and the download goes on once MEGA allows it
        # (api/xferquota.py); with --no-wait-quota the refusal is the error.
        client.transfer_quota.waiting = not args.no_wait_quota
        client.transfer_quota.on_wait = _quota_line
        try:
            info = client.download_info(link)
        except MegaError as exc:
            if exc.code == ApiCode.ENOENT:
                raise MegaError(ApiCode.ENOENT, "no file behind this link: deleted, or a wrong "
                                "handle") from None
            raise
        name = _safe_name(info.attrs.get("n"), link.handle)
        if not args.output or args.output.endswith(os.sep) or os.path.isdir(args.output):
            _check_remote_name(name, args.force)     # the remote name becomes a local one
        dest = _destination(args.output, name, args.force)
        bar = Transfer(name, info.size)
        try:
            with _signals_stop():
                written = client.download(link, dest, progress=bar, info=info)
        finally:
            bar.finish()
        log.info("wrote %s (%d bytes)", written, info.size)
    return 0
