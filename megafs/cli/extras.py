"""``megafs completion`` and ``megafs install-helper``: fitting megafs into the system's
conventions.

``completion bash|zsh`` prints a completion script generated from the argument parser by
``shtab`` (https://github.com/iterative/shtab), so it always knows every command and option.
``install-helper`` makes the ``mount.fuse.megafs`` link that ``mount(8)`` looks for (in
``/sbin`` by default, ``--dir`` elsewhere), pointing at the ``mount.megafs`` command installed
with megafs, so that ``mount -t fuse.megafs`` and ``/etc/fstab`` lines work without a
hand-made link.
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys

from ..errors import FsError, MegafsError

HELPER_NAME = "mount.fuse.megafs"      # mount(8) runs /sbin/mount.fuse.megafs for fuse.megafs
SHELLS = ("bash", "zsh")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "completion":
        parser.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    elif name == "install-helper":
        parser.add_argument("--dir", metavar="DIR", default="/sbin",
                            help="where mount(8) looks for helpers (default /sbin)")
        parser.add_argument("--force", action="store_true",
                            help="replace an existing %s that points elsewhere" % HELPER_NAME)


def run(args: argparse.Namespace) -> int:
    if args.command == "completion":
        return run_completion(args)
    return run_install_helper(args)


def run_completion(args: argparse.Namespace) -> int:
    """Print the completion script of ``args.shell`` on stdout."""
    import shtab

    from .main import build_parser
    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0


def helper_target() -> str:
    """The ``mount.megafs`` command installed beside the running Python (a virtualenv's or
    pipx's ``bin``), else the one on ``$PATH``; MegafsError if there is none."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "mount.megafs")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("mount.megafs")
    if found:
        return os.path.abspath(found)
    raise MegafsError("the mount.megafs command is not installed beside %s or on $PATH; "
                      "reinstall megafs (pip install .)" % sys.executable)


def run_install_helper(args: argparse.Namespace) -> int:
    """Link ``DIR/mount.fuse.megafs`` to ``mount.megafs`` and say so (exit 0 if it already
    is); FsError if ``DIR`` is missing or something else has that name (``--force``
    replaces it)."""
    target = helper_target()
    folder = os.path.abspath(os.path.expanduser(args.dir))
    link = os.path.join(folder, HELPER_NAME)
    if not os.path.isdir(folder):
        raise FsError(errno.ENOENT, "folder %s does not exist" % folder)
    if os.path.islink(link) and os.readlink(link) == target:
        print("megafs install-helper: %s already links to %s" % (link, target),
              file=sys.stderr)
        return 0
    if os.path.lexists(link):
        if not args.force:
            raise FsError(errno.EEXIST, "%s exists and is not a link to %s; add --force to "
                          "replace it" % (link, target))
        os.unlink(link)
    os.symlink(target, link)
    if folder in ("/sbin", "/usr/sbin"):
        print("megafs install-helper: linked %s -> %s; `mount -t fuse.megafs` and fstab lines "
              "of type fuse.megafs now work" % (link, target), file=sys.stderr)
    else:       # mount(8) looks in /sbin only
        print("megafs install-helper: linked %s -> %s; mount(8) looks for helpers in /sbin, "
              "so `mount -t fuse.megafs` uses it only where /sbin leads there"
              % (link, target), file=sys.stderr)
    return 0
