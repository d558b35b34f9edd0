"""The model-based test against the filesystem core without FUSE (issue 21 step 4).

Random operation sequences (hypothesis' stateful testing) drive the object the FUSE adapter
calls (``MountRuntime.fs``: the core and its ``.link`` layer) through its public operations
only -- create, open, read, write, truncate (by path and by handle), rename (also over a file),
unlink, mkdir, rmdir, flush and release, fsync, readdir, getattr, link creation (reading
``X.link`` or ``user.mega.link``) and link revocation (unlinking ``X.link``) -- with up to three
handles held open across unlink and rename.  The mount runs in this process against one real
local server per module, over HTTP(S) with real crypto.

After every step the listings, sizes and the errno of every name the model does not have are
checked against an in-memory model; every read (by path or through a held handle) must give the
model's bytes.  Links: a link read twice with no change between is the same link, a link read
after a revocation is a new one, and a revoked link is dead at once.  ``settle`` steps (and
the end of every sequence) close the handles that hold uploads or removed files back (read-only
handles of live files stay open), wait until every file says ``user.mega.state: uploaded``, and
then compare the server's view (a fresh listing by another client, each file downloaded through
the API): the same folders and files with the same sizes and bytes, a public link exactly on
the files whose link was not revoked (so a revoked link stays revoked across a commit cycle),
the last link read still that link when nothing changed since, and every other link ever read
dead.

Derandomized (the same sequences on every run, 10-20 s on two busy cores);
``MEGAFS_CORE_MODEL_EXAMPLES``, ``MEGAFS_CORE_MODEL_STEPS`` and ``MEGAFS_CORE_MODEL_SEED`` (other
sequences) run more: on 2026-12-07 seeds 1-7 of 120 sequences of 50 steps (about 35,000 steps)
passed; seed 8 found the idle reader of
``test_an_idle_reader_leaves_no_second_name_for_other_clients`` (fixed: readers switch to the
staged copy when it is made).  The mount-level version is
``tests/mount/test_stress.py``.
"""
from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, seed, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

from megafs.api.client import MegaClient
from megafs.api.links import format_link
from megafs.errors import FsError, MegafsError
from megafs.mount.runtime import MountConfig, MountRuntime
from helpers.mount import listing_paths, wait_for
from helpers.stress_model import model_pwrite, model_truncate

EXAMPLES = int(os.environ.get("MEGAFS_CORE_MODEL_EXAMPLES", "50"))
STEPS = int(os.environ.get("MEGAFS_CORE_MODEL_STEPS", "50"))
SEED = os.environ.get("MEGAFS_CORE_MODEL_SEED")       # other sequences than the fixed ones
SETTLE_WAIT = 10.0       # seconds for the queue and the server's view to settle (~0.1 s)
LINK_WAIT = 15.0         # seconds a link read waits for its upload (~0.1 s)

DIRS = ["d", "e"]
NAMES = ["a", "b", "d/c", "d/f", "e/c"]
DATA = (st.binary(min_size=0, max_size=2000)
        | st.sampled_from([b"", b"z" * 131073, bytes(range(256)) * 800]))
PICK = st.integers(0, 100)


@dataclass(eq=False)
class Inode:
    """The model of one file: its bytes and its link (shared by every name and handle)."""

    data: bytearray = field(default_factory=bytearray)
    link: str | None = None       # the last link read for it
    link_current: bool = False    # nothing written, truncated or revoked since that read
    revoked: bool = False         # `rm X.link` and no read of the link since


@dataclass
class Handle:
    fh: int
    inode: Inode
    writable: bool


class Env:
    """The module's mount (without FUSE), another client on its account, a public client."""

    def __init__(self, url: str, state_dir: str) -> None:
        self.url = url
        self.rt = MountRuntime(MountConfig(state_dir=state_dir, api=url, uploads=4,
                                           link_timeout=LINK_WAIT)).__enter__()
        self.rt.wb.start()
        self.fs = self.rt.fs
        self.observer = MegaClient.open(api=url, state_dir=state_dir)
        self.public = MegaClient.public(api=url)
        self.examples = self.steps = self.settles = self.link_reads = 0
        self.counts: dict[str, int] = {}

    def close(self) -> None:
        self.public.close()
        self.observer.close()
        self.rt.close()


