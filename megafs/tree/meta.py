"""POSIX metadata megafs keeps in a node's encrypted attributes: permission bits and user
xattrs (issue 22).

MEGA's attribute JSON (protocol reference §3.2) carries any client key.  megafs adds two, both
with *string* values and names of at most 8 characters, because MEGA's SDK packs each key into
a 64-bit ``nameid`` (meganz/sdk src/json.cpp ``JSON::getnameid``: a longer key loses its first
characters) and writes every value back as a JSON string when it rewrites the blob for a rename
or any other ``a`` (src/attrmap.cpp ``AttrMap::fromjson``/``getjson``, sent whole by
src/commands.cpp ``CommandSetAttr``): a number or object value would come back as a string, a
string comes back unchanged, and keys it does not know are kept.  MEGA's web client keeps
unknown keys and their values as they are (meganz/webclient js/crypto.js: ``crypto_procattr``
puts them in ``n.ar``, ``crypto_makeattr`` starts from ``n.ar``).  A new version uploaded by
another client starts with fresh attributes: there the mode and xattrs are lost.

* ``mfs-mode``: the permission bits as octal digits (``"755"``); never setuid or setgid
  (``KEPT_BITS``): a file from the cloud, maybe written by another client or a hostile server,
  must not run with its owner's rights on this machine (megafs runs as root here and there).
* ``mfs-x``: the user xattrs as a JSON text ``{"user.name": "<base64 value>"}``.
* ``mfs-lnk``: ``"1"`` on a symbolic link: a file node whose content is the link's target
  (UTF-8, at most ``LINK_MAX`` bytes).  Other clients see a small file holding the target path,
  which is what it is; megafs shows it as a symlink.

Anything else found under these keys (another client's garbage, a hostile server) is ignored:
the default mode and no xattrs.  Pure functions; no I/O.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

MODE_ATTR = "mfs-mode"
XATTR_ATTR = "mfs-x"
LINK_ATTR = "mfs-lnk"
LINK_MAX = 4095           # bytes of a symlink's target (PATH_MAX less the NUL)
FILE_MODE, DIR_MODE = 0o644, 0o755          # shown when a node carries no mode
XATTR_LIMIT = 16384       # bytes: names plus values of one node's user xattrs together
KEPT_BITS = 0o1777        # rwx for user, group, other and the sticky bit; no setuid/setgid


def mode_value(mode: int) -> str:
    """The ``mfs-mode`` value for permission bits ``mode`` (only ``KEPT_BITS`` are kept)."""
    return "%o" % (mode & KEPT_BITS)


def mode_of(attrs: dict[str, Any] | None, default: int) -> int:
    """The permission bits an attribute dict carries, else ``default``."""
    value = attrs.get(MODE_ATTR) if attrs else None
    if isinstance(value, str) and 0 < len(value) <= 5:
        try:
            return int(value, 8) & KEPT_BITS
        except ValueError:
            return default
    return default


def xattrs_of(attrs: dict[str, Any] | None) -> dict[str, bytes]:
    """The user xattrs an attribute dict carries (name -> value); {} when none or unreadable."""
    value = attrs.get(XATTR_ATTR) if attrs else None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    out = {}
    for name, data in value.items():
        if not (isinstance(name, str) and name.startswith("user.") and isinstance(data, str)):
            continue
        try:
            out[name] = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            continue
    return out


def xattrs_value(xattrs: dict[str, bytes]) -> str:
    """The ``mfs-x`` value for ``xattrs``."""
    return json.dumps({name: base64.b64encode(data).decode() for name, data
                       in sorted(xattrs.items())}, separators=(",", ":"))


def xattrs_size(xattrs: dict[str, bytes]) -> int:
    """Bytes counted against ``XATTR_LIMIT``: every name (UTF-8) and value."""
    return sum(len(name.encode()) + len(data) for name, data in xattrs.items())


def carried(attrs: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata attributes of a node that a new version of its file must carry too."""
    return {k: attrs[k] for k in (MODE_ATTR, XATTR_ATTR, LINK_ATTR) if attrs and k in attrs}


def is_link(attrs: dict[str, Any] | None) -> bool:
    """Whether a file's attributes mark it as a symbolic link (``mfs-lnk``)."""
    return bool(attrs) and attrs.get(LINK_ATTR) == "1"  # type: ignore[union-attr]
