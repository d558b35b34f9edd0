"""Shares between full accounts (issue 25): sharing a folder with another account, and reading
the folders others share with this one (incoming shares).  No logging of keys.

The legacy RSA path of the SDK before its key manager (meganz/sdk at tag v4.0.0):

* **Sharing**: ``uk`` gives the recipient's handle and public key (src/commands.cpp
  ``CommandPubKeyRequest``); ``s2`` sends ``ok``/``ha`` (the share key under the owner's master
  key, as for folder links: ``sharekeys``), the target ``{"u": HANDLE, "r": LEVEL, "k":
  b64(MPI(RSA(sharekey + random padding)))}`` and, for a folder not shared before, ``cr`` with
  the key of every node inside under the share key (``CommandSetShare``).  The RSA plaintext is
  the 16-byte key followed by random bytes up to the modulus length - 2 bytes, raw RSA (no
  PKCS#1), sent as an MPI (src/crypto/cryptopp.cpp ``AsymmCipher::encrypt``).
* **Receiving**: the root of a folder shared with the account carries ``su`` (owner), ``sk``
  (the share key: over 43 characters it is RSA-encrypted to this account, else under its master
  key: src/megaclient.cpp ``decryptkey``), ``r`` (0 read-only, 1 read/write, 2 full:
  ``accesslevel_t``) and ``sts``; nodes inside have ``k`` entries ``ROOT:KEY`` under the share
  key (src/node.cpp ``applykey``).  The key is the first 16 bytes of the decrypted number written
  on max(|p| + |q| - 2 bytes, its own length) bytes (``AsymmCipher::decrypt``).  ``f``'s ``u``
  names the owners with their email (``readusers``).

Everything the server claims is bounded: at most ``MAX_SHARES`` shares, an ``sk`` of at most
``MAX_SK_CHARS`` characters that must decrypt below the modulus, levels 0-2, handles of the
right shape; anything else leaves that share out with one log line.
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import crypto
from ..errors import ApiCode, LinkError, MegaError, ProtocolError, SessionError
from . import account_crypto as ac
from . import commands, sharekeys
from .commands import FetchResult, is_handle
from .folderlink import OwnerListing, owner_listing, subtree_nodes

if TYPE_CHECKING:
    from .client import MegaClient

log = logging.getLogger(__name__)

MAX_SHARES = 10_000          # incoming shares taken from one listing
MAX_SK_CHARS = 1400          # base64 of an MPI of an 8192-bit modulus (1026 bytes) and then some
LEVELS = {0: "read-only", 1: "read/write", 2: "full access"}
_USER = re.compile(r"^[A-Za-z0-9_-]{11}$")


@dataclass(frozen=True)
class IncomingShare:
    """A folder another account shares with this one."""

    root: str            # the shared folder's handle
    owner: str           # the owner's user handle
    email: str           # the owner's email ("" if the listing did not name it)
    level: int           # 0 read-only, 1 read/write, 2 full
    key: bytes           # the 16-byte share key

    def __repr__(self) -> str:  # never show the key
        return "IncomingShare(root=%r, owner=%r, level=%d)" % (
            self.root, self.owner, self.level)


# --- RSA of share keys ---------------------------------------------------------------------
def encrypt_share_key(share_key: bytes, pubk: str) -> str:
    """The ``k`` of an ``s2`` target: ``share_key`` RSA-encrypted to ``pubk`` (base64url of
    MPI(n) MPI(e)).  KeyFormatError for a public key of the wrong shape."""
    if len(share_key) != 16:
        raise ValueError("a share key has 16 bytes")
    try:
        n, e = ac.decode_public_key(crypto.b64decode(pubk))
    except ValueError as exc:
        raise ac.KeyFormatError("pubk: %s" % exc) from None
    size = (n.bit_length() + 7) // 8 - 2
    if n.bit_length() < 1024 or e < 3 or size < 32:
        raise ac.KeyFormatError("pubk: the key is too small or malformed")
    plain = int.from_bytes(share_key + secrets.token_bytes(size - 16), "big")
    return crypto.b64encode(ac.mpi_encode(pow(plain, e, n)))


def decrypt_share_key(key: ac.RsaPrivateKey, sk: str) -> bytes:
    """The 16-byte share key in an RSA ``sk``; KeyFormatError for anything malformed."""
    if not isinstance(sk, str) or len(sk) > MAX_SK_CHARS:
        raise ac.KeyFormatError("sk is not a string of at most %d characters" % MAX_SK_CHARS)
    try:
        value, end = ac.mpi_decode(crypto.b64decode(sk))
    except ValueError as exc:
        raise ac.KeyFormatError("sk: %s" % exc) from None
    if not 0 < value < key.n:
        raise ac.KeyFormatError("sk is out of range for this key")
    plain = key.decrypt(value)
    width = max((key.p.bit_length() + 7) // 8 + (key.q.bit_length() + 7) // 8 - 2,
                (plain.bit_length() + 7) // 8)
    return plain.to_bytes(width, "big")[:16]


def private_key(client: "MegaClient") -> ac.RsaPrivateKey:
    """The account's RSA private key (``ug``'s ``privk`` under the master key).
    SessionError without a full-account session; ProtocolError if it does not decrypt."""
    session = client.session
    if session is None or not session.is_account:
        raise SessionError("shares need a full account (megafs login)")
    reply = client.transport.call({"a": "ug"})
    privk = reply.get("privk") if isinstance(reply, dict) else None
    if not isinstance(privk, str):
        raise ProtocolError("ug: the account has no private key")
    try:
        return ac.unwrap_private_key(privk, session.master_key)
    except ac.KeyFormatError as exc:
        raise ProtocolError("ug: the private key does not decrypt (%s)" % exc) from None


# --- reading incoming shares ---------------------------------------------------------------
def owner_emails(users: Any) -> dict[str, str]:
    """User handle -> email from an ``f`` reply's ``u`` list (malformed entries skipped)."""
    out: dict[str, str] = {}
    if not isinstance(users, list):
        return out
    for entry in users[:MAX_SHARES * 2]:
        if isinstance(entry, dict) and isinstance(entry.get("u"), str) \
                and _USER.match(entry["u"]) and isinstance(entry.get("m"), str) \
                and 0 < len(entry["m"]) <= 254 and "/" not in entry["m"] \
                and "\0" not in entry["m"]:
            out[entry["u"]] = entry["m"]
    return out


