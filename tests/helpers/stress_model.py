"""A model-based stress test of a real mount: random operation sequences (hypothesis' stateful
testing) checked step by step against an in-memory model of the files (issue 9, item 2).

The machine works in one folder of a mounted megafs.  Its operations are the ones everyday
programs make: create/truncate-write, ``O_APPEND`` writes, ``pwrite`` at any offset,
``truncate``, rename (also over an existing file), unlink, open-and-close without a change,
``utime`` with nanoseconds, file descriptors held open across unlink and rename-over (reads,
writes, ``fstat``, ``fsync`` through them), reads, and short pauses so that uploads finish in
between.  After every step the folder listing, sizes, contents and mtimes must match the model
(an mtime, once seen, never moves by itself).  The final model of each run is returned so the
caller can check it again after a remount and against the server's node list.

Run as a module it is one worker of the long run: ``python tests/helpers/stress_model.py FOLDER SEED
EXAMPLES STEPS OUT.json`` runs EXAMPLES sequences in sub-folders of FOLDER and writes the
final models (hex data, mtimes) and counts to OUT.json.

Atomic saves (issue 22): each sequence also has a folder ``run-N.w`` beside its own, where
``atomic_save`` writes a temporary file and renames it over ``w``, the way editors and config
writers save.  Every saved content is sealed (length and SHA-256 in a header), so a concurrent
reader needs no model to tell a whole version from a mixed one: ``python
tests/helpers/stress_model.py --reader BASE OUT.json STOPFILE`` reads every ``w`` under BASE in a
loop (some reads in two halves with a pause, on one descriptor, across saves) until STOPFILE
exists, and reports each error or broken content it saw; once a ``w`` has been seen, ENOENT is
an error too.  ESTALE, which libfuse's high-level API can give an open racing two saves (see
``test_atomic_save_is_atomic_for_readers``), is counted apart.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

NAMES = ["a", "b", "c", "sub/d", "sub/e"]
DATA = st.binary(min_size=0, max_size=3000) | st.sampled_from([b"", b"x" * 70000])


@dataclass(eq=False)
class Inode:
    """The model of one file's bytes and mtime (shared by every name and fd that has it)."""

    data: bytearray = field(default_factory=bytearray)
    mtime_ns: int | None = None          # pinned once observed; None until then


@dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    divergences: list[str] = field(default_factory=list)


