"""What every command handler shares: the per-request context, the per-command error, strict
argument readers (wrong types and malformed values answer ``-2``) and the wire form of nodes.

Nothing here knows HTTP: the web layer builds a ``Ctx`` (with the base URLs the answers must
name) and the batch runner (``batch.py``) calls handlers with it.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ... import crypto
from ...errors import ApiCode
from ..config import Policy
from ..db import ROOT_TYPES
from ..transfer_quota import TransferMeter
from ..tx import Tx

MAX_ATTR_CHARS = 65536 * 4 // 3 + 4   # 64 KiB of encrypted attributes (MAX_NODE_ATTRIBUTE_SIZE)
MAX_INT = (1 << 62) - 1               # SQLite stores 64-bit signed integers
SSL_LEVELS = (0, 1, 2)


class Fail(Exception):
    """A per-command MEGA error; ``reason`` is logged (at WARNING for -2)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason or str(code))
        self.code = int(code)
        self.reason = reason


@dataclass(frozen=True)
class Bases:
    """Base URLs ("scheme://host:port/") an answer may name, as this request reaches them."""

    transfers: str            # plain http transfers (the API listener, as the client named it)
    secure_transfers: str     # https transfers, "" without --tls
    wait: str                 # the wait listener

    def transfer(self, cmd: dict) -> str:
        """`ssl` 1 or 2 asks for an https transfer URL (SDK: `ssl: 2` when using https)."""
        ssl = cmd.get("ssl", 0)
        if ssl not in SSL_LEVELS or isinstance(ssl, bool):
            raise Fail(ApiCode.EARGS, "'ssl' must be 0, 1 or 2")
        return self.secure_transfers if ssl and self.secure_transfers else self.transfers


@dataclass
class Ctx:
    tx: Tx
    uh: str | None          # the session's user, None without a session
    sid: str | None
    bases: Bases
    policy: Policy
    meter: TransferMeter
    client: str             # the client's address (transfer quota)
    folder: str | None = None   # a folder-link session's public handle (``/cs?n=``)

    def user(self) -> str:
        if self.uh is None:
            raise Fail(ApiCode.ESID, "command needs a session")
        return self.uh


# --------------------------------------------------------------------------------------------
# argument readers
def arg_str(cmd: dict, key: str) -> str:
    value = cmd.get(key)
    if not isinstance(value, str):
        raise Fail(ApiCode.EARGS, "%r must be a string" % key)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:      # JSON allows a lone surrogate ("\ud800"); SQLite does not
        raise Fail(ApiCode.EARGS, "%r is not valid Unicode (a lone surrogate)" % key) from None
    return value


def opt_str(cmd: dict, key: str) -> str | None:
    return None if cmd.get(key) is None else arg_str(cmd, key)


def arg_int(cmd: dict, key: str, minimum: int | None = None) -> int:
    value = cmd.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Fail(ApiCode.EARGS, "%r must be an integer" % key)
    if minimum is not None and value < minimum:
        raise Fail(ApiCode.EARGS, "%r must be >= %d" % (key, minimum))
    if abs(value) > MAX_INT:
        raise Fail(ApiCode.EARGS, "%r is out of range" % key)
    return value


def arg_b64(cmd: dict, key: str, *, lengths: tuple[int, ...] = (), block: int = 0,
            max_chars: int = 0) -> str:
    value = arg_str(cmd, key)
    if max_chars and len(value) > max_chars:
        raise Fail(ApiCode.EARGS, "%r is too long" % key)
    try:
        raw = crypto.b64decode(value)
    except ValueError:
        raise Fail(ApiCode.EARGS, "%r is not base64url" % key) from None
    if lengths and len(raw) not in lengths:
        raise Fail(ApiCode.EARGS, "%r must decode to %s bytes, not %d"
                   % (key, " or ".join(map(str, lengths)), len(raw)))
    if block and (not raw or len(raw) % block):
        raise Fail(ApiCode.EARGS, "%r must decode to a positive multiple of %d bytes"
                   % (key, block))
    return value


def flag(cmd: dict, key: str) -> bool:
    value = cmd.get(key)
    return value in (1, True, "1")


# --------------------------------------------------------------------------------------------
# nodes
def origin(cmd: dict, packet: dict) -> dict:
    """Copy the command's request id ``i`` into its action packet (clients skip their own)."""
    i = cmd.get("i")
    if isinstance(i, str):
        packet["i"] = i
    return packet


def wire_node(row: sqlite3.Row, shared: list[tuple[str, str]] | None = None
              ) -> dict[str, Any]:
    """A node as ``f``, ``p`` and ``t`` packets carry it.  ``shared``: its keys under share
    keys, (share root, key) pairs, appended to ``k`` as ``/ROOT:KEY`` (protocol reference §6:
    a multi-entry ``k``; meganz/sdk src/node.cpp ``applykey`` picks the entry it can use)."""
    k = "/".join((["%s:%s" % (row["uh"], row["k"])] if row["k"] else [])
                 + ["%s:%s" % pair for pair in shared or ()])
    node: dict[str, Any] = {"h": row["h"], "p": row["p"], "u": row["uh"], "t": row["t"],
                            "a": row["a"], "k": k, "ts": row["ts"]}
    if row["t"] == 0:
        node["s"] = row["s"]
    return node


def own_node(ctx: Ctx, cmd: dict, key: str = "n") -> sqlite3.Row:
    row = ctx.tx.node(arg_str(cmd, key), ctx.user())
    if row is None:
        raise Fail(ApiCode.ENOENT, "unknown node")
    return row


def not_root(row: sqlite3.Row) -> None:
    if row["t"] in ROOT_TYPES:
        raise Fail(ApiCode.EACCESS, "root nodes cannot be changed")


def completion_bytes(h: str) -> bytes | None:
    """The 36-byte completion token from its wire form: 36 ASCII chars or base64url of 36."""
    if len(h) == 36:
        try:
            return h.encode("ascii")
        except UnicodeEncodeError:
            return None
    if len(h) == 48:
        try:
            raw = crypto.b64decode(h)
        except ValueError:
            return None
        return raw if len(raw) == 36 else None
    return None