class CoreMachine(RuleBasedStateMachine):
    """One random sequence in its own folder ``/mN``; see the module docstring."""

    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.env.examples += 1
        self.fs = self.env.fs
        self.base = "/m%d" % self.env.examples
        self.dirs: set[str] = set()
        self.names: dict[str, Inode] = {}
        self.handles: list[Handle] = []
        self.seen_links: set[str] = set()
        self.revoked_links: set[str] = set()
        self.since_settle = 0

    @initialize(data=DATA)
    def setup(self, data: bytes) -> None:
        self.fs.mkdir(self.base, 0o755)
        self.folder("d")
        self.write_new("a", data)

    # --- helpers --------------------------------------------------------------------------
    def p(self, name: str) -> str:
        return self.base + "/" + name

    def pick(self, pick: int) -> str:
        return sorted(self.names)[pick % len(self.names)]

    def parent_missing(self, name: str) -> bool:
        return "/" in name and name.split("/")[0] not in self.dirs

    def expect_errno(self, code: int, op, *args) -> None:
        with pytest.raises(FsError) as ei:
            op(*args)
        assert ei.value.errno == code, (op, args, ei.value)

    def close_handle(self, h: Handle) -> None:
        self.fs.flush(h.fh)            # what the kernel sends on close(2), then the release
        self.fs.release(h.fh)

    def read_path(self, path: str) -> bytes:
        fh = self.fs.open(path, os.O_RDONLY)
        try:
            return self.read_fh(fh)
        finally:
            self.fs.release(fh)

    def read_fh(self, fh: int) -> bytes:
        out, offset = [], 0
        while True:
            chunk = self.fs.read(fh, 131072, offset)
            if not chunk:
                return b"".join(out)
            out.append(chunk)
            offset += len(chunk)

    def content_changed(self, inode: Inode) -> None:
        inode.link_current = False

    def step(self, name: str) -> None:
        self.env.counts[name] = self.env.counts.get(name, 0) + 1
        self.env.steps += 1
        self.since_settle += 1

    # --- whole files by path -----------------------------------------------------------------
    @rule(name=st.sampled_from(NAMES), data=DATA)
    def write_new(self, name: str, data: bytes) -> None:
        """``open(O_CREAT|O_TRUNC)``, write, close."""
        self.step("write_new")
        if self.parent_missing(name):
            self.expect_errno(errno.ENOENT, self.fs.create, self.p(name),
                              os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            return
        fh = self.fs.create(self.p(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for offset in range(0, len(data), 65536):
            assert self.fs.write(fh, data[offset:offset + 65536], offset) == min(
                65536, len(data) - offset)
        self.fs.flush(fh)
        self.fs.release(fh)
        inode = self.names.setdefault(name, Inode())
        inode.data[:] = data
        self.content_changed(inode)

    @precondition(lambda self: self.names)
    @rule(pick=PICK, offset=st.integers(0, 3000), data=st.binary(min_size=1, max_size=300))
    def pwrite(self, pick: int, offset: int, data: bytes) -> None:
        self.step("pwrite")
        name = self.pick(pick)
        fh = self.fs.open(self.p(name), os.O_RDWR)
        assert self.fs.write(fh, data, offset) == len(data)
        self.fs.flush(fh)
        self.fs.release(fh)
        model_pwrite(self.names[name].data, offset, data)
        self.content_changed(self.names[name])

    @precondition(lambda self: self.names)
    @rule(pick=PICK, length=st.integers(0, 4000))
    def truncate(self, pick: int, length: int) -> None:
        self.step("truncate")
        name = self.pick(pick)
        self.fs.truncate(self.p(name), length)
        inode = self.names[name]
        if length != len(inode.data):
            model_truncate(inode.data, length)
            self.content_changed(inode)

    @precondition(lambda self: self.names)
    @rule(pick=PICK)
    def read(self, pick: int) -> None:
        self.step("read")
        name = self.pick(pick)
        assert self.read_path(self.p(name)) == bytes(self.names[name].data), name

    @precondition(lambda self: self.names)
    @rule(pick=PICK, dst=st.sampled_from(NAMES))
    def rename(self, pick: int, dst: str) -> None:
        self.step("rename")
        src = self.pick(pick)
        if self.parent_missing(dst):
            self.expect_errno(errno.ENOENT, self.fs.rename, self.p(src), self.p(dst))
            return
        self.fs.rename(self.p(src), self.p(dst))
        if src != dst:
            self.names[dst] = self.names.pop(src)

    @precondition(lambda self: self.names)
    @rule(pick=PICK)
    def unlink(self, pick: int) -> None:
        self.step("unlink")
        name = self.pick(pick)
        self.fs.unlink(self.p(name))
        del self.names[name]

    @rule(name=st.sampled_from(NAMES))
    def missing_names_fail(self, name: str) -> None:
        """Operations on a name that does not exist give ENOENT (and change nothing)."""
        self.step("missing_names_fail")
        if name in self.names:
            return
        code = errno.ENOENT
        self.expect_errno(code, self.fs.open, self.p(name), os.O_RDONLY)
        self.expect_errno(code, self.fs.unlink, self.p(name))
        self.expect_errno(code, self.fs.truncate, self.p(name), 0)
        self.expect_errno(code, self.fs.getxattr, self.p(name), "user.mega.link")
        self.expect_errno(code, self.fs.unlink, self.p(name) + ".link")

    # --- folders -------------------------------------------------------------------------------
    @rule(d=st.sampled_from(DIRS))
    def folder(self, d: str) -> None:
        """mkdir a missing folder, rmdir an empty one; the errno of the other cases."""
        self.step("folder")
        if d not in self.dirs:
            self.expect_errno(errno.ENOENT, self.fs.rmdir, self.p(d))
            self.fs.mkdir(self.p(d), 0o755)
            self.dirs.add(d)
            return
        self.expect_errno(errno.EEXIST, self.fs.mkdir, self.p(d), 0o755)
        if any(n.startswith(d + "/") for n in self.names):
            self.expect_errno(errno.ENOTEMPTY, self.fs.rmdir, self.p(d))
            return
        self.fs.rmdir(self.p(d))
        self.dirs.discard(d)

    @rule(src=st.sampled_from(DIRS))
    def rename_folder(self, src: str) -> None:
        """``mv d e`` (onto an empty folder too); ENOTEMPTY onto a folder with files."""
        self.step("rename_folder")
        dst = DIRS[(DIRS.index(src) + 1) % len(DIRS)]
        if src not in self.dirs:
            self.expect_errno(errno.ENOENT, self.fs.rename, self.p(src), self.p(dst))
            return
        if any(n.startswith(dst + "/") for n in self.names):
            self.expect_errno(errno.ENOTEMPTY, self.fs.rename, self.p(src), self.p(dst))
            return
        self.fs.rename(self.p(src), self.p(dst))
        self.dirs.discard(src)
        self.dirs.add(dst)
        self.names = {(dst + n[len(src):] if n.startswith(src + "/") else n): inode
                      for n, inode in self.names.items()}

    # --- handles held open ---------------------------------------------------------------------
    @precondition(lambda self: self.names and len(self.handles) < 3)
    @rule(pick=PICK, writable=st.booleans())
    def open_handle(self, pick: int, writable: bool) -> None:
        self.step("open_handle")
        name = self.pick(pick)
        fh = self.fs.open(self.p(name), os.O_RDWR if writable else os.O_RDONLY)
        self.handles.append(Handle(fh, self.names[name], writable))

    @precondition(lambda self: self.handles)
    @rule(pick=PICK, op=st.sampled_from(["read", "write", "truncate", "fsync", "close"]),
          offset=st.integers(0, 3000), data=st.binary(min_size=1, max_size=300))
    def handle(self, pick: int, op: str, offset: int, data: bytes) -> None:
        """Through a held handle: ``pread`` and ``fstat``, ``pwrite`` (EBADF on a read-only
        one), ``ftruncate`` (to ``offset``), ``fsync`` (returns once the data is on MEGA) or
        ``close``.  One rule, so that hypothesis' swarm testing does not switch the handle
        operations off one by one."""
        self.step("handle_" + op)
        h = self.handles[pick % len(self.handles)]
        if op == "read":
            assert self.fs.getattr(None, h.fh)["st_size"] == len(h.inode.data)
            assert self.read_fh(h.fh) == bytes(h.inode.data)
        elif op == "write" and not h.writable:
            self.expect_errno(errno.EBADF, self.fs.write, h.fh, data, offset)
        elif op == "write":
            assert self.fs.write(h.fh, data, offset) == len(data)
            model_pwrite(h.inode.data, offset, data)
            self.content_changed(h.inode)
        elif op == "truncate" and h.writable:
            self.fs.truncate(None, offset, h.fh)
            if offset != len(h.inode.data):
                model_truncate(h.inode.data, offset)
                self.content_changed(h.inode)
        elif op == "fsync":
            self.fs.fsync(h.fh)
        elif op == "close":
            self.handles.remove(h)
            self.close_handle(h)

    # --- links -------------------------------------------------------------------------------
    def linkable(self) -> list[str]:
        """Names whose link can be read now: a file held open for writing is not uploaded
        before it is closed (or fsync'ed), so reading its link would wait for that."""
        writing = {id(h.inode) for h in self.handles if h.writable}
        return sorted(n for n, inode in self.names.items() if id(inode) not in writing)

    @precondition(lambda self: self.linkable())
    @rule(pick=PICK)
    def cat_link(self, pick: int) -> None:
        """``cat X.link``: waits for the upload."""
        self.step("cat_link")
        self.read_link(pick, False)

    @precondition(lambda self: self.linkable())
    @rule(pick=PICK)
    def getfattr_link(self, pick: int) -> None:
        """``getfattr -n user.mega.link X``: the same."""
        self.step("getfattr_link")
        self.read_link(pick, True)

    def read_link(self, pick: int, by_xattr: bool) -> None:
        self.env.link_reads += 1
        names = self.linkable()
        name = names[pick % len(names)]
        inode = self.names[name]
        if by_xattr:
            link = self.fs.getxattr(self.p(name), "user.mega.link").decode()
        else:
            link = self.read_path(self.p(name) + ".link").decode()
            assert link.endswith("\n")
            link = link[:-1]
        assert link.startswith("https://mega.nz/file/"), link
        assert link not in self.revoked_links, "a revoked link came back for " + name
        if inode.link_current:
            assert link == inode.link, "the link of %s changed without a change" % name
        inode.link, inode.link_current, inode.revoked = link, True, False
        self.seen_links.add(link)

    @precondition(lambda self: self.names)
    @rule(pick=PICK)
    def revoke_link(self, pick: int) -> None:
        """``rm X.link``: the link it had is dead at once, and no other comes by itself."""
        self.step("revoke_link")
        name = self.pick(pick)
        inode = self.names[name]
        self.fs.unlink(self.p(name) + ".link")
        if inode.link is not None:
            self.revoked_links.add(inode.link)
            if inode.link_current:
                self.assert_dead(inode.link, "revoked link of " + name)
        inode.revoked, inode.link_current = True, False

    def assert_dead(self, link: str, what: str, wait: float = 0.0) -> None:
        """``link`` no longer opens (within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.env.public.download_info(link)
            except MegafsError:
                return
            if time.monotonic() >= deadline:
                raise AssertionError("%s still works" % what)
            time.sleep(0.1)

    # --- the server's view -----------------------------------------------------------------
    @precondition(lambda self: self.since_settle >= 6)
    @rule()
    def settle(self) -> None:
        """Close the handles that hold uploads or removed files back, wait for the queue,
        then compare what another client sees.  Read-only handles of files that still have
        a name stay open through it (the commit cycle of issue 21's revoked link)."""
        self.step("settle")
        self.since_settle = 0
        self.env.settles += 1
        live = {id(inode) for inode in self.names.values()}
        for h in [h for h in self.handles if h.writable or id(h.inode) not in live]:
            self.handles.remove(h)
            self.close_handle(h)
        for name in self.names:
            wait_for(lambda name=name: self.fs.getxattr(self.p(name), "user.mega.state")
                     == b"uploaded", timeout=SETTLE_WAIT, what="%s uploaded" % name)
        self.mismatch = ""
        try:
            view = wait_for(self.server_view_matches, timeout=SETTLE_WAIT)[0]
        except AssertionError:
            raise AssertionError("the server's view differs: " + self.mismatch) from None
        links = set()
        for name, inode in self.names.items():
            node = view[name]
            if node.public:
                link = format_link(node.public, node.key)
                links.add(link)
                if inode.link_current:
                    assert link == inode.link, "the link of %s changed by itself" % name
                got = self.download(link)
            else:
                got = self.download_node(node)
            assert got == bytes(inode.data), "%s on the server differs" % name
        # An old version's or a removed file's node is deleted once its last reader closed
        # (closed just above), in the committer's next cycle: the queue settles there too.
        # Under load that cycle ran after the checks above ("an old link still works" in
        # 2 loaded runs of tests/unit + tests/core); it must still end within SETTLE_WAIT.
        for link in sorted(self.seen_links - links):
            self.assert_dead(link, "an old link", wait=SETTLE_WAIT)

    def server_view_matches(self):
        """(name -> node of the example's files,) if another client sees exactly the model
        (folders, files, sizes, a link exactly where one was not revoked), else None."""
        prefix = self.base + "/"
        paths = {p[len(prefix):]: node for p, node in listing_paths(self.env.observer).items()
                 if p.startswith(prefix)}
        dirs = {p for p, node in paths.items() if node.is_dir}
        files = {p: node for p, node in paths.items() if not node.is_dir}
        if dirs != self.dirs or set(files) != set(self.names):
            self.mismatch = "folders %s, files %s; model %s, %s" % (
                sorted(dirs), sorted(files), sorted(self.dirs), sorted(self.names))
            return None
        for name, inode in self.names.items():
            node = files[name]
            if node.size != len(inode.data):
                self.mismatch = "%s has %d bytes, model %d" % (name, node.size,
                                                               len(inode.data))
                return None
            if bool(node.public) == inode.revoked:
                self.mismatch = "%s %s a public link, model: %s" % (
                    name, "has" if node.public else "has no",
                    "revoked" if inode.revoked else "wanted")
                return None
        return (files,)

    def download(self, link: str) -> bytes:
        dest = os.path.join(self.env.rt.cfg.state_dir, "download")
        self.env.public.download(link, dest)
        try:
            with open(dest, "rb") as fh:
                return fh.read()
        finally:
            os.unlink(dest)

    def download_node(self, node) -> bytes:
        if node.size == 0:
            return b""
        info = self.env.observer.open_download(handle=node.handle)
        return self.env.observer.read_range(info.url, node.file_key, 0, node.size)

    # --- after every step ------------------------------------------------------------------
    @invariant()
    def listing_and_sizes_match(self) -> None:
        if not self.names and not self.dirs and not self.fs.readdir(self.base):
            return
        top = sorted({n for n in self.names if "/" not in n} | self.dirs)
        assert self.fs.readdir(self.base) == top
        for d in self.dirs:
            assert self.fs.readdir(self.p(d)) == sorted(
                n.split("/")[1] for n in self.names if n.startswith(d + "/"))
        for name in NAMES:
            if name in self.names:
                assert self.fs.getattr(self.p(name))["st_size"] == len(self.names[name].data)
            else:
                self.expect_errno(errno.ENOENT, self.fs.getattr, self.p(name))
        for d in DIRS:
            if d not in self.dirs:
                self.expect_errno(errno.ENOENT, self.fs.readdir, self.p(d))

    def teardown(self) -> None:
        """Every sequence ends with a settle of everything (unless it failed already)."""
        failing = sys.exc_info()[0] is not None
        while self.handles:
            self.close_handle(self.handles.pop())
        if not failing:
            self.settle()


@pytest.fixture(scope="module")
def env(module_server, tmp_path_factory):
    e = Env(module_server.url, str(tmp_path_factory.mktemp("model") / "state"))
    yield e
    e.close()


@pytest.mark.slow
@pytest.mark.timeout(900)     # a failure is shrunk (each try can wait SETTLE_WAIT) and printed
def test_core_against_the_model(env):
    started = time.monotonic()
    CoreMachine.env = env
    cfg = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                   database=None, derandomize=SEED is None, print_blob=True,
                   phases=[Phase.generate, Phase.shrink],
                   suppress_health_check=list(HealthCheck))
    if SEED is None:
        run_state_machine_as_test(CoreMachine, settings=cfg)
    else:
        seed(int(SEED))(lambda: run_state_machine_as_test(CoreMachine, settings=cfg))()
    print("\ncore-model: examples=%d steps=%d settles=%d link-reads=%d seconds=%.1f\n  %s"
          % (env.examples, env.steps, env.settles, env.link_reads,
             time.monotonic() - started,
             " ".join("%s=%d" % item for item in sorted(env.counts.items()))))
    assert env.examples >= EXAMPLES and env.settles > 0 and env.link_reads > 0


def test_a_handle_reads_its_removed_file_after_its_folder_is_removed(env):
    """``rm -r d`` while a program reads ``d/x``: POSIX keeps the open file readable.  The
    folder's delete took the node of the removed (and not staged) file with it, and the next
    read through the handle failed with EIO ("the file's node is gone from MEGA").  The node
    now waits in the Rubbish Bin until the last close, and is deleted then."""
    fs, data = env.fs, os.urandom(200_000)
    fs.mkdir("/rmdir-open", 0o755)
    for name, writable in (("r", False), ("w", True)):
        path = "/rmdir-open/" + name
        fh = fs.create(path, os.O_WRONLY | os.O_CREAT, 0o644)
        fs.write(fh, data, 0)
        fs.flush(fh)
        fs.release(fh)
        fs.getxattr(path, "user.mega.link")
        # retired: the name shows the remote node, no staged copy is left
        wait_for(lambda path=path: getattr(env.rt.core.ns.resolve(path), "sf", None) is None,
                 what="the staged copy retired")
    gone = [fs.getxattr("/rmdir-open/" + name, "user.mega.handle").decode()
            for name in ("r", "w")]
    handles = {name: fs.open("/rmdir-open/" + name, os.O_RDWR if name == "w" else os.O_RDONLY)
               for name in ("r", "w")}
    fs.unlink("/rmdir-open/r")
    fs.unlink("/rmdir-open/w")
    fs.rmdir("/rmdir-open")
    assert fs.read(handles["r"], 10, 150_000) == data[150_000:150_010]
    assert fs.write(handles["w"], b"new", 5) == 3            # brings the old bytes first
    assert fs.read(handles["w"], 10, 0) == data[:5] + b"new" + data[8:10]
    for fh in handles.values():
        fs.flush(fh)
        fs.release(fh)
    wait_for(lambda: not [n for n in listing_paths(env.observer) if "rmdir-open" in n],
             what="the folder gone")
    wait_for(lambda: not {n.get("h") for n in env.observer.fetch().nodes} & set(gone),
             what="the removed files' nodes deleted, also from the Rubbish Bin")


def test_an_idle_reader_leaves_no_second_name_for_other_clients(env):
    """Found by the model above (shrunk): ``setup(data=b'')``, ``cat_link``, ``cat_link``,
    ``open_handle(writable=False)``, ``pwrite(offset=0, data=b'\\x00')``, ``settle``: the
    server's view had files ``['a', 'a (HANDLE)']``, the model ``['a']``."""
    fs = env.fs
    fs.mkdir("/idle-reader", 0o755)
    path = "/idle-reader/a"
    fh = fs.create(path, os.O_WRONLY | os.O_CREAT, 0o644)
    fs.flush(fh)
    fs.release(fh)
    fs.getxattr(path, "user.mega.link")
    wait_for(lambda: getattr(env.rt.core.ns.resolve(path), "sf", None) is None,
             what="the staged copy retired")
    reader = fs.open(path, os.O_RDONLY)
    try:
        fh = fs.open(path, os.O_RDWR)
        fs.write(fh, b"\x00", 0)
        fs.flush(fh)
        fs.release(fh)
        fs.getxattr(path, "user.mega.link")         # the new version is on MEGA
        wait_for(lambda: fs.getxattr(path, "user.mega.state") == b"uploaded", what="uploaded")
        time.sleep(1)                                # committer rounds
        names = sorted(p for p in listing_paths(env.observer) if p.startswith("/idle-reader/"))
        assert names == [path]
        assert fs.read(reader, 10, 0) == b"\x00"    # the reader sees the write (POSIX)
    finally:
        fs.release(reader)
