"""The command channel of the local MEGA server: one function per API command, and the batch
runner that turns a ``/cs`` request body into its response body.

Legacy response format only (what clients that send no ``v`` get, §1.3 of the protocol
reference): modifying commands answer ``0``, ``up`` and ``l`` a bare string, ``p``
``{"f": [nodes]}``, errors a bare negative int per command.  Every command of a batch runs in
its own savepoint of one transaction, so a failing command changes nothing while the others
apply, and the replay cache entry is written in the same transaction as the effects (a retried
``p`` can never create a second node).

Input is validated strictly: wrong types, unknown commands and malformed values answer ``-2``
and log a WARNING naming the command and the reason (never a session id, key or token).
Nothing here knows about HTTP; ``http.py`` calls ``run_cs`` and ``run_sc``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from .. import crypto
from .state import CONTAINER_TYPES, ROOT_TYPES, Tx, decode_sn, encode_sn, now

log = logging.getLogger(__name__)

MAX_ATTR_CHARS = 65536 * 4 // 3 + 4   # 64 KiB of encrypted attributes (MAX_NODE_ATTRIBUTE_SIZE)
MAX_SC_PACKETS = 1000
MAX_INT = (1 << 62) - 1               # SQLite stores 64-bit signed integers
EARGS, EAGAIN, ENOENT, ECIRCULAR, EACCESS, ESID, EOVERQUOTA = -2, -3, -9, -10, -11, -15, -17


class Fail(Exception):
    """A per-command MEGA error; ``reason`` is logged (at WARNING for -2)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason or str(code))
        self.code = code
        self.reason = reason


@dataclass
class Ctx:
    tx: Tx
    uh: str | None          # the session's user, None without a session
    sid: str | None
    base_url: str           # "http://host:port/", for upload/download/wait URLs

    def user(self) -> str:
        if self.uh is None:
            raise Fail(ESID, "command needs a session")
        return self.uh


# --------------------------------------------------------------------------------------------
# argument helpers
def _str(cmd: dict, key: str, required: bool = True) -> str | None:
    value = cmd.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise Fail(EARGS, "%r must be a string" % key)
    return value


def _int(cmd: dict, key: str, required: bool = True, minimum: int | None = None) -> int | None:
    value = cmd.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise Fail(EARGS, "%r must be an integer" % key)
    if minimum is not None and value < minimum:
        raise Fail(EARGS, "%r must be >= %d" % (key, minimum))
    if abs(value) > MAX_INT:
        raise Fail(EARGS, "%r is out of range" % key)
    return value


def _b64(cmd: dict, key: str, *, lengths: tuple[int, ...] = (), block: int = 0,
         max_chars: int = 0) -> str:
    value = _str(cmd, key)
    assert value is not None
    if max_chars and len(value) > max_chars:
        raise Fail(EARGS, "%r is too long" % key)
    try:
        raw = crypto.b64decode(value)
    except ValueError:
        raise Fail(EARGS, "%r is not base64url" % key) from None
    if lengths and len(raw) not in lengths:
        raise Fail(EARGS, "%r must decode to %s bytes, not %d"
                   % (key, " or ".join(map(str, lengths)), len(raw)))
    if block and (not raw or len(raw) % block):
        raise Fail(EARGS, "%r must decode to a positive multiple of %d bytes" % (key, block))
    return value


def _flag(cmd: dict, key: str) -> bool:
    value = cmd.get(key)
    return value in (1, True, "1")


def _origin(cmd: dict, packet: dict) -> dict:
    """Copy the command's request id ``i`` into its action packet (clients skip their own)."""
    i = cmd.get("i")
    if isinstance(i, str):
        packet["i"] = i
    return packet


def wire_node(row: sqlite3.Row) -> dict[str, Any]:
    """A node as ``f``, ``p`` and ``t`` packets carry it."""
    node: dict[str, Any] = {"h": row["h"], "p": row["p"], "u": row["uh"], "t": row["t"],
                            "a": row["a"], "k": "%s:%s" % (row["uh"], row["k"]) if row["k"]
                            else "", "ts": row["ts"]}
    if row["t"] == 0:
        node["s"] = row["s"]
    return node


