"""Share keys and the ``cr`` node keys of shared and exported folders (issue 25).  Pure: no I/O,
no logging of keys.

A folder shared with others, or exported as a folder link (shared with the pseudo-user
``EXP``), has a 16-byte share key; everyone it is shared with reads the nodes inside through
their keys encrypted with that share key.  So every command that creates a node inside a shared
folder (``p``), moves one into it (``m``) or shares a folder (``s2``) carries a ``cr`` element
with those keys, as the SDK always adds it (meganz/sdk src/sharenodekeys.cpp, src/commands.cpp
``CommandPutNodes``, ``CommandMoveNode``, ``CommandSetShare``; meganz/webclient js/crypto.js
``crypto_makecr``).  Without it the sharees see undecryptable nodes (rclone/rclone#4108).

Wire forms (protocol reference §6, §9, §10):

* ``cr`` = ``[[share roots], [item handles], [share index, item index, b64(E_sk(nodekey)),
  ...]]``; ``p`` sends an empty item list and the item index is the node's place in ``n``
  (SDK ``ShareNodeKeys::get(skiphandles)``).
* ``ok`` = ``b64(E_mk(sharekey))``, ``ha`` = ``b64(E_mk(h + h))`` with ``h`` the folder's 8
  handle characters (meganz/sdk src/megaclient.cpp ``handleauth``; webclient
  ``crypto_handleauth``); an account's ``f`` lists them as ``ok: [{h, k, ha}]``.

The functions take the tree as a parent map (handle -> parent handle) and the known share keys
(share root -> key), so the write path can compute the keys before it sends a ``p`` or ``m``.
"""
from __future__ import annotations

import hmac
from typing import Any, Callable, Iterable, Mapping

from .. import crypto
from .commands import is_handle

EXPORTED = "EXP"        # the public pseudo-user of folder links (meganz/sdk EXPORTEDLINK)
MAX_DEPTH = 4096        # a walk up the tree ends here whatever a server claims

Cr = list            # [[roots], [items], [triples...]] as sent
# ``cr_for(parent, new node keys in order)``: the ``cr`` of a ``p`` into ``parent`` (None
# outside any shared folder); what ``MegaApi.put_files``/``mkdir`` ask the tree for
CrFor = Callable[[str, "list[bytes]"], "Cr | None"]


def handle_auth(handle: str, master_key: bytes) -> bytes:
    """``ha`` of a shared folder: E_mk(h + h), 16 bytes; ValueError if ``handle`` is not one."""
    if not is_handle(handle):
        raise ValueError("not a node handle")
    raw = handle.encode("ascii")
    return crypto.wrap_key(raw + raw, master_key)


def owner_key(share_key: bytes, master_key: bytes) -> bytes:
    """``ok``: the share key under the owner's master key (16 bytes)."""
    if len(share_key) != 16:
        raise ValueError("a share key has 16 bytes")
    return crypto.wrap_key(share_key, master_key)


def share_command(handle: str, share_key: bytes, master_key: bytes, request_id: str,
                  cr: Cr | None = None) -> dict[str, Any]:
    """``s2`` sharing folder ``handle`` with ``EXP`` (read-only: a folder link) under
    ``share_key``, with ``ok``/``ha`` and the ``cr`` keys of the nodes inside (meganz/sdk
    src/commands.cpp ``CommandSetShare``; webclient ``api_setshare1``).  The reply is an object;
    ``{"ok": ...}`` means the folder is already shared under that other key."""
    command: dict[str, Any] = {
        "a": "s2", "n": handle, "s": [{"u": EXPORTED, "r": 0}],
        "ok": crypto.b64encode(owner_key(share_key, master_key)),
        "ha": crypto.b64encode(handle_auth(handle, master_key)), "i": request_id}
    if cr is not None:
        command["cr"] = cr
    return command


def unshare_command(handle: str, request_id: str) -> dict[str, Any]:
    """``s2`` ending folder ``handle``'s share with ``EXP`` (a target without ``r``)."""
    return {"a": "s2", "n": handle, "s": [{"u": EXPORTED}], "i": request_id}