def incoming_shares(nodes: list[dict[str, Any]], users: Any, me: str, master_key: bytes,
                    key: ac.RsaPrivateKey | None) -> dict[str, IncomingShare]:
    """The incoming shares of an ``f`` listing (``nodes``, its ``u`` list as ``users``):
    share root handle -> IncomingShare.  ``key``: the account's private key, needed for RSA
    ``sk`` values (without it those shares are left out)."""
    emails = owner_emails(users)
    out: dict[str, IncomingShare] = {}
    for node in nodes:
        if "su" not in node:
            continue
        if len(out) >= MAX_SHARES:
            log.warning("more than %d incoming shares listed; the rest are left out",
                        MAX_SHARES)
            break
        h, owner, level, sk = node.get("h"), node.get("su"), node.get("r"), node.get("sk")
        try:
            if not is_handle(h) or node.get("t") != 1:
                raise ValueError("not a folder with a handle")
            if not isinstance(owner, str) or not _USER.match(owner) or owner == me:
                raise ValueError("bad owner")
            if level not in LEVELS or isinstance(level, bool):
                raise ValueError("bad access level %r" % (level,))
            if not isinstance(sk, str):
                raise ValueError("no share key")
            if len(sk) > 43:
                if key is None:
                    raise ValueError("RSA share key and no private key")
                share_key = decrypt_share_key(key, sk)
            else:
                wrapped = crypto.b64decode(sk)
                if len(wrapped) != 16:
                    raise ValueError("share key of %d bytes" % len(wrapped))
                share_key = crypto.unwrap_key(wrapped, master_key)
        except ValueError as exc:
            log.warning("incoming share %s left out: %s", h if is_handle(h) else "?", exc)
            continue
        out[str(h)] = IncomingShare(str(h), owner, emails.get(owner, ""), level, share_key)
    return out


def share_node_key(raw: dict[str, Any], shares: dict[str, IncomingShare]) -> bytes | None:
    """A node's key from its ``ROOT:KEY`` entry under a known share key (None without one)."""
    value = raw.get("k")
    if not isinstance(value, str):
        return None
    for part in value.split("/")[:64]:
        root, sep, blob = part.partition(":")
        share = shares.get(root) if sep else None
        if share is None:
            continue
        try:
            wrapped = crypto.b64decode(blob)
        except ValueError:
            return None
        if len(wrapped) not in (16, 32):
            return None
        return crypto.unwrap_key(wrapped, share.key)
    return None