def _own_node(ctx: Ctx, cmd: dict, key: str = "n") -> sqlite3.Row:
    h = _str(cmd, key)
    row = ctx.tx.node(h, ctx.user())
    if row is None:
        raise Fail(ENOENT, "unknown node")
    return row


def _not_root(row: sqlite3.Row) -> None:
    if row["t"] in ROOT_TYPES:
        raise Fail(EACCESS, "root nodes cannot be changed")


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


# --------------------------------------------------------------------------------------------
# commands
def cmd_up(ctx: Ctx, cmd: dict) -> Any:
    """Create an ephemeral account: ``k`` = E_pk(mk), ``ts`` = ssc || E_mk(ssc)."""
    k = _b64(cmd, "k", lengths=(16,))
    ts = _b64(cmd, "ts", lengths=(32,))
    uh = ctx.tx.create_account(k, ts)
    log.info("created ephemeral account %s", uh)
    return uh


def cmd_us(ctx: Ctx, cmd: dict) -> Any:
    """Ephemeral session: tsid = ts[0:16] + user handle (ASCII) + ts[16:32]."""
    user = _str(cmd, "user")
    assert user is not None
    if "uh" in cmd:
        raise Fail(ENOENT, "full-account (email) login is not supported")
    account = ctx.tx.account(user)
    if account is None:
        raise Fail(ENOENT, "unknown user")
    ts = crypto.b64decode(account["ts"])
    tsid = crypto.b64encode(ts[:16] + user.encode("ascii") + ts[16:])
    ctx.tx.add_session(tsid, user)
    return {"k": account["k"], "tsid": tsid}


def cmd_ug(ctx: Ctx, cmd: dict) -> Any:
    account = ctx.tx.account(ctx.user())
    assert account is not None
    return {"u": account["uh"], "s": 1, "n": 0, "k": account["k"], "c": 0,
            "ts": account["ts"], "since": account["created"]}


def cmd_uq(ctx: Ctx, cmd: dict) -> Any:
    uh = ctx.user()
    used = ctx.tx.used_bytes(uh)
    quota = ctx.tx.quota(uh)
    per_root: dict[str, list[int]] = {}
    rows = ctx.tx.account_nodes(uh)
    root_of: dict[str, str] = {}
    for row in rows:                       # parents come first
        if row["t"] in ROOT_TYPES:
            root_of[row["h"]] = row["h"]
            per_root[row["h"]] = [0, 0, 0, 0, 0]
            continue
        root = root_of.get(row["p"])
        if root is None:
            continue
        root_of[row["h"]] = root
        if row["t"] == 0:
            per_root[root][0] += row["s"] or 0
            per_root[root][1] += 1
        else:
            per_root[root][2] += 1
    return {"mstrg": quota, "cstrg": used, "cstrgn": per_root,
            "mxfer": 1 << 50, "caxfer": 0, "csxfer": 0, "tuo": 0, "tua": 0, "srvratio": 0,
            "bt": 0, "tah": [0, 0, 0, 0, 0, 0], "tar": 0, "rua": 0, "ruo": 0,
            "uslw": 9000, "usl": 2 if used >= quota else (1 if used * 10 >= quota * 9 else 0),
            "balance": [], "subs": [], "plans": [], "features": [], "utype": 0}


def cmd_f(ctx: Ctx, cmd: dict) -> Any:
    uh = ctx.user()
    nodes = [wire_node(r) for r in ctx.tx.account_nodes(uh)]
    public = [{"h": r["h"], "ph": r["ph"], "ts": r["ts"]} for r in ctx.tx.public_handles(uh)]
    return {"f": nodes, "ok": [], "s": [], "u": [{"u": uh, "c": 2, "m": ""}], "ph": public,
            "sn": encode_sn(ctx.tx.current_seq())}


def cmd_u(ctx: Ctx, cmd: dict) -> Any:
    """Upload URL for ``s`` bytes; ``v`` >= 2 asks for a 36-byte binary completion token."""
    uh = ctx.user()
    size = _int(cmd, "s", minimum=0)
    assert size is not None
    version = cmd.get("v")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise Fail(EARGS, "'v' must be an integer")
    used, quota = ctx.tx.used_bytes(uh), ctx.tx.quota(uh)
    if used + size > quota:
        raise Fail(EOVERQUOTA, "upload of %d bytes would exceed the quota" % size)
    token = ctx.tx.create_upload(uh, size, raw=bool(version and version >= 2))
    return {"p": ctx.base_url + "ul/" + token}


