"""Mount options: what megafs asks of the kernel and libfuse, and the user's ``-o`` list.

Kernel caches: names and attributes are cached for ``CACHE_TIMEOUT`` seconds; what another
client changes is invalidated as soon as the change feed applies it (``adapter.Invalidator``),
and negative lookups are not cached, so a new name shows at once.  A file removed while open
is renamed by libfuse to a hidden ``.fuse_hidden*`` name until its last close (not
``hard_remove``: the kernel asks for the attributes of an open file by inode only, and libfuse
needs a path for that); the core treats that rename as the removal
and never lists hidden names.  ``nullpath_ok``: operations on open files may arrive without a
path.  ``default_permissions``: the kernel checks modes.
"""
from __future__ import annotations

from typing import Any

CACHE_TIMEOUT = 60.0      # seconds; remote changes invalidate what they touch at once
MAX_THREADS = 16        # libfuse worker threads serving requests at once

# Options megafs itself understands in ``-o`` (the rest go to libfuse).
OWN_OPTIONS = frozenset({"show_links"})


def split_options(extra: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's ``-o a,b=c`` string as (megafs options, libfuse options)."""
    own: dict[str, Any] = {}
    fuse: dict[str, Any] = {}
    for item in (extra or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        (own if key in OWN_OPTIONS else fuse)[key] = value if eq else True
    return own, fuse


def mount_options(extra: dict[str, Any] | None = None, *, allow_other: bool = False,
                  fsname: str = "megafs:") -> dict[str, Any]:
    """Options for ``mfusepy.FUSE`` (mount options; cache settings go into the libfuse 3
    config at ``init``, see ``adapter.MegaOps.init_with_config``).  ``fsname`` is the mount's
    source in /proc/mounts (``megafs:`` + the API host; a bare word would be taken for a path
    by fusermount)."""
    # max_threads: libfuse 3.14 otherwise warns that its default (-1) is invalid
    opts: dict[str, Any] = {"fsname": fsname, "subtype": "megafs",
                            "default_permissions": True, "max_threads": MAX_THREADS}
    if allow_other:
        opts["allow_other"] = True
    opts.update(extra or {})
    return opts