def listing_with_shares(client: "MegaClient") -> tuple[FetchResult, dict[str, IncomingShare]]:
    """``f`` of the client's full account and its incoming shares (share keys decrypted)."""
    session = client.session
    if session is None:
        raise SessionError("incoming shares need a session")
    reply = client.transport.call(commands.fetch())
    fetched = commands.parse_fetch(reply)
    needs_rsa = any("su" in n and len(str(n.get("sk", ""))) > 43 for n in fetched.nodes)
    key = private_key(client) if needs_rsa else None
    return fetched, incoming_shares(fetched.nodes, reply.get("u"), session.user_handle,
                                    session.master_key, key)


# --- sharing -------------------------------------------------------------------------------
def public_key(client: "MegaClient", who: str) -> tuple[str, str]:
    """(user handle, pubk) of the account ``who`` names (email or handle); MegaError ENOENT
    when there is none with a key pair."""
    reply = client.transport.call({"a": "uk", "u": who})
    if not isinstance(reply, dict) or not isinstance(reply.get("u"), str) \
            or not _USER.match(reply["u"]) or not isinstance(reply.get("pubk"), str):
        raise ProtocolError("uk: expected {u, pubk}")
    return reply["u"], reply["pubk"]


def share_folder(client: "MegaClient", handle: str, who: str, level: int = 0,
                 listing: OwnerListing | None = None) -> str:
    """Share the account's folder ``handle`` with the account ``who`` (email or handle) at
    ``level`` (0 read-only, 1 read/write, 2 full); returns the recipient's user handle.
    LinkError for a node that is not a folder of the account, MegaError for refusals."""
    if level not in LEVELS:
        raise ValueError("level must be 0, 1 or 2")
    session = client.session
    if session is None:
        raise SessionError("sharing needs a session")
    uh, pubk = public_key(client, who)
    listing = listing or owner_listing(client)
    found = [n for n in listing.fetched.nodes if n.get("h") == handle]
    if not found or found[0].get("t") != 1 or "su" in found[0]:
        raise LinkError("only folders of this account can be shared")
    share_key = listing.share_keys.get(handle)
    fresh = share_key is None
    share_key = share_key or crypto.random_key(16)
    command: dict[str, Any] = {
        "a": "s2", "n": handle,
        "s": [{"u": uh, "r": level, "k": encrypt_share_key(share_key, pubk)}],
        "ok": crypto.b64encode(sharekeys.owner_key(share_key, session.master_key)),
        "ha": crypto.b64encode(sharekeys.handle_auth(handle, session.master_key)),
        "i": client.request_id}
    if fresh:
        inside = subtree_nodes(listing.fetched.nodes, handle)
        command["cr"] = sharekeys.make_cr([handle], {handle: share_key},
                                          [client.node_key(n) for n in inside],
                                          [n["h"] for n in inside])
    reply = client.transport.call(command)
    if isinstance(reply, dict) and "ok" in reply:
        raise MegaError(ApiCode.EKEY, "s2: the folder is already shared under another share "
                                      "key; list the account again and retry")
    if not isinstance(reply, dict):
        raise ProtocolError("s2: expected an object, got %s" % type(reply).__name__)
    return uh


def unshare_folder(client: "MegaClient", handle: str, who: str) -> None:
    """Stop sharing ``handle`` with the account ``who`` (email or user handle)."""
    client.transport.call({"a": "s2", "n": handle, "s": [{"u": who}], "i": client.request_id})


def put_file(client: "MegaClient", share: IncomingShare, parent: str, local_path: str,
             name: str) -> dict[str, Any]:
    """Upload ``local_path`` as ``name`` into folder ``parent`` of an incoming share at level
    1 or 2, as the SDK sends it (src/commands.cpp ``CommandPutNodes``): ``k`` under this
    account's master key and ``cr`` with the node key under the share key, which the owner and
    every sharee read it with.  Returns the new raw node (its ``k`` the ``ROOT:KEY`` entry).
    MegaError ``-11`` for a read-only share (refused before any upload)."""
    session = client.session
    if session is None:
        raise SessionError("writing into a share needs a session")
    if share.level < 1:
        raise MegaError(ApiCode.EACCESS, "the folder is shared with this account read-only")
    uploaded = client.upload(local_path)
    item = commands.file_node(uploaded, {"n": name}, session.master_key)
    command = commands.put_nodes(parent, [item], client.request_id)
    command["cr"] = sharekeys.make_cr([share.root], {share.root: share.key},
                                      [uploaded.key.pack()])
    reply = client.transport.call(command)
    if not isinstance(reply, dict) or not isinstance(reply.get("f"), list) or not reply["f"]:
        raise ProtocolError("p: expected {f: [node]}")
    return reply["f"][0]