@dataclass
class _NewNode:
    t: int
    a: str
    k: str
    parent_ref: str | None
    placeholder: str | None
    size: int | None = None
    blob: str | None = None
    token: bytes | None = None


def cmd_p(ctx: Ctx, cmd: dict) -> Any:
    """Create nodes: files from completion tokens (or public handles), folders with
    placeholder handles that later items of the same ``n`` may name as their ``p``."""
    uh = ctx.user()
    target_h = _str(cmd, "t")
    items = cmd.get("n")
    if not isinstance(items, list) or not items:
        raise Fail(EARGS, "'n' must be a non-empty array")
    target = ctx.tx.node(target_h, uh)
    if target is None:
        raise Fail(ENOENT, "unknown target")
    if target["t"] not in CONTAINER_TYPES:
        raise Fail(EARGS, "target is not a folder")
    plans: list[_NewNode] = []
    tokens: set[bytes] = set()
    total = 0
    for item in items:
        if not isinstance(item, dict):
            raise Fail(EARGS, "each item of 'n' must be an object")
        t = _int(item, "t")
        if t not in (0, 1):
            raise Fail(EARGS, "item type must be 0 (file) or 1 (folder)")
        a = _b64(item, "a", block=16, max_chars=MAX_ATTR_CHARS)
        k = _b64(item, "k", lengths=(32,) if t == 0 else (16,))
        parent_ref = _str(item, "p", required=False)
        plan = _NewNode(t=t, a=a, k=k, parent_ref=parent_ref, placeholder=None)
        if t == 1:
            plan.placeholder = _str(item, "h", required=False)
        elif "h" not in item and "ph" in item:
            source = ctx.tx.public_node(_str(item, "ph"))
            if source is None or source["t"] != 0:
                raise Fail(ENOENT, "unknown public handle")
            plan.size, plan.blob = source["s"], source["blob"]
        else:
            h = _str(item, "h")
            assert h is not None
            token = completion_bytes(h)
            done = ctx.tx.completion(token) if token else None
            if token is None or done is None or done["uh"] != uh:
                raise Fail(EARGS, "unknown completion token")
            if done["node"] is not None or token in tokens:
                raise Fail(EARGS, "completion token already used")
            tokens.add(token)
            plan.size, plan.blob, plan.token = done["size"], done["blob"], token
        total += plan.size or 0
        plans.append(plan)
    if ctx.tx.used_bytes(uh) + total > ctx.tx.quota(uh):
        raise Fail(EOVERQUOTA, "new files of %d bytes would exceed the quota" % total)
    placeholders: dict[str, str] = {}
    created = []
    for plan in plans:
        parent = target["h"]
        if plan.parent_ref is not None and plan.parent_ref != target["h"]:
            if plan.parent_ref in placeholders:
                parent = placeholders[plan.parent_ref]
            else:
                other = ctx.tx.node(plan.parent_ref, uh)
                if other is None or other["t"] not in CONTAINER_TYPES:
                    raise Fail(ENOENT, "unknown parent in 'n'")
                parent = other["h"]
        row = ctx.tx.insert_node(uh=uh, p=parent, t=plan.t, a=plan.a, k=plan.k, s=plan.size,
                                 blob=plan.blob)
        if plan.placeholder:
            placeholders[plan.placeholder] = row["h"]
        if plan.token is not None:
            ctx.tx.use_completion(plan.token, row["h"])
        created.append(wire_node(row))
    ctx.tx.emit(uh, _origin(cmd, {"a": "t", "t": {"f": created}, "ou": uh}))
    return {"f": created}


