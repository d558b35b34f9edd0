"""Account commands: ``up`` (create an ephemeral account, or with a session update it:
``signup.update_user``), ``us`` (an ephemeral account's session; with ``uh`` an email login:
``login.full_login``), ``ug``, ``uq`` and ``sml`` (log out)."""
from __future__ import annotations

import logging
from typing import Any

from ... import crypto
from ...errors import ApiCode
from .. import userdb
from ..db import FILE, ROOT_TYPES
from .base import Ctx, Fail, arg_b64, arg_str
from .login import full_login
from .signup import update_user

log = logging.getLogger(__name__)

USAGE_NEAR_FULL = 9000      # `uslw`: near-full threshold in 1/100 % (90 % for free accounts)
TRANSFER_MAX = 1 << 50      # `mxfer` reported while no transfer quota is configured


def cmd_up(ctx: Ctx, cmd: dict) -> Any:
    """Create an ephemeral account: ``k`` = E_pk(mk), ``ts`` = ssc || E_mk(ssc)."""
    if ctx.uh is not None and not ("k" in cmd and "ts" in cmd):
        return update_user(ctx, cmd)
    k = arg_b64(cmd, "k", lengths=(16,))
    ts = arg_b64(cmd, "ts", lengths=(32,))
    uh = ctx.tx.create_account(k, ts)
    log.info("created ephemeral account %s", uh)
    return uh


def cmd_us(ctx: Ctx, cmd: dict) -> Any:
    """Ephemeral session: tsid = ts[0:16] + user handle (ASCII) + ts[16:32]."""
    if "uh" in cmd:
        return full_login(ctx, cmd)
    user = arg_str(cmd, "user")
    account = ctx.tx.account(user)
    if account is None:
        raise Fail(ApiCode.ENOENT, "unknown user")
    if userdb.user_by_handle(ctx.tx, user) is not None:
        raise Fail(ApiCode.ENOENT, "a full account logs in with its email and password")
    ts = crypto.b64decode(account["ts"])
    tsid = crypto.b64encode(ts[:16] + user.encode("ascii") + ts[16:])
    ctx.tx.add_session(tsid, user)
    return {"k": account["k"], "tsid": tsid}


def cmd_ug(ctx: Ctx, cmd: dict) -> Any:
    """The user record; full accounts add ``email``, ``name``, ``privk``, ``pubk`` and the
    account version ``aav`` (and salt ``aas`` for v2), as the web client reads them
    (meganz/webclient js/user.js, js/security.js); ``c`` is 1 once confirmed."""
    account = ctx.tx.account(ctx.user())
    assert account is not None
    record = {"u": account["uh"], "s": 1, "n": 0, "k": account["k"], "c": 0,
              "ts": account["ts"], "since": account["created"]}
    user = userdb.user_by_handle(ctx.tx, account["uh"])
    if user is not None:
        record.update({"c": 1, "email": user["email"], "name": user["name"], "aav": user["v"],
                       "mfa": int(bool(user["mfa"]))})
        if user["salt"]:
            record["aas"] = user["salt"]
        if user["privk"]:
            record.update({"privk": user["privk"], "pubk": user["pubk"]})
    return record


def cmd_uq(ctx: Ctx, cmd: dict) -> Any:
    uh = ctx.user()
    used = ctx.tx.used_bytes(uh)
    quota = ctx.tx.quota(uh)
    per_root: dict[str, list[int]] = {}
    root_of: dict[str, str] = {}
    for row in ctx.tx.account_nodes(uh):          # parents come first
        if row["t"] in ROOT_TYPES:
            root_of[row["h"]] = row["h"]
            per_root[row["h"]] = [0, 0, 0, 0, 0]
            continue
        root = root_of.get(row["p"])
        if root is None:
            continue
        root_of[row["h"]] = root
        if row["t"] == FILE:
            per_root[root][0] += row["s"] or 0
            per_root[root][1] += 1
        else:
            per_root[root][2] += 1
    transfer_max = ctx.policy.transfer_quota or TRANSFER_MAX
    near = used * 10000 >= quota * USAGE_NEAR_FULL
    return {"mstrg": quota, "cstrg": used, "cstrgn": per_root,
            "mxfer": transfer_max, "caxfer": 0, "csxfer": 0, "tuo": 0, "tua": 0, "srvratio": 0,
            "bt": 0, "tah": [0, 0, 0, 0, 0, 0], "tar": 0, "rua": ctx.meter.used(ctx.client),
            "ruo": 0, "uslw": USAGE_NEAR_FULL, "usl": 2 if used >= quota else int(near),
            "balance": [], "subs": [], "plans": [], "features": [], "utype": 0}


def cmd_sml(ctx: Ctx, cmd: dict) -> Any:
    """Log out: the session id stops working (``us`` makes it valid again)."""
    ctx.user()
    assert ctx.sid is not None
    ctx.tx.drop_session(ctx.sid)
    return 0
