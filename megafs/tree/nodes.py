"""A MEGA node as the mount sees it: type, parent, decrypted key and attributes, public handle.

``decrypt_node`` builds a ``Node`` from a raw ``f``/``t`` node object (protocol reference §6,
§3.1, §3.2): it picks this account's key entry, unwraps it with the master key and decrypts the
attributes; a node that cannot be decrypted is kept (``ok=False``, no name) and logged once at
WARNING, never dropped and never raised.  No network, no FUSE, no logging of keys.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import chunks, crypto
from ..api import fingerprint
from ..errors import ProtocolError

log = logging.getLogger(__name__)

FILE, FOLDER, ROOT, INBOX, RUBBISH = 0, 1, 2, 3, 4


@dataclass(slots=True)
class Node:
    """A node as the mount sees it (slotted: a 1,000,000-node account keeps a million)."""

    handle: str
    parent: str
    type: int
    name: str | None           # remote name; None when the node could not be decrypted
    size: int = 0
    ts: int = 0                # server creation time
    key: bytes | None = None   # raw node key: 32 bytes (file) or 16 (folder)
    attrs: dict[str, Any] = field(default_factory=dict)
    public: str | None = None  # public handle once exported
    ok: bool = True
    owner: str = ""
    mtime_ns: int = 0          # derived from ``attrs`` and ``ts`` (``set_attrs``)

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """Replace the attributes and the values derived from them (mtime)."""
        self.attrs = attrs
        self.mtime_ns = _mtime_ns(attrs, self.ts)

    @property
    def is_dir(self) -> bool:
        return self.type != FILE

    @property
    def mtime(self) -> int:
        """Modification time in whole seconds (see ``mtime_ns``)."""
        return self.mtime_ns // NS

    @property
    def file_key(self) -> crypto.FileKey:
        if self.type != FILE or self.key is None or len(self.key) != 32:
            raise ProtocolError("node %s has no usable file key" % self.handle)
        return crypto.FileKey.unpack(self.key)


NS = 1_000_000_000
MTIME_NS_ATTR = "mfs-mt"     # megafs: the mtime in nanoseconds (MEGA keeps whole seconds)
UPLOAD_ID_ATTR = "mfs"       # megafs: ``rid.generation`` of the upload that made the node


def _mtime_ns(attrs: dict[str, Any], ts: int) -> int:
    """Modification time in nanoseconds: the fingerprint's (``c``) seconds, else ``t``, else
    the creation time ``ts``; sub-second digits from ``mfs-mt`` when it names the same second
    (megafs writes all three; MEGA's own apps read ``c``)."""
    seconds = fingerprint_mtime(attrs.get("c"))
    if seconds is None:
        seconds = _seconds(attrs.get("t"))
    if seconds is None:
        return ts * NS
    exact = attrs.get(MTIME_NS_ATTR)
    if isinstance(exact, int) and not isinstance(exact, bool) and exact // NS == seconds:
        return exact
    return seconds * NS


def _seconds(value: Any) -> int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def fingerprint_mtime(value: Any) -> int | None:
    """The mtime (seconds) inside a ``c`` fingerprint attribute, or None if there is none."""
    if not isinstance(value, str):
        return None
    try:
        return fingerprint.parse(value)[1]
    except ValueError:
        return None


def time_attrs(mtime_ns: int, attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``attrs`` with the mtime set: ``t`` (seconds), ``mfs-mt`` (nanoseconds) and the mtime
    part of an existing ``c`` fingerprint (its CRC part is kept)."""
    out = dict(attrs or {})
    seconds = mtime_ns // NS
    out["t"] = seconds
    out[MTIME_NS_ATTR] = mtime_ns
    c = out.get("c")
    if not isinstance(c, str):
        return out
    try:
        crc, _old = fingerprint.parse(c)
    except ValueError:
        return out
    out["c"] = fingerprint.encode(crc, seconds)
    return out


def _key_for_user(k: str, user_handle: str) -> str | None:
    """Pick our entry from a ``k`` field ("<id>:<b64>[/<id>:<b64>...]" or a bare key)."""
    for part in k.split("/"):
        if ":" not in part:
            return part
        owner, _, value = part.partition(":")
        if owner == user_handle:
            return value
    return None


def own_copy(value: Any) -> Any:
    """A copy of a str or int taken from a parsed listing, sharing no memory with it.

    A big ``f`` listing is a million small dicts; once decrypted they are freed, but the
    allocator can only give memory back where no object kept from them (a handle, a size)
    still sits.  Keeping copies instead, the first mount of a 1,000,000-node account drops from
    1.24 GiB to 0.67 GiB once the listing is gone (measured in-process)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if -5 <= value <= 256:
        return value                      # the interpreter's shared small ints
    return int.from_bytes(value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True),
                          "little", signed=True)


def _shared_entry(k: str, share_keys: Mapping[str, bytes]) -> tuple[str, bytes] | None:
    """The ``ROOT:KEY`` entry of ``k`` for a known incoming share and that share's key."""
    for part in k.split("/")[:64]:
        root, sep, value = part.partition(":")
        if sep and root in share_keys:
            return value, share_keys[root]
    return None


def decrypt_node(raw: Any, master_key: bytes, user_handle: str,
                 share_keys: Mapping[str, bytes] | None = None) -> Node:
    """Build a Node from a raw ``f``/``t`` node object; never raises for bad crypto.
    ``share_keys``: share keys by root handle (incoming shares', and our own shared folders'
    for nodes a sharee wrote), for nodes without an entry of ``user_handle`` (meganz/sdk
    src/node.cpp ``applykey``).

    Raises ProtocolError only when the object is not a node at all (no string handle).
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("h"), str) or not raw["h"]:
        raise ProtocolError("node object without a handle")
    handle = own_copy(raw["h"])
    ntype = raw.get("t")
    if not isinstance(ntype, int) or isinstance(ntype, bool) or ntype not in (0, 1, 2, 3, 4):
        raise ProtocolError("node %s has an unknown type %r" % (handle, ntype))
    p, s, t, u = raw.get("p"), raw.get("s"), raw.get("ts"), raw.get("u")
    parent = sys.intern(own_copy(p)) if isinstance(p, str) else ""
    size = own_copy(s) if isinstance(s, int) and s >= 0 else 0
    ts = own_copy(t) if isinstance(t, int) else 0
    owner = sys.intern(own_copy(u)) if isinstance(u, str) else ""
    node = Node(handle, parent, ntype, None, size=size, ts=ts, owner=owner, mtime_ns=ts * NS)
    if not chunks.storable(size):
        # kept (its name and place are real), but reading it fails: ``ReadCache`` refuses it
        log.warning("node %s claims a size of %d bytes, more than MEGA stores (2^53 - 1); "
                    "reading it fails with EIO", handle, size)
    if ntype in (ROOT, INBOX, RUBBISH):
        node.name = {ROOT: "Cloud Drive", INBOX: "Inbox", RUBBISH: "Rubbish Bin"}[ntype]
        return node
    try:
        k = raw.get("k")
        if not isinstance(k, str):
            raise ValueError("no key field")
        ours = _key_for_user(k, user_handle)
        wrapping = master_key
        if ours is None and share_keys:
            found = _shared_entry(k, share_keys)
            if found is not None:
                ours, wrapping = found
        if ours is None:
            raise ValueError("no key entry for this account")
        wrapped = crypto.b64decode(ours)
        expected = 32 if ntype == FILE else 16
        if len(wrapped) != expected:
            raise ValueError("key is %d bytes, expected %d" % (len(wrapped), expected))
        node.key = crypto.unwrap_key(wrapped, wrapping)
        a = raw.get("a")
        if not isinstance(a, str):
            raise ValueError("no attribute field")
        node.set_attrs(crypto.decrypt_attr(crypto.b64decode(a), node.key))
        name = node.attrs.get("n")
        if not isinstance(name, str):
            raise ValueError("attributes carry no name")
        node.name = name
    except (ValueError, crypto.AttributeError_) as exc:
        node.ok = False
        node.name = None
        log.warning("node %s cannot be decrypted (%s); shown as undecryptable-%s",
                    handle, exc, handle)
    return node
