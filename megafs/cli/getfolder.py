"""``megafs get FOLDERLINK [-o DIR]`` (issue 25, item 3): a folder link's whole tree, one
subfolder of it (``.../folder/H#K/folder/SUB``) or one file (``.../file/SUB``), without an
account (``api/publicfolder.PublicFolder``: the ``n=`` session, ``f``, ``g``).

Where: the tree's contents go into ``-o DIR`` (made if missing, its parent must exist), else
into a new folder named after the link's folder in the current directory; re-running the same
command writes to the same place.  One file (``/file/H``) goes where a file link's ``get``
puts it (``-o`` a file, or an existing folder to put it in).

Every file is downloaded by ``Downloader.download_file`` (through ``PublicFolder.download``):
MAC-checked, written under its final name only once verified, up to ``FILES_AT_ONCE`` files at
a time (fewer if ``--connections`` is lower), each with ``--connections`` connections.  One
progress bar (``cli/progress.Transfer``) counts the bytes of the whole tree.

Resuming: a file already at its place is *complete* when its size is the node's and the
meta-MAC of its bytes, computed under the node's key, is the MAC in that key (the same check a
download ends with, so a complete file is as verified as a fresh one; it costs one read of
the file, no transfer).  Complete files are skipped; a file there with other bytes is left
alone and reported (``--force`` replaces it); an interrupted download never left a file under
its final name (``api/partfile``), so re-running finishes the tree.

Names are hostile (issue 20): a remote name becomes a local one with control, bidi and
surrogate characters written as ``\\xNN``/``\\uNNNN`` text (``config.printable``), ``/`` and NUL
as ``_``, cut to ``NAME_BYTES`` bytes; siblings whose local names collide (MEGA allows equal
names; escaping makes more) get ``~HANDLE`` before the extension, the node with the smallest
handle keeping the plain name, so every run picks the same names.  Folders are made one level
at a time and must be real folders (a symlink or a file in the way is reported, never
followed); every file's folder must resolve inside the output folder.  The listing's depth is
bounded by ``publicfolder.MAX_DEPTH``; paths the system cannot take fail per file.  Never
prints or logs the link, its key or a download URL.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from .. import crypto
from ..api.identical import fd_matches
from ..api.partfile import remove_partial_files
from ..api.publicfolder import FILE, FOLDER, Entry, Listing, PublicFolder
from ..config import printable
from ..errors import ApiCode, Cancelled, MegaError, MegafsError, describe
from .getcommon import check_remote_name, quota_line, signals_stop
from .progress import Transfer

log = logging.getLogger(__name__)

FILES_AT_ONCE = 4      # files downloaded at the same time (at most --connections)
NAME_BYTES = 240       # longest local name made: NAME_MAX 255 leaves room for "~HANDLE"
STOP_WAIT = 3.0        # seconds the workers get to clean up after Ctrl-C/SIGTERM


def local_name(name: str) -> str:
    """A remote name as one local path component: printable, no ``/`` or NUL, not ``.`` or
    ``..``, valid UTF-8 of at most ``NAME_BYTES`` bytes."""
    text = printable(name.replace("/", "_").replace("\0", "_"))
    if text in ("", ".", ".."):
        text = "_" + text
    raw = text.encode("utf-8")
    if len(raw) > NAME_BYTES:
        text = raw[:NAME_BYTES].decode("utf-8", "ignore")
    return text


def _unique(name: str, handle: str, used: set[str]) -> str:
    """``name``, or with ``~HANDLE`` (then ``~HANDLE~N``) before its extension if taken."""
    candidate, n = name, 0
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    while candidate in used:
        n += 1
        tag = "~%s" % handle + ("~%d" % n if n > 1 else "")
        candidate = "%s%s%s%s" % (stem[:NAME_BYTES - 2 * len(tag)], tag, dot, ext)
    used.add(candidate)
    return candidate


@dataclass
class Plan:
    """What to make under the output folder: folders (parents first) and files, as relative
    local paths, and how many nodes cannot be read (no key in the link: left out)."""

    folders: list[str] = field(default_factory=list)
    files: list[tuple[str, Entry]] = field(default_factory=list)
    unreadable: int = 0


def plan(listing: Listing, top: str) -> Plan:
    """The local paths of everything below ``top`` (see the module docstring for names)."""
    out = Plan()
    stack = [(top, "")]
    while stack:
        handle, rel = stack.pop()
        used: set[str] = set()
        for kid in sorted(listing.children.get(handle, [])):
            entry = listing.entries[kid]
            if entry.name is None:
                out.unreadable += 1 + _count_below(listing, kid)
                continue
            path = os.path.join(rel, _unique(local_name(entry.name), kid, used))
            if entry.type == FOLDER:
                out.folders.append(path)
                stack.append((kid, path))
            else:
                out.files.append((path, entry))
    out.folders.sort()        # parents before children
    return out


def _count_below(listing: Listing, handle: str) -> int:
    count, frontier = 0, [handle]
    while frontier:
        frontier = [kid for h in frontier for kid in listing.children.get(h, [])]
        count += len(frontier)
    return count


# --- checking what is there ---------------------------------------------------------------
class NotAFile(MegafsError):
    """Something other than a regular file is where a file goes."""


def local_state(path: str, entry: Entry) -> str:
    """``"missing"``, ``"complete"`` (size and meta-MAC match the node's key) or
    ``"differs"``; NotAFile for a symlink, folder or device there; OSError if unreadable."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):     # never open a device or a FIFO
            raise NotAFile("something other than a file is there (a link, a folder); left "
                           "alone")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:     # swapped for a link since the lstat
            raise NotAFile("something other than a file is there; left alone") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile("something other than a file is there; left alone")
        if st.st_size != entry.size:
            return "differs"
        return "complete" if _mac_matches(fd, entry) else "differs"
    finally:
        os.close(fd)


def _mac_matches(fd: int, entry: Entry) -> bool:
    """Whether the file's bytes have the meta-MAC in the node's key (``entry.size`` bytes)."""
    assert entry.key is not None
    return fd_matches(fd, crypto.FileKey.unpack(entry.key), entry.size)


# --- the run --------------------------------------------------------------------------------
class TreeProgress:
    """One bar for many files: each file's callback reports its own bytes so far."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.bar = Transfer(label, total, stream)
        self.lock = threading.Lock()
        self.done: dict[str, int] = {}
        self.total = 0

    def file(self, handle: str) -> Callable[[int], None]:
        def report(done: int) -> None:
            with self.lock:
                self.total += done - self.done.get(handle, 0)
                self.done[handle] = done
                total = self.total
            self.bar(total)
        return report


class _Run:
    """One ``get`` of a folder link: the files to fetch, their workers, their failures."""

    def __init__(self, public: PublicFolder, root: str, force: bool, label: str,
                 files: list[tuple[str, Entry]]) -> None:
        self.public, self.root, self.force = public, root, force
        self.real_root = os.path.realpath(root)
        self.files = iter(files)
        self.count = len(files)
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.failures = 0
        self.written = self.skipped = 0
        self.progress = TreeProgress(label, sum(e.size for _, e in files))

    def one(self, dest: str, entry: Entry) -> None:
        """Skip a complete file, refuse one that differs (without ``force``), else fetch."""
        folder = os.path.realpath(os.path.dirname(dest))
        if folder != self.real_root and not folder.startswith(self.real_root + os.sep):
            raise MegafsError("its folder resolves outside %s (a symlink?); left alone"
                              % self.root)
        state = local_state(dest, entry)
        if state == "complete":
            self.progress.file(entry.handle)(entry.size)
            log.info("%s: already complete, skipped", printable(dest))
            with self.lock:
                self.skipped += 1
            return
        if state == "differs" and not self.force:
            raise MegafsError("a different file is there (not the folder's); add --force to "
                              "replace it")
        self.public.download(entry, dest, progress=self.progress.file(entry.handle),
                             cancel=self.cancel)
        log.info("%s: written (%d bytes)", printable(dest), entry.size)
        with self.lock:
            self.written += 1

    def worker(self) -> None:
        while not self.cancel.is_set():
            with self.lock:
                item = next(self.files, None)
            if item is None:
                return
            rel, entry = item
            try:
                self.one(os.path.join(self.root, rel), entry)
            except Cancelled:
                return
            except Exception as exc:    # one line per file; the rest goes on
                if self.cancel.is_set():
                    # an interruption closes the pool and removes part files under the files
                    # in flight: their errors are its doing, and its one line says so
                    return
                reason = describe(exc) if isinstance(exc, MegafsError) else \
                    getattr(exc, "strerror", None) or describe(exc)
                self.fail(rel, reason)

    def fail(self, rel: str, reason: str) -> None:
        with self.lock:
            self.failures += 1
        Transfer.note("megafs get: %s: %s" % (printable(rel), printable(str(reason))))

    def run(self, connections: int) -> None:
        """All files on up to ``FILES_AT_ONCE`` daemon threads; an interruption (Ctrl-C,
        SIGTERM) stops them, lets them remove their part files and propagates."""
        count = max(1, min(FILES_AT_ONCE, connections, self.count))
        threads = [threading.Thread(target=self.worker, daemon=True,
                                    name="megafs-getfolder-%d" % i) for i in range(count)]
        try:
            with signals_stop():
                for thread in threads:
                    thread.start()
                for thread in threads:
                    while thread.is_alive():
                        thread.join(0.2)
        except BaseException:
            self.cancel.set()
            deadline = time.monotonic() + STOP_WAIT
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            remove_partial_files()
            raise
        finally:
            self.progress.bar.finish()


def _output_folder(output: str | None, name: str, force: bool) -> str:
    """The folder the tree goes into, made if missing (its parent must exist)."""
    if output is None:
        check_remote_name(name, force)       # the folder's name lands in the current folder
        output = local_name(name)
    folder = output.rstrip(os.sep) or os.sep
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        raise MegafsError("folder %s does not exist; create it first (`mkdir -p %s`) or give "
                          "another -o" % (printable(parent), printable(parent)))
    try:
        os.mkdir(folder)
    except FileExistsError:
        if not os.path.isdir(folder):
            raise MegafsError("%s exists and is not a folder; give another -o"
                              % printable(folder)) from None
    return folder


def _make_folders(root: str, folders: list[str]) -> set[str]:
    """Make every folder (parents first); return those that could not be (reported)."""
    bad: set[str] = set()
    for rel in folders:
        if any(rel.startswith(b + os.sep) for b in bad):
            continue                          # below a folder already reported
        path = os.path.join(root, rel)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                bad.add(rel)
                Transfer.note("megafs get: %s: something other than a folder is there (a "
                              "file, a link); left alone with what is inside" % printable(rel))
        except OSError as exc:
            bad.add(rel)
            Transfer.note("megafs get: %s: %s" % (printable(rel), exc.strerror or exc))
    return bad


def _one_file_dest(output: str | None, name: str, force: bool) -> str:
    """Where ``/file/H`` goes: as a file link's ``get`` (``-o`` a file or a folder)."""
    if not output or output.endswith(os.sep) or os.path.isdir(output):
        check_remote_name(name, force)
        folder = output or os.curdir
        if not os.path.isdir(folder):
            raise MegafsError("folder %s does not exist; create it first (`mkdir -p %s`)"
                              % (printable(folder), printable(folder)))
        return os.path.join(folder, local_name(name))
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise MegafsError("folder %s does not exist; create it first (`mkdir -p %s`) or give "
                          "another -o" % (printable(folder), printable(folder)))
    return output


def run_folder_get(args: argparse.Namespace) -> int:
    """``megafs get`` of a folder link (``args.parsed``, a ``FolderLink``); exit code."""
    link = args.parsed
    if args.account:
        raise MegafsError("--account is for file links; a folder link is read without an "
                          "account (leave --account out)")
    with PublicFolder(link, api=args.api, connections=args.connections) as public:
        public.client.transfer_quota.waiting = not args.no_wait_quota
        public.client.transfer_quota.on_wait = quota_line
        try:
            listing = public.listing()
        except MegaError as exc:
            if exc.code == ApiCode.ENOENT:
                raise MegaError(ApiCode.ENOENT, "no folder behind this link: its owner "
                                "removed the link or the folder, or a wrong handle") from None
            raise
        top = listing.root
        item = link.file or link.folder
        if item is not None:
            entry = listing.entries.get(item)
            if entry is None or entry.name is None:
                raise MegafsError("the item %s of the link is not in the folder, or cannot be "
                                  "read with the link's key" % item)
            if entry.type == FILE:
                dest = _one_file_dest(args.output, entry.name, args.force)
                run = _Run(public, os.path.dirname(os.path.abspath(dest)), args.force,
                           entry.name, [(os.path.basename(dest), entry)])
                run.run(args.connections)
                return 1 if run.failures else 0
            top = item
        name = listing.entries[top].name
        assert name is not None            # the root decrypts (else IntegrityError)
        root = _output_folder(args.output, name, args.force)
        todo = plan(listing, top)
        bad = _make_folders(root, todo.folders)
        files = [(rel, e) for rel, e in todo.files
                 if not any(rel.startswith(b + os.sep) for b in bad)]
        run = _Run(public, root, args.force, name, files)
        run.run(args.connections)
        log.info("%d file(s) written, %d already complete, %d failed", run.written,
                 run.skipped, run.failures)
    # a folder that could not be made, and everything below it, did not arrive
    failed = run.failures + len(todo.files) - len(files) + sum(
        1 for rel in todo.folders if any(rel == b or rel.startswith(b + os.sep) for b in bad))
    if todo.unreadable:
        Transfer.note("megafs get: %d item(s) of the folder cannot be read with the link's key "
                      "(no key for them in the link) and were left out" % todo.unreadable)
    if failed:
        raise MegafsError("%d item(s) not downloaded (see above); run the same command again "
                          "to finish (complete files are skipped)" % failed)
    return 1 if todo.unreadable else 0
