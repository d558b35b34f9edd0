"""Mount options: what megafs asks of the kernel and libfuse, and the user's ``-o`` list.

Kernel caches: names and attributes are cached for ``CACHE_TIMEOUT`` seconds; what another
client changes is invalidated as soon as the change feed applies it (``adapter.Invalidator``),
and negative lookups are not cached, so a new name shows at once. Folder listings are cached by
the kernel too, and reused only while the folder is unchanged (``fuse/dircache.py``). A file
removed while open is renamed by libfuse to a hidden ``.fuse_hidden*`` name until its last
close (not ``hard_remove``: the kernel asks for the attributes of an open file by inode only,
and libfuse needs a path for that); the core treats that rename as the removal and never lists
hidden names. ``nullpath_ok``: operations on open files may arrive without a path.
``default_permissions``: the kernel checks modes.

What megafs passes on to libfuse and the kernel from the user's ``-o`` list
(``FUSE_OPTIONS``) and what ``mount(8)`` and systemd keep for themselves (``IGNORED_OPTIONS``);
megafs' own options, and the parsing of ``-o``, are in the one table of ``mount/options.py``.
"""
from __future__ import annotations

from typing import Any

CACHE_TIMEOUT = 60.0      # seconds; remote changes invalidate what they touch at once
MAX_THREADS = 16        # libfuse worker threads serving requests at once


# Passed on to libfuse / the kernel (libfuse 3 mount options, fuse(8) and mount(8));
# allow_other and debug are megafs options too (mount/options.py), handed on from there.
FUSE_OPTIONS: dict[str, str] = {
    "allow_root": "let root use the mount",
    "auto_unmount": "unmount when the megafs process dies (needs fusermount3)",
    "default_permissions": "the kernel checks modes (always on)",
    "ro": "read-only", "rw": "read-write (the default)",
    "nosuid": "", "suid": "", "nodev": "", "dev": "", "noexec": "", "exec": "",
    "noatime": "", "atime": "", "relatime": "", "nodiratime": "", "diratime": "",
    "sync": "", "async": "", "dirsync": "",
    "fsname": "=NAME: the mount's source in /proc/mounts (default megafs:HOST)",
    "subtype": "=NAME: the type after fuse. (default megafs)",
    "max_read": "=BYTES", "max_threads": "=N: libfuse worker threads (default 16)",
    "max_idle_threads": "=N",
    "umask": "=MODE", "uid": "=UID", "gid": "=GID",
    "kernel_cache": "",
}

# Options mount(8), fstab and systemd use for themselves; never given to libfuse.
IGNORED_OPTIONS = frozenset({"defaults", "auto", "noauto", "user", "users", "nouser", "owner",
                             "group", "_netdev", "nofail", "comment", "loop", "bg", "fg"})
IGNORED_PREFIXES = ("x-", "comment=")


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