def clash_key(reply: Any, master_key: bytes) -> bytes | None:
    """The share key of an ``s2`` reply ``{"ok": b64(E_mk(sharekey))}`` (the folder is shared
    under that key already), or None for any other reply."""
    if not isinstance(reply, dict) or "ok" not in reply:
        return None
    try:
        wrapped = crypto.b64decode(reply["ok"])
    except (ValueError, TypeError):
        return None
    return crypto.unwrap_key(wrapped, master_key) if len(wrapped) == 16 else None


def share_keys_from(ok_entries: Any, master_key: bytes) -> dict[str, bytes]:
    """The share keys of an account's outgoing shares from its ``f`` reply's ``ok`` list.

    Entries that are malformed, or whose ``ha`` does not authenticate the handle with this
    master key (a server that swapped keys between folders), are left out: such a folder counts
    as unshared.  Returns share root handle -> 16-byte share key."""
    out: dict[str, bytes] = {}
    if not isinstance(ok_entries, list):
        return out
    for entry in ok_entries[:1_000_000]:
        if not isinstance(entry, dict) or not is_handle(entry.get("h")):
            continue
        try:
            wrapped, auth = crypto.b64decode(entry.get("k", "")), crypto.b64decode(
                entry.get("ha", ""))
        except (ValueError, TypeError):
            continue
        if len(wrapped) != 16 or len(auth) != 16:
            continue
        if not hmac.compare_digest(auth, handle_auth(entry["h"], master_key)):
            continue
        out[entry["h"]] = crypto.unwrap_key(wrapped, master_key)
    return out


def enclosing_shares(parent_of: Mapping[str, str], share_keys: Mapping[str, Any],
                     handle: str) -> list[str]:
    """The share roots ``handle`` is or is inside of, nearest first.  Ends on a cycle, a
    missing parent or after MAX_DEPTH steps."""
    out: list[str] = []
    seen: set[str] = set()
    current = handle
    while current and current not in seen and len(seen) < MAX_DEPTH:
        seen.add(current)
        if current in share_keys:
            out.append(current)
        current = parent_of.get(current, "")
    return out


def make_cr(roots: list[str], share_keys: Mapping[str, bytes], node_keys: Iterable[bytes],
            items: list[str] | None = None) -> Cr:
    """``cr`` with each node key of ``node_keys`` encrypted under each root's share key.

    ``items``: the nodes' handles (``s2``, ``m``); None for ``p`` (the index is the place in
    ``n``).  ValueError for a key that is not 16 or 32 bytes."""
    triples: list[Any] = []
    for index, key in enumerate(node_keys):
        if len(key) not in (16, 32):
            raise ValueError("a node key has 16 or 32 bytes")
        for r, root in enumerate(roots):
            triples += [r, index, crypto.b64encode(crypto.wrap_key(key, share_keys[root]))]
    return [list(roots), list(items or []), triples]


def cr_for_put(parent_of: Mapping[str, str], share_keys: Mapping[str, bytes], target: str,
               node_keys: list[bytes]) -> Cr | None:
    """The ``cr`` of a ``p`` into ``target`` creating nodes with ``node_keys`` (in the order
    of ``n``), or None when ``target`` is in no shared folder."""
    roots = enclosing_shares(parent_of, share_keys, target)
    return make_cr(roots, share_keys, node_keys) if roots else None


def cr_for_move(parent_of: Mapping[str, str], share_keys: Mapping[str, bytes], target: str,
                subtree: list[tuple[str, bytes]]) -> Cr | None:
    """The ``cr`` of an ``m`` into ``target``: ``subtree`` is the moved node and every node
    below it as (handle, node key); None when ``target`` is in no shared folder."""
    roots = enclosing_shares(parent_of, share_keys, target)
    if not roots:
        return None
    return make_cr(roots, share_keys, [k for _, k in subtree], [h for h, _ in subtree])