def cmd_g(ctx: Ctx, cmd: dict) -> Any:
    """File info by node handle ``n`` (own files) or public handle ``p``; ``g:1`` adds a
    download URL."""
    if "p" in cmd:
        row = ctx.tx.public_node(_str(cmd, "p"))
    elif "n" in cmd:
        row = ctx.tx.node(_str(cmd, "n"), ctx.user())
    else:
        raise Fail(EARGS, "'g' needs 'n' or 'p'")
    if row is None or row["t"] != 0:
        raise Fail(ENOENT, "unknown file")
    out: dict[str, Any] = {"s": row["s"], "at": row["a"]}
    if _flag(cmd, "g"):
        out["g"] = ctx.base_url + "dl/" + row["blob"]
    return out


def cmd_l(ctx: Ctx, cmd: dict) -> Any:
    """Export (same public handle on every call) or, with ``d:1``, remove the link."""
    uh = ctx.user()
    row = _own_node(ctx, cmd)
    _not_root(row)
    existing = ctx.tx.public_of(row["h"])
    if _flag(cmd, "d"):
        if existing is None:
            raise Fail(ENOENT, "node has no public link")
        ctx.tx.delete_public(row["h"])
        ctx.tx.emit(uh, _origin(cmd, {"a": "ph", "h": row["h"], "ph": existing["ph"], "d": 1,
                                      "ts": now()}))
        return 0
    if existing is not None:
        return existing["ph"]
    public = ctx.tx.create_public(row["h"], uh)
    ctx.tx.emit(uh, _origin(cmd, {"a": "ph", "h": row["h"], "ph": public["ph"], "n": 1,
                                  "ts": public["ts"]}))
    return public["ph"]


def cmd_a(ctx: Ctx, cmd: dict) -> Any:
    """Replace a node's attributes with ``at`` (legacy clients send ``attr``; their ``key`` is
    ignored: keys never change)."""
    uh = ctx.user()
    row = _own_node(ctx, cmd)
    _not_root(row)
    key = "at" if "at" in cmd or "attr" not in cmd else "attr"
    at = _b64(cmd, key, block=16, max_chars=MAX_ATTR_CHARS)
    ctx.tx.set_attrs(row["h"], at)
    ctx.tx.emit(uh, _origin(cmd, {"a": "u", "n": row["h"], "u": uh, "at": at,
                                  "ts": row["ts"]}))
    return 0


def cmd_m(ctx: Ctx, cmd: dict) -> Any:
    uh = ctx.user()
    row = _own_node(ctx, cmd)
    _not_root(row)
    target = ctx.tx.node(_str(cmd, "t"), uh)
    if target is None:
        raise Fail(ENOENT, "unknown target")
    if target["t"] not in CONTAINER_TYPES:
        raise Fail(EARGS, "target is not a folder")
    subtree = ctx.tx.subtree(row["h"])
    if target["h"] in {r["h"] for r in subtree}:
        raise Fail(ECIRCULAR, "cannot move a folder into itself")
    ctx.tx.move_node(row["h"], target["h"])
    moved = [wire_node(r) for r in ctx.tx.subtree(row["h"])]
    ctx.tx.emit(uh, _origin(cmd, {"a": "d", "n": row["h"], "m": 1, "ou": uh}))
    ctx.tx.emit(uh, _origin(cmd, {"a": "t", "t": {"f": moved}, "ou": uh}))
    return 0


def cmd_d(ctx: Ctx, cmd: dict) -> Any:
    """Delete a node and its whole subtree (frees quota; blobs go once unreferenced)."""
    uh = ctx.user()
    row = _own_node(ctx, cmd)
    _not_root(row)
    ctx.tx.delete_nodes(ctx.tx.subtree(row["h"]))
    ctx.tx.emit(uh, _origin(cmd, {"a": "d", "n": row["h"], "ou": uh}))
    return 0


def cmd_sml(ctx: Ctx, cmd: dict) -> Any:
    """Log out: the session id stops working (``us`` makes it valid again)."""
    ctx.user()
    assert ctx.sid is not None
    ctx.tx.drop_session(ctx.sid)
    return 0


COMMANDS: dict[str, Callable[[Ctx, dict], Any]] = {
    "up": cmd_up, "us": cmd_us, "ug": cmd_ug, "uq": cmd_uq, "f": cmd_f, "u": cmd_u,
    "p": cmd_p, "g": cmd_g, "l": cmd_l, "a": cmd_a, "m": cmd_m, "d": cmd_d, "sml": cmd_sml,
}


