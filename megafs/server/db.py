"""Ground floor of the server's state: the SQLite schema, handle and sequence-number encodings,
and the small pure helpers (received byte ranges, tree order) that ``tx``, ``store`` and the
janitor share.  No I/O beyond what SQLite does for the schema; nothing here knows HTTP.

Layout of ``--data DIR``::

    megafs-server.db (+ -wal, -shm)   accounts (ephemeral and full), sessions, registrations,
                                      kept mail, failed logins, nodes, public handles, action
                                      packets, uploads in progress, completion tokens, the
                                      id-replay cache, deleted handles, per-account packet floors,
                                      big accounts' tree snapshots, outgoing shares and node
                                      keys under share keys
    uploads/<upload token>.part       ciphertext of an upload that is still missing bytes
    blobs/<blob id>                   ciphertext of a complete upload (referenced by nodes or
                                      by a not yet used completion token)
    tls/                              CA and certificate for ``--tls`` (see ``tls.py``)
    control-token                     the control endpoints' token (``datadir.py``), 0600

Folders are 0700, the database 0600 (``datadir.prepare``); session ids are stored as
``sid_key(sid)`` (SHA-256) in ``sessions`` and ``replay``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from .. import crypto

DB_NAME = "megafs-server.db"
SCHEMA_VERSION = "1"
FILE, FOLDER, CLOUD_DRIVE, VAULT, RUBBISH = 0, 1, 2, 3, 4     # node types (`t`)
ROOT_TYPES = (CLOUD_DRIVE, VAULT, RUBBISH)
CONTAINER_TYPES = (FOLDER, CLOUD_DRIVE, VAULT, RUBBISH)     # anything that may have children
BLOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")

# Tables added after the first release are created with IF NOT EXISTS, so older data
# directories simply gain them (the schema version stays 1).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    uh TEXT PRIMARY KEY, k TEXT NOT NULL, ts TEXT NOT NULL, created INTEGER NOT NULL,
    quota INTEGER);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY, uh TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    h TEXT PRIMARY KEY, uh TEXT NOT NULL, p TEXT NOT NULL, t INTEGER NOT NULL, a TEXT NOT NULL,
    k TEXT NOT NULL, s INTEGER, ts INTEGER NOT NULL, blob TEXT);
CREATE INDEX IF NOT EXISTS nodes_uh ON nodes(uh);
CREATE INDEX IF NOT EXISTS nodes_p ON nodes(p);
CREATE INDEX IF NOT EXISTS nodes_blob ON nodes(blob);
CREATE TABLE IF NOT EXISTS public (
    ph TEXT PRIMARY KEY, h TEXT NOT NULL UNIQUE, uh TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS packets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, uh TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS packets_uh ON packets(uh, seq);
-- The newest sequence number pruned from an account's packet log: an sc poll from before it
-- has missed packets and gets -6.
CREATE TABLE IF NOT EXISTS packet_floor (uh TEXT PRIMARY KEY, seq INTEGER NOT NULL);
-- The tree an `f` of a big account answers (policy snapshot_over): the nodes and public
-- handles as of `seq`, which the client catches up from with `sc`.
CREATE TABLE IF NOT EXISTS snapshots (uh TEXT PRIMARY KEY, seq INTEGER NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    token TEXT PRIMARY KEY, uh TEXT NOT NULL, size INTEGER NOT NULL, raw INTEGER NOT NULL,
    created INTEGER NOT NULL, ranges TEXT NOT NULL, expired INTEGER NOT NULL DEFAULT 0,
    completion TEXT, blob TEXT);
CREATE TABLE IF NOT EXISTS completions (
    token TEXT PRIMARY KEY, uh TEXT NOT NULL, size INTEGER NOT NULL, blob TEXT NOT NULL,
    created INTEGER NOT NULL, node TEXT);
CREATE INDEX IF NOT EXISTS completions_blob ON completions(blob);
CREATE TABLE IF NOT EXISTS replay (
    sid TEXT NOT NULL, rid TEXT NOT NULL, digest BLOB NOT NULL, response BLOB NOT NULL,
    created INTEGER NOT NULL, PRIMARY KEY (sid, rid));
-- Handles of deleted folders, so that a `p` into one can be told from a `p` into a handle that
-- never existed (the first goes to the Rubbish Bin, the second is -9).
CREATE TABLE IF NOT EXISTS deleted (h TEXT PRIMARY KEY, uh TEXT NOT NULL, ts INTEGER NOT NULL);
-- Outgoing shares (issue 25): one row per shared folder and sharee; `u` is "EXP" for the public
-- pseudo-user of a folder link (meganz/sdk src/megaclient.cpp EXPORTEDLINK).  `ok` is the share
-- key under the owner's master key and `ha` its handle authenticator, both as `s2` sent them.
CREATE TABLE IF NOT EXISTS shares (
    h TEXT NOT NULL, u TEXT NOT NULL, uh TEXT NOT NULL, ok TEXT NOT NULL, ha TEXT NOT NULL,
    r INTEGER NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (h, u));
-- Node keys under share keys, from the `cr` of `s2`, `p` and `m`: node `h`'s key encrypted
-- with the share key of share root `sh` (the server cannot read either).
CREATE TABLE IF NOT EXISTS sharekeys (
    h TEXT NOT NULL, sh TEXT NOT NULL, k TEXT NOT NULL, PRIMARY KEY (h, sh));
CREATE INDEX IF NOT EXISTS sharekeys_sh ON sharekeys(sh);
-- The share key of a folder shared with a full account `u` (its user handle; a row of `shares`
-- too), RSA-encrypted to that account's public key by the owner: `k` of the `s2` target
-- (meganz/sdk v4.0.0 src/commands.cpp CommandSetShare), served as the share root's `sk`.
CREATE TABLE IF NOT EXISTS sharee_keys (
    h TEXT NOT NULL, u TEXT NOT NULL, k TEXT NOT NULL, PRIMARY KEY (h, u));
CREATE INDEX IF NOT EXISTS sharee_keys_u ON sharee_keys(u);
-- Bytes of file nodes per account, kept by triggers inside the same transactions as the node
-- changes: `u` and `p` check the quota on every call, and a SUM over an account of 18,000
-- nodes took a quarter of the server's time in a small-files run.
CREATE TABLE IF NOT EXISTS usage (uh TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
-- Full (email) accounts: the ephemeral account `uh` a confirmed registration turned into one.
-- v2: `salt` and `hak` = SHA-256(auth key)[:16]; v1: `hak` is the 8-byte stringhash.  `k` is
-- the master key under the password key; `privk`/`pubk` are set by the client at its first
-- login (never seen in the clear here).  `mfa` is a TOTP secret (base32), `mfa_pending` one
-- handed out by `mfas` and not yet confirmed with a code.
CREATE TABLE IF NOT EXISTS users (
    uh TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, v INTEGER NOT NULL, salt TEXT,
    hak TEXT NOT NULL, k TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', privk TEXT, pubk TEXT,
    mfa TEXT, mfa_pending TEXT, blocked INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);
-- Registrations waiting for their confirmation link (`uc2` -> `ud2`), one per email.
CREATE TABLE IF NOT EXISTS signups (
    code TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, uh TEXT NOT NULL, name TEXT NOT NULL,
    crv TEXT NOT NULL, hak TEXT NOT NULL, k TEXT NOT NULL, created INTEGER NOT NULL);
-- Mail the real service would send (confirmation links), readable at GET /_megafs/mail.
CREATE TABLE IF NOT EXISTS mail (
    id INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL, subject TEXT NOT NULL,
    link TEXT NOT NULL, created INTEGER NOT NULL);
-- Failed logins per email, for the lockout (policy login_attempts / login_window).
CREATE TABLE IF NOT EXISTS login_failures (email TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_email ON login_failures(email, ts);
CREATE TRIGGER IF NOT EXISTS usage_add AFTER INSERT ON nodes WHEN NEW.t = 0 BEGIN
    INSERT INTO usage (uh, bytes) VALUES (NEW.uh, COALESCE(NEW.s, 0))
    ON CONFLICT(uh) DO UPDATE SET bytes = bytes + COALESCE(NEW.s, 0);
END;
CREATE TRIGGER IF NOT EXISTS usage_del AFTER DELETE ON nodes WHEN OLD.t = 0 BEGIN
    UPDATE usage SET bytes = bytes - COALESCE(OLD.s, 0) WHERE uh = OLD.uh;
END;
"""


