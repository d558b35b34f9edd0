"""Queries on full accounts, registrations, kept mail and failed logins (tables in ``db.py``).

Plain functions over a ``Tx`` (one open transaction); like the rest of the state they never see
a key in the clear: ``k``, ``privk`` and ``hak`` are the strings the clients sent.  Emails are
stored lowercased, as clients send them to ``us0``/``us`` (protocol reference §5.1).
"""
from __future__ import annotations

import sqlite3
import time
from typing import Any

from .db import now
from .tx import Tx

CONFIRM_BASE = "https://mega.nz/#confirm"     # MEGA's confirmation links (webclient, SDK)
CONFIRM_SUBJECT = "MEGA email verification required"


def user_by_email(tx: Tx, email: str) -> sqlite3.Row | None:
    return tx.execute("SELECT * FROM users WHERE email=?", (email,)).fetchone()


def user_by_handle(tx: Tx, uh: str) -> sqlite3.Row | None:
    return tx.execute("SELECT * FROM users WHERE uh=?", (uh,)).fetchone()


def add_user(tx: Tx, *, uh: str, email: str, v: int, salt: str | None, hak: str, k: str,
             name: str = "", privk: str | None = None, pubk: str | None = None) -> None:
    tx.execute("INSERT INTO users (uh, email, v, salt, hak, k, name, privk, pubk, created) "
               "VALUES (?,?,?,?,?,?,?,?,?,?)", (uh, email, v, salt, hak, k, name, privk, pubk,
                                                now()))


def set_keypair(tx: Tx, uh: str, privk: str, pubk: str) -> None:
    tx.execute("UPDATE users SET privk=?, pubk=? WHERE uh=?", (privk, pubk, uh))


def set_fields(tx: Tx, uh: str, **fields: Any) -> None:
    for name, value in fields.items():
        assert name in ("name", "mfa", "mfa_pending", "blocked")
        tx.execute("UPDATE users SET %s=? WHERE uh=?" % name, (value, uh))


# --- registrations ------------------------------------------------------------------------
def signup_by_email(tx: Tx, email: str) -> sqlite3.Row | None:
    return tx.execute("SELECT * FROM signups WHERE email=?", (email,)).fetchone()


def signup_by_code(tx: Tx, code: str) -> sqlite3.Row | None:
    return tx.execute("SELECT * FROM signups WHERE code=?", (code,)).fetchone()


def signup_by_handle(tx: Tx, uh: str) -> sqlite3.Row | None:
    return tx.execute("SELECT * FROM signups WHERE uh=?", (uh,)).fetchone()


def put_signup(tx: Tx, *, code: str, email: str, uh: str, name: str, crv: str, hak: str,
               k: str) -> None:
    """One pending registration per email and per temporary account: the newest wins."""
    tx.execute("DELETE FROM signups WHERE email=? OR uh=?", (email, uh))
    tx.execute("INSERT INTO signups (code, email, uh, name, crv, hak, k, created) "
               "VALUES (?,?,?,?,?,?,?,?)", (code, email, uh, name, crv, hak, k, now()))


def drop_signup(tx: Tx, code: str) -> None:
    tx.execute("DELETE FROM signups WHERE code=?", (code,))


def drop_sessions_of(tx: Tx, uh: str) -> None:
    tx.execute("DELETE FROM sessions WHERE uh=?", (uh,))


# --- mail -----------------------------------------------------------------------------------
def send_mail(tx: Tx, recipient: str, subject: str, link: str) -> None:
    tx.execute("INSERT INTO mail (recipient, subject, link, created) VALUES (?,?,?,?)",
               (recipient, subject, link, now()))


def all_mail(tx: Tx) -> list[dict[str, Any]]:
    rows = tx.execute("SELECT * FROM mail ORDER BY id").fetchall()
    return [{"to": r["recipient"], "subject": r["subject"], "link": r["link"]} for r in rows]


# --- failed logins ------------------------------------------------------------------------
def failures(tx: Tx, email: str, window: float, at: float | None = None) -> int:
    since = (time.time() if at is None else at) - window
    tx.execute("DELETE FROM login_failures WHERE ts < ?", (since,))
    row = tx.execute("SELECT COUNT(*) AS n FROM login_failures WHERE email=?",
                     (email,)).fetchone()
    return int(row["n"])


def record_failure(tx: Tx, email: str) -> None:
    tx.execute("INSERT INTO login_failures (email, ts) VALUES (?,?)", (email, time.time()))


def clear_failures(tx: Tx, email: str) -> None:
    tx.execute("DELETE FROM login_failures WHERE email=?", (email,))