# --------------------------------------------------------------------------------------------
# the batch runner
@dataclass
class CsResult:
    body: bytes
    replayed: bool = False
    warnings: int = 0
    internal_errors: int = 0
    commands: tuple[str, ...] = ()


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def command_names(batch: Any) -> list[str]:
    if not isinstance(batch, list):
        return []
    return [c["a"] for c in batch if isinstance(c, dict) and isinstance(c.get("a"), str)]


def run_cs(state, *, batch: Any, raw_body: bytes, sid: str | None, rid: str | None,
           base_url: str, command_fault: Callable[[str], int | None]) -> CsResult:
    """Run one ``/cs`` request whose body parsed as ``batch`` (any JSON value)."""
    if not isinstance(batch, list):
        log.warning("cs: request body is not a JSON array (%s); answering -2",
                    type(batch).__name__)
        return CsResult(dumps(EARGS), warnings=1)
    digest = hashlib.sha256(raw_body).digest()
    result = CsResult(b"", commands=tuple(command_names(batch)))
    with state.transaction() as tx:
        uh = None
        if sid is not None:
            uh = tx.session_user(sid)
            if uh is None:
                log.info("cs: unknown session id %s...; answering -15", sid[:6])
                return CsResult(dumps(ESID))
        if rid is not None:
            cached = tx.replay(sid or "", rid)
            if cached is not None and bytes(cached["digest"]) == digest:
                log.info("cs: replaying the cached response for request id %s", rid)
                return CsResult(bytes(cached["response"]), replayed=True,
                                commands=result.commands)
        ctx = Ctx(tx=tx, uh=uh, sid=sid, base_url=base_url)
        answers = []
        for cmd in batch:
            answers.append(_run_one(ctx, cmd, command_fault, result))
        result.body = dumps(answers)
        if rid is not None:
            tx.store_replay(sid or "", rid, digest, result.body)
    return result


def _run_one(ctx: Ctx, cmd: Any, command_fault: Callable[[str], int | None],
             result: CsResult) -> Any:
    if not isinstance(cmd, dict) or not isinstance(cmd.get("a"), str):
        log.warning("cs: a batch item is not a command object with a string 'a'; answering -2")
        result.warnings += 1
        return EARGS
    name = cmd["a"]
    handler = COMMANDS.get(name)
    if handler is None:
        log.warning("cs: unknown command %r; answering -2", name[:40])
        result.warnings += 1
        return EARGS
    injected = command_fault(name)
    if injected is not None:
        return injected
    try:
        with ctx.tx.savepoint():
            return handler(ctx, cmd)
    except Fail as fail:
        if fail.code == EARGS:
            log.warning("cs: %s rejected with -2: %s", name, fail.reason)
            result.warnings += 1
        else:
            log.info("cs: %s answered %d: %s", name, fail.code, fail.reason)
        return fail.code
    except Exception:   # a bug in a handler: never a traceback over HTTP, never silent
        log.exception("cs: internal error in command %s; answering -1", name)
        result.internal_errors += 1
        return -1


# --------------------------------------------------------------------------------------------
# the server-client channel
def run_sc(state, *, sid: str | None, sn: str | None, base_url: str) -> tuple[bytes, bool]:
    """Answer ``sc?sn=..&sid=..``: (body, is_warning)."""
    if sid is None:
        return dumps(ESID), False
    with state.lock:
        tx = state.read()
        uh = tx.session_user(sid)
        if uh is None:
            return dumps(ESID), False
        if sn is None:
            log.warning("sc: no 'sn' parameter; answering -2")
            return dumps(EARGS), True
        seq = decode_sn(sn)
        if seq is None:
            log.warning("sc: malformed 'sn' %r; answering -2", sn[:20])
            return dumps(EARGS), True
        packets = tx.packets_after(uh, seq, MAX_SC_PACKETS)
    if packets:
        return dumps({"a": [p for _, p in packets], "sn": encode_sn(packets[-1][0])}), False
    return dumps({"w": "%swsc/%s/%s" % (base_url, uh, sn), "sn": sn}), False