class MountMachine(RuleBasedStateMachine):
    """One random sequence in ``base / run-N``; see the module docstring."""

    base: Path = Path("/nonexistent")
    results: list[tuple[Path, dict[str, Inode]]] = []
    stats = Stats()
    counter = 0

    def __init__(self) -> None:
        super().__init__()
        MountMachine.counter += 1
        self.dir = self.base / ("run-%d-%d" % (os.getpid(), MountMachine.counter))
        self.names: dict[str, Inode] = {}
        self.fds: list[tuple[int, Inode, bool]] = []     # (fd, inode, writable)
        self.wdir = self.dir.with_name(self.dir.name + ".w")   # atomic saves of ``w``
        self.saved: bytes | None = None

    @initialize()
    def setup(self) -> None:
        (self.dir / "sub").mkdir(parents=True)
        self.wdir.mkdir()
        MountMachine.stats.examples += 1

    @rule(data=DATA)
    def atomic_save(self, data: bytes) -> None:
        """Write a temporary file and rename it over ``w`` (a concurrent reader watches)."""
        self._step()
        body = seal(data)
        tmp = self.wdir / ".w.tmp"
        with open(tmp, "wb") as fh:
            fh.write(body)
        os.rename(tmp, self.wdir / "w")
        self.saved = body
        self._same((self.wdir / "w").read_bytes(), bytearray(body), "w after a save")

    def p(self, name: str) -> Path:
        return self.dir / name

    def _step(self) -> None:
        MountMachine.stats.steps += 1

    def _pin(self, name: str) -> None:
        """Content changed: the mtime is whatever the mount says now, and must stay so."""
        self.names[name].mtime_ns = os.stat(self.p(name)).st_mtime_ns

    # --- whole-file operations ----------------------------------------------------------------
    @rule(name=st.sampled_from(NAMES), data=DATA)
    def write_new(self, name: str, data: bytes) -> None:
        self._step()
        fd = os.open(self.p(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
        inode = self.names.get(name)
        if inode is None:
            inode = self.names[name] = Inode()
        inode.data[:] = data
        self._pin(name)

    @rule(name=st.sampled_from(NAMES), data=st.binary(min_size=1, max_size=200))
    def append(self, name: str, data: bytes) -> None:
        self._step()
        fd = os.open(self.p(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)
        inode = self.names.setdefault(name, Inode())
        inode.data += data
        self._pin(name)

    @precondition(lambda self: self.names)
    @rule(pick=st.integers(0, 100), offset=st.integers(0, 5000),
          data=st.binary(min_size=1, max_size=300))
    def pwrite(self, pick: int, offset: int, data: bytes) -> None:
        self._step()
        name = sorted(self.names)[pick % len(self.names)]
        fd = os.open(self.p(name), os.O_RDWR)
        os.pwrite(fd, data, offset)
        os.close(fd)
        model_pwrite(self.names[name].data, offset, data)
        self._pin(name)

    @precondition(lambda self: self.names)
    @rule(pick=st.integers(0, 100), length=st.integers(0, 6000))
    def truncate(self, pick: int, length: int) -> None:
        self._step()
        name = sorted(self.names)[pick % len(self.names)]
        os.truncate(self.p(name), length)
        inode = self.names[name]
        if len(inode.data) != length:
            model_truncate(inode.data, length)
            self._pin(name)

    @precondition(lambda self: self.names)
    @rule(pick=st.integers(0, 100), dst=st.sampled_from(NAMES))
    def rename(self, pick: int, dst: str) -> None:
        self._step()
        src = sorted(self.names)[pick % len(self.names)]
        os.rename(self.p(src), self.p(dst))
        if src != dst:
            self.names[dst] = self.names.pop(src)

    @precondition(lambda self: self.names)
    @rule(pick=st.integers(0, 100))
    def unlink(self, pick: int) -> None:
        self._step()
        name = sorted(self.names)[pick % len(self.names)]
        os.unlink(self.p(name))
        del self.names[name]
        self._check_absent(name)

    @precondition(lambda self: self.names)
    @rule(pick=st.integers(0, 100))
    def reopen_unchanged(self, pick: int) -> None:
        self._step()
        name = sorted(self.names)[pick % len(self.names)]
        os.close(os.open(self.p(name), os.O_RDWR))

    @precondition(lambda self: self.names)
    @rule(pick=st.integers(0, 100), mtime=st.integers(10**17, 2 * 10**18))
    def utime(self, pick: int, mtime: int) -> None:
        self._step()
        name = sorted(self.names)[pick % len(self.names)]
        os.utime(self.p(name), ns=(mtime, mtime))
        self.names[name].mtime_ns = mtime

    @precondition(lambda self: self.names)
    @rule(pick=st.integers(0, 100))
    def read(self, pick: int) -> None:
        self._step()
        name = sorted(self.names)[pick % len(self.names)]
        self._same(self.p(name).read_bytes(), self.names[name].data, "read " + name)

    @rule(ms=st.integers(0, 40))
    def pause(self, ms: int) -> None:
        time.sleep(ms / 1000)

    # --- descriptors held open ----------------------------------------------------------------
    @precondition(lambda self: self.names and len(self.fds) < 3)
    @rule(pick=st.integers(0, 100), writable=st.booleans())
    def open_fd(self, pick: int, writable: bool) -> None:
        self._step()
        name = sorted(self.names)[pick % len(self.names)]
        fd = os.open(self.p(name), os.O_RDWR if writable else os.O_RDONLY)
        self.fds.append((fd, self.names[name], writable))

    @precondition(lambda self: any(w for _fd, _i, w in self.fds))
    @rule(pick=st.integers(0, 100), offset=st.integers(0, 4000),
          data=st.binary(min_size=1, max_size=200))
    def fd_write(self, pick: int, offset: int, data: bytes) -> None:
        self._step()
        writable = [(fd, inode) for fd, inode, w in self.fds if w]
        fd, inode = writable[pick % len(writable)]
        assert os.pwrite(fd, data, offset) == len(data)
        model_pwrite(inode.data, offset, data)
        inode.mtime_ns = None
        for name, other in self.names.items():
            if other is inode:
                self._pin(name)

    @precondition(lambda self: self.fds)
    @rule(pick=st.integers(0, 100))
    def fd_read_fstat(self, pick: int) -> None:
        self._step()
        fd, inode, _w = self.fds[pick % len(self.fds)]
        size = os.fstat(fd).st_size
        self._same(os.pread(fd, size + 100, 0), inode.data, "fd read")
        self._eq(size, len(inode.data), "fstat size")

    @precondition(lambda self: any(w for _fd, _i, w in self.fds))
    @rule(pick=st.integers(0, 100))
    def fd_fsync(self, pick: int) -> None:
        self._step()
        writable = [fd for fd, _inode, w in self.fds if w]
        os.fsync(writable[pick % len(writable)])

    @precondition(lambda self: self.fds)
    @rule(pick=st.integers(0, 100))
    def close_fd(self, pick: int) -> None:
        self._step()
        fd, _inode, _w = self.fds.pop(pick % len(self.fds))
        os.close(fd)

    # --- checks -------------------------------------------------------------------------------
    @invariant()
    def listing_and_attributes_match(self) -> None:
        if not self.dir.exists():
            return
        want_top = sorted({n.split("/")[0] for n in self.names} | {"sub"})
        self._eq(sorted(os.listdir(self.dir)), want_top, "listing")
        want_sub = sorted(n.split("/")[1] for n in self.names if n.startswith("sub/"))
        self._eq(sorted(os.listdir(self.dir / "sub")), want_sub, "listing of sub")
        for name, inode in self.names.items():
            st_ = os.stat(self.p(name))
            self._eq(st_.st_size, len(inode.data), "size of " + name)
            if inode.mtime_ns is not None:
                self._eq(st_.st_mtime_ns, inode.mtime_ns, "mtime of " + name)

    def _check_absent(self, name: str) -> None:
        try:
            os.stat(self.p(name))
        except FileNotFoundError:
            return
        self._fail("%s still exists right after unlink" % name)

    def _same(self, got: bytes, want: bytearray, what: str) -> None:
        if got != bytes(want):
            self._fail("%s: %d bytes, model %d bytes (first difference at %s)"
                       % (what, len(got), len(want), _first_diff(got, bytes(want))))

    def _eq(self, got: object, want: object, what: str) -> None:
        if got != want:
            self._fail("%s: %r, model %r" % (what, got, want))

    def _fail(self, text: str) -> None:
        MountMachine.stats.divergences.append("%s: %s" % (self.dir.name, text))
        raise AssertionError(text)

    def teardown(self) -> None:
        for fd, _inode, _w in self.fds:
            os.close(fd)
        self.fds = []
        if self.dir.exists():
            MountMachine.results.append((self.dir, dict(self.names)))
        if self.saved is not None:
            MountMachine.results.append((self.wdir, {"w": Inode(bytearray(self.saved))}))


def model_pwrite(data: bytearray, offset: int, new: bytes) -> None:
    """pwrite(2) on a model file's bytes (a gap reads as zeros); also the core model's."""
    if offset > len(data):
        data.extend(bytes(offset - len(data)))
    data[offset:offset + len(new)] = new


def model_truncate(data: bytearray, length: int) -> None:
    """ftruncate(2) on a model file's bytes; also the core model's."""
    if length < len(data):
        del data[length:]
    else:
        data.extend(bytes(length - len(data)))


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def run(base: Path, seed: int, examples: int, steps: int) -> list[tuple[Path, dict[str, Inode]]]:
    """Run ``examples`` random sequences of up to ``steps`` steps in ``base``; returns the final
    model of each.  Raises AssertionError (shrunk to a short sequence) on a divergence."""
    MountMachine.base = base
    MountMachine.results = []
    cfg = settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                   database=None, derandomize=False, print_blob=True,
                   phases=[Phase.generate, Phase.shrink],
                   suppress_health_check=list(HealthCheck))
    from hypothesis import seed as with_seed

    @with_seed(seed)
    def _runner() -> None:
        run_state_machine_as_test(MountMachine, settings=cfg)
    _runner()
    return list(MountMachine.results)


SEAL = b"MFS-SAVE"


def seal(data: bytes) -> bytes:
    """``data`` behind a header of its length and SHA-256, so that a reader can check it."""
    return SEAL + len(data).to_bytes(8, "big") + hashlib.sha256(data).digest() + data


def sealed_ok(blob: bytes) -> bool:
    """``blob`` is one whole sealed version (not empty, cut, or mixed from two)."""
    head = len(SEAL) + 8 + 32
    if len(blob) < head or not blob.startswith(SEAL):
        return False
    size = int.from_bytes(blob[len(SEAL):len(SEAL) + 8], "big")
    body = blob[head:]
    return len(body) == size and hashlib.sha256(body).digest() == blob[len(SEAL) + 8:head]


def reader(base: Path, stop: Path) -> dict:
    """Read every ``*.w/w`` under ``base`` until ``stop`` exists; returns the counts and the
    problems seen (an errno other than ENOENT before the first sight, or broken content)."""
    seen: set[Path] = set()
    reads = whole = stale = 0
    problems: list[str] = []
    while not stop.exists() and len(problems) < 50:
        paths = list(base.glob("*.w/w")) + list(base.glob("*/*.w/w")) + list(seen)
        for path in set(paths):
            try:
                with open(path, "rb") as fh:
                    if reads % 3 == 0:          # one descriptor across a save
                        first = fh.read(50)
                        time.sleep(0.002)
                        blob = first + fh.read()
                    else:
                        blob = fh.read()
            except OSError as exc:
                if exc.errno == errno.ENOENT and path not in seen:
                    continue
                if exc.errno == errno.ESTALE:       # libfuse's, counted apart (README)
                    stale += 1
                    continue
                problems.append("%s: %s" % (path, errno.errorcode.get(exc.errno or 0, exc)))
                continue
            reads += 1
            seen.add(path)
            if sealed_ok(blob):
                whole += 1
            else:
                problems.append("%s: a read of %d bytes is not one whole version"
                                % (path, len(blob)))
        time.sleep(0.001)
    return {"reads": reads, "whole": whole, "stale": stale, "files": len(seen),
            "problems": problems}


def expected_tree(results: list[tuple[Path, dict[str, Inode]]]) -> dict[str, tuple[bytes, int]]:
    """Mount-relative path -> (bytes, mtime ns) for every file the runs left."""
    out = {}
    for folder, names in results:
        for name, inode in names.items():
            out[str(folder / name)] = (bytes(inode.data), inode.mtime_ns or -1)
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["--reader"]:
    report = reader(Path(sys.argv[2]), Path(sys.argv[4]))
    Path(sys.argv[3]).write_text(json.dumps(report))
elif __name__ == "__main__":
    folder, seed, examples, steps, out_path = sys.argv[1:6]
    started = time.monotonic()
    error = ""
    try:
        results = run(Path(folder), int(seed), int(examples), int(steps))
    except BaseException as exc:        # reported through the JSON file
        results = list(MountMachine.results)
        error = "%s: %s" % (type(exc).__name__, str(exc)[:2000])
    with open(out_path, "w") as fh:
        json.dump({"files": {p: [d.hex(), m] for p, (d, m) in expected_tree(results).items()},
                   "examples": MountMachine.stats.examples, "steps": MountMachine.stats.steps,
                   "divergences": MountMachine.stats.divergences, "error": error,
                   "seconds": time.monotonic() - started}, fh)
    sys.exit(1 if error else 0)