def now() -> int:
    return int(time.time())


def encode_sn(seq: int) -> str:
    """The opaque 11-character sequence number clients see (8 bytes, base64url)."""
    return crypto.b64encode(struct.pack(">Q", seq))


def decode_sn(sn: str) -> int | None:
    try:
        raw = crypto.b64decode(sn)
    except ValueError:
        return None
    if len(raw) != 8:
        return None
    return int(struct.unpack(">Q", raw)[0])


def sid_key(sid: str) -> str:
    """How a session id is stored (sessions, replay cache): SHA-256 hex, so a copy of the
    database gives no usable session.  Session ids are 16+ random bytes: no salt needed."""
    return hashlib.sha256(sid.encode("utf-8", "surrogateescape")).hexdigest()


def random_handle(nbytes: int) -> str:
    return crypto.b64encode(secrets.token_bytes(nbytes))


@dataclass
class Upload:
    token: str
    uh: str
    size: int
    raw: bool
    created: int
    ranges: list[list[int]]
    expired: bool
    completion: bytes | None     # the 36-byte completion token once all bytes are in
    blob: str | None


def upload_from_row(row: sqlite3.Row) -> Upload:
    return Upload(token=row["token"], uh=row["uh"], size=row["size"], raw=bool(row["raw"]),
                  created=row["created"], ranges=_json_ranges(row["ranges"]),
                  expired=bool(row["expired"]),
                  completion=bytes.fromhex(row["completion"]) if row["completion"] else None,
                  blob=row["blob"])


def _json_ranges(text: str) -> list[list[int]]:
    return [list(r) for r in json.loads(text)]


def merge_ranges(ranges: list[list[int]], start: int, end: int) -> list[list[int]]:
    """Add [start, end) to a sorted list of disjoint half-open ranges, merging neighbours."""
    if end <= start:
        return [list(r) for r in ranges]
    out: list[list[int]] = []
    placed = False
    for a, b in sorted(ranges):
        if b < start:
            out.append([a, b])
        elif a > end:
            if not placed:
                out.append([start, end])
                placed = True
            out.append([a, b])
        else:
            start, end = min(a, start), max(b, end)
    if not placed:
        out.append([start, end])
    return sorted(out)


def covers(ranges: list[list[int]], size: int) -> bool:
    return size == 0 or (len(ranges) == 1 and ranges[0][0] == 0 and ranges[0][1] >= size)


def tree_order(rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
    """Order rows so every parent precedes its children; keeps creation order among siblings."""
    by_handle = {r["h"]: r for r in rows}
    children: dict[str, list[sqlite3.Row]] = {}
    tops: list[sqlite3.Row] = []
    for r in rows:
        if r["p"] in by_handle:
            children.setdefault(r["p"], []).append(r)
        else:
            tops.append(r)
    out: list[sqlite3.Row] = []
    stack = list(reversed(tops))
    while stack:
        r = stack.pop()
        out.append(r)
        stack.extend(reversed(children.get(r["h"], [])))
    return out


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
