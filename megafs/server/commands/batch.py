"""The batch runner: one ``/cs`` request body in, its response body out.

Legacy response format only (what clients that send no ``v`` get, protocol reference §1.3):
modifying commands answer ``0``, ``up`` and ``l`` a bare string, ``p`` ``{"f": [nodes]}``,
errors a bare negative int per command.  Every command of a batch runs in its own savepoint of
one transaction, so a failing command changes nothing while the others apply, and the replay
cache entry is written in the same transaction as the effects (a retried ``p`` can never
create a second node).  Unknown commands and malformed input answer ``-2`` and log a WARNING
naming the command and the reason (never a session id, key or token).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import ApiCode
from ..store import State
from .account import cmd_sml, cmd_ug, cmd_up, cmd_uq, cmd_us
from .base import Ctx, Fail
from .files import cmd_g, cmd_l, cmd_u, folder_g
from .login import cmd_mfag, cmd_mfas, cmd_us0
from .inshares import cmd_uk
from .shares import cmd_s2, folder_f
from .signup import cmd_uc2, cmd_ud2
from .tree import cmd_a, cmd_d, cmd_f, cmd_m, cmd_p

log = logging.getLogger(__name__)

# Commands per batch: the SDK never sends more (meganz/sdk include/mega/request.h MAX_COMMANDS;
# protocol reference §1.2).  A longer batch is answered -2 as a whole before it takes the
# state lock (issue 20: 20,000 `f` in one batch held it for 42 s).
MAX_COMMANDS = 10000
# `f` answers the whole tree, so its cost and its answer grow with the account; the SDK sends it
# alone in its batch (meganz/sdk src/commands.cpp ``batchSeparately``).  More than one `f` in a
# batch is -2, which bounds a batch's answer to one tree plus small answers.
MAX_F_COMMANDS = 1

Handler = Callable[[Ctx, dict], Any]

COMMANDS: dict[str, Handler] = {
    "up": cmd_up, "us": cmd_us, "ug": cmd_ug, "uq": cmd_uq, "f": cmd_f, "u": cmd_u,
    "p": cmd_p, "g": cmd_g, "l": cmd_l, "a": cmd_a, "m": cmd_m, "d": cmd_d, "sml": cmd_sml,
    "us0": cmd_us0, "uc2": cmd_uc2, "ud2": cmd_ud2, "mfas": cmd_mfas, "mfag": cmd_mfag,
    "s2": cmd_s2, "uk": cmd_uk,
}
# A folder-link session (``/cs?n=PUBLIC_HANDLE``) reads the exported folder; every other
# command of COMMANDS answers -11 there (shares.py).
FOLDER_COMMANDS: dict[str, Handler] = {"f": folder_f, "g": folder_g}


@dataclass
class CsResult:
    body: bytes
    replayed: bool = False
    warnings: int = 0
    internal_errors: int = 0
    commands: tuple[str, ...] = field(default_factory=tuple)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def command_names(batch: Any) -> list[str]:
    if not isinstance(batch, list):
        return []
    return [c["a"] for c in batch if isinstance(c, dict) and isinstance(c.get("a"), str)]


def run_cs(state: State, *, batch: Any, raw_body: bytes, sid: str | None, rid: str | None,
           make_ctx: Callable[..., Ctx], command_fault: Callable[[str], int | None],
           folder: str | None = None) -> CsResult:
    """Run one ``/cs`` request whose body parsed as ``batch`` (any JSON value).

    ``make_ctx(tx=, uh=, sid=, folder=)`` builds the handlers' context inside the
    transaction.  ``folder``: the public handle of a folder-link session (``n=``); its session
    id, if any, is not used (the session reads only the exported folder).
    """
    if not isinstance(batch, list):
        log.warning("cs: request body is not a JSON array (%s); answering -2",
                    type(batch).__name__)
        return CsResult(dumps(ApiCode.EARGS), warnings=1)
    if len(batch) > MAX_COMMANDS:
        log.warning("cs: %d commands in one batch (at most %d); answering -2", len(batch),
                    MAX_COMMANDS)
        return CsResult(dumps(ApiCode.EARGS), warnings=1)
    if command_names(batch).count("f") > MAX_F_COMMANDS:
        log.warning("cs: more than %d 'f' commands in one batch; answering -2", MAX_F_COMMANDS)
        return CsResult(dumps(ApiCode.EARGS), warnings=1)
    digest = hashlib.sha256(raw_body).digest()
    result = CsResult(b"", commands=tuple(command_names(batch)))
    if folder is not None:
        sid = None
    scope = "n=" + folder if folder is not None else sid or ""    # of the replay cache
    with state.transaction() as tx:
        uh = None
        if sid is not None:
            uh = tx.session_user(sid)
            if uh is None:
                log.info("cs: unknown session id %s...; answering -15", sid[:6])
                return CsResult(dumps(ApiCode.ESID))
        if rid is not None:
            cached = tx.replay(scope, rid)
            if cached is not None and bytes(cached["digest"]) == digest:
                log.info("cs: replaying the cached response for request id %s", rid)
                return CsResult(bytes(cached["response"]), replayed=True,
                                commands=result.commands)
        ctx = make_ctx(tx=tx, uh=uh, sid=sid, folder=folder)
        answers = [_run_one(ctx, cmd, command_fault, result) for cmd in batch]
        result.body = dumps(answers)
        if rid is not None:
            tx.store_replay(scope, rid, digest, result.body)
    return result


def _run_one(ctx: Ctx, cmd: Any, command_fault: Callable[[str], int | None],
             result: CsResult) -> Any:
    if not isinstance(cmd, dict) or not isinstance(cmd.get("a"), str):
        log.warning("cs: a batch item is not a command object with a string 'a'; answering -2")
        result.warnings += 1
        return ApiCode.EARGS
    name = cmd["a"]
    handler = COMMANDS.get(name) if ctx.folder is None else FOLDER_COMMANDS.get(name)
    if handler is None and ctx.folder is not None and name in COMMANDS:
        log.info("cs: %s in a folder-link session; answering -11", name)
        return ApiCode.EACCESS
    if handler is None:
        log.warning("cs: unknown command %r; answering -2", name[:40])
        result.warnings += 1
        return ApiCode.EARGS
    injected = command_fault(name)
    if injected is not None:
        return injected
    try:
        with ctx.tx.savepoint():
            return handler(ctx, cmd)
    except Fail as fail:
        if fail.code == ApiCode.EARGS:
            log.warning("cs: %s rejected with -2: %s", name, fail.reason)
            result.warnings += 1
        else:
            log.info("cs: %s answered %d: %s", name, fail.code, fail.reason)
        return fail.code
    except Exception:   # a bug in a handler: never a traceback over HTTP, never silent
        log.exception("cs: internal error in command %s; answering -1", name)
        result.internal_errors += 1
        return ApiCode.EINTERNAL
