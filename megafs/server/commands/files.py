"""File commands: ``u`` (an upload URL), ``g`` (file info and a download URL; also in a
folder-link session, of a file inside the exported folder) and ``l`` (public links of files, and
of folders shared with ``EXP``: ``shares.py``).

``u`` and ``g`` with ``ssl`` 1 or 2 name an https transfer URL when the server runs with
``--tls`` (the SDK sends ``ssl: 2`` when it uses https: meganz/sdk src/commands.cpp).  ``g``
over the transfer quota answers ``e: -17`` and ``tl`` instead of a URL.  ``l`` from a temporary
account answers ``-11`` when the policy ``temp_account_links`` is off (whether the real API
still allows it is unknown; issue 11).
"""
from __future__ import annotations

import sqlite3
from typing import Any

from ...errors import ApiCode
from ..db import FILE, FOLDER, now
from .base import Ctx, Fail, arg_int, arg_str, flag, not_root, origin, own_node
from .inshares import readable_node
from .shares import EXPORTED, folder_node


def cmd_u(ctx: Ctx, cmd: dict) -> Any:
    """Upload URL for ``s`` bytes; ``v`` >= 2 asks for a 36-byte binary completion token."""
    uh = ctx.user()
    size = arg_int(cmd, "s", minimum=0)
    version = cmd.get("v")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise Fail(ApiCode.EARGS, "'v' must be an integer")
    base = ctx.bases.transfer(cmd)
    used, quota = ctx.tx.used_bytes(uh), ctx.tx.quota(uh)
    if used + size > quota:
        raise Fail(ApiCode.EOVERQUOTA, "upload of %d bytes would exceed the quota" % size)
    token = ctx.tx.create_upload(uh, size, raw=bool(version and version >= 2))
    return {"p": base + "ul/" + token}


def cmd_g(ctx: Ctx, cmd: dict) -> Any:
    """File info by node handle ``n`` (own files) or public handle ``p``; ``g:1`` adds a
    download URL."""
    if "p" in cmd:
        row = ctx.tx.public_node(arg_str(cmd, "p"))
    elif "n" in cmd:
        row = readable_node(ctx, arg_str(cmd, "n"))
    else:
        raise Fail(ApiCode.EARGS, "'g' needs 'n' or 'p'")
    return file_answer(ctx, cmd, row)


def folder_g(ctx: Ctx, cmd: dict) -> Any:
    """``g`` in a folder-link session: ``n`` is a node inside the exported folder."""
    if "n" not in cmd:
        return cmd_g(ctx, cmd)      # a public file link works in any session
    return file_answer(ctx, cmd, folder_node(ctx, cmd))


def file_answer(ctx: Ctx, cmd: dict, row: sqlite3.Row | None) -> Any:
    if row is None or row["t"] != FILE:
        raise Fail(ApiCode.ENOENT, "unknown file")
    out: dict[str, Any] = {"s": row["s"], "at": row["a"]}
    if flag(cmd, "g"):
        base = ctx.bases.transfer(cmd)
        wait = ctx.meter.time_left(ctx.client, row["s"] or 0)
        if wait:
            out.update({"e": ApiCode.EOVERQUOTA, "tl": wait})
        else:
            out["g"] = base + "dl/" + row["blob"]
    return out


def cmd_l(ctx: Ctx, cmd: dict) -> Any:
    """Export (same public handle on every call) or, with ``d:1``, remove the link."""
    uh = ctx.user()
    row = own_node(ctx, cmd)
    not_root(row)
    existing = ctx.tx.public_of(row["h"])
    if flag(cmd, "d"):
        if existing is None:
            raise Fail(ApiCode.ENOENT, "node has no public link")
        ctx.tx.delete_public(row["h"])
        ctx.tx.emit(uh, origin(cmd, {"a": "ph", "h": row["h"], "ph": existing["ph"], "d": 1,
                                     "ts": now()}))
        return 0
    if row["t"] == FOLDER and not any(s["u"] == EXPORTED for s in ctx.tx.shares_of(row["h"])):
        # a guess (DESIGN.md): the SDK always sends s2 first (meganz/sdk src/megaclient.cpp
        # ``exportnode``), and without the share no one could read the link's nodes
        raise Fail(ApiCode.EACCESS, "a folder link needs the folder shared with %s (s2) first"
                   % EXPORTED)
    if not ctx.policy.temp_account_links:
        # every account of this server is temporary (ephemeral)
        raise Fail(ApiCode.EACCESS, "temporary accounts cannot export links (policy)")
    if existing is not None:
        return existing["ph"]
    public = ctx.tx.create_public(row["h"], uh)
    ctx.tx.emit(uh, origin(cmd, {"a": "ph", "h": row["h"], "ph": public["ph"], "n": 1,
                                 "ts": public["ts"]}))
    return public["ph"]
