"""``mount.megafs``: the helper ``mount(8)`` runs for ``mount -t fuse.megafs`` and for
``/etc/fstab`` lines of type ``fuse.megafs`` (installed as ``/sbin/mount.fuse.megafs``, see the
README).

``mount(8)`` calls ``mount.fuse.megafs SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]``.
SOURCE says which service: ``local`` (the bundled local server, like ``--local``), an
``http(s)://`` API URL (like ``--api``), a MEGA folder link (like ``--link``: mounted
read-only), anything else (e.g. ``megafs``) the default API.
OPTIONS are ``megafs mount -o`` options (``state_dir=``, ``uploads=``, ``staging_max=``,
``allow_other``, ...); the ones ``mount(8)`` and systemd keep for themselves (``noauto``,
``_netdev``, ``nofail``, ``x-systemd.*``, ...) are ignored.  ``-f`` (fake) only checks the
options.  The mount runs in the background like ``megafs mount``; its log is in the state
dir.
"""
from __future__ import annotations

import sys

from ..api.folderlink import is_folder_link

USAGE = ("usage: mount.megafs SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]\n"
         "  SOURCE: local | https://API-URL/ | FOLDERLINK (read-only) | megafs (the default "
         "API)\n"
         "  /etc/fstab: local /mnt/mega fuse.megafs state_dir=/var/lib/megafs,_netdev 0 0")


def translate(argv: list[str]) -> tuple[list[str], bool]:
    """``mount.megafs`` arguments as ``megafs`` arguments, and whether ``-f`` (fake) was
    given.  ValueError with the reason for arguments that make no sense."""
    positional: list[str] = []
    options: list[str] = []
    fake = False
    verbose = 0
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "-o":
            if not args:
                raise ValueError("-o needs a value")
            options.append(args.pop(0))
        elif arg.startswith("-o") and len(arg) > 2:
            options.append(arg[2:])
        elif arg == "-t":
            if args:
                args.pop(0)            # the type (fuse.megafs): nothing to do with it
        elif arg in ("-n", "-s"):
            continue                  # no mtab / sloppy: nothing to do
        elif arg == "-f":
            fake = True
        elif arg == "-v":
            verbose += 1
        elif arg.startswith("-"):
            raise ValueError("unknown argument %s" % arg)
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise ValueError("expected SOURCE and MOUNTPOINT")
    source, mountpoint = positional
    out = ["mount", mountpoint]
    if source.lower() == "local":
        out.append("--local")
    elif is_folder_link(source):
        out += ["--link", source]
    elif source.startswith(("http://", "https://")):
        out += ["--api", source]
    joined = ",".join(o for o in options if o)
    if joined:
        out += ["-o", joined]
    out += ["-v"] * verbose
    return out, fake


def main(argv: list[str] | None = None) -> int:
    from .main import main as megafs_main, parse

    try:
        args, fake = translate(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print("mount.megafs: %s\n%s" % (exc, USAGE), file=sys.stderr)
        return 1
    if fake:
        from .mount import apply_options
        from ..errors import MegafsError
        try:
            apply_options(parse(args))
        except MegafsError as exc:
            print("mount.megafs: %s" % exc, file=sys.stderr)
            return 1
        return 0
    # `-o state_dir=` is read by `megafs mount` itself (apply_options), like any -o option
    return megafs_main(args)
