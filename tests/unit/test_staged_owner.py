"""The staged file owns its state (issue 21, step 1): no other module assigns a field of a
``StagedFile`` or of its record, the write-back queue's parts use no private member of another
object, ``writeback/`` has no import loop (counting imports inside functions and
``TYPE_CHECKING`` blocks), and the transitions do what the queue relies on."""
from __future__ import annotations

import ast
import dataclasses
import threading
from pathlib import Path

from megafs.errors import MegaError
from megafs.writeback import record as R
from megafs.writeback.record import Record
from megafs.writeback.staged import StagedFile

ROOT = Path(__file__).resolve().parent.parent.parent / "megafs"
FIELDS = {f.name for f in dataclasses.fields(StagedFile)}
RECORD_FIELDS = {f.name for f in dataclasses.fields(Record)}
# attributes of the same name that belong to other objects (not staged files)
NOT_STAGED = {("api/session.py", "session", "path")}


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        out: list[ast.expr] = []
        for t in node.targets:
            out += list(t.elts) if isinstance(t, (ast.Tuple, ast.List)) else [t]
        return out
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    return []


def assignments_outside(module: str = "writeback/staged.py") -> list[str]:
    """``file:line expression`` of every assignment to a staged file's field (``x.busy =``,
    ``x.rec =``, ``x.rec.size =``, ...) outside ``module``; ``self.<name>`` of other classes
    is not one."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel == module or rel.startswith("server/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _targets(node):
                if not isinstance(target, ast.Attribute):
                    continue
                base = target.value
                text = ast.unparse(target)
                if isinstance(base, ast.Attribute) and base.attr == "rec" \
                        and target.attr in RECORD_FIELDS:
                    found.append("%s:%d %s" % (rel, node.lineno, text))
                elif target.attr in FIELDS and not (isinstance(base, ast.Name)
                                                    and base.id == "self") \
                        and (rel, ast.unparse(base), target.attr) not in NOT_STAGED:
                    found.append("%s:%d %s" % (rel, node.lineno, text))
    return found


def test_no_staged_field_assigned_outside_its_module():
    assert assignments_outside() == []


def test_the_check_finds_an_assignment(tmp_path):
    # the check itself can fail: the same scan over a copy of the tree with one assignment
    global ROOT
    saved = ROOT
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mod.py").write_text("def f(sf):\n    sf.busy = True\n"
                                           "    sf.rec.size = 3\n    sf.rec = None\n")
    ROOT = tmp_path
    try:
        assert len(assignments_outside()) == 3
    finally:
        ROOT = saved


PARTS = ["committer", "scheduler", "recovery", "control", "state", "staged"]


def test_queue_parts_use_no_private_member():
    wrong = []
    for part in PARTS:
        path = ROOT / "writeback" / (part + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") \
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                wrong.append("%s:%d %s" % (part, node.lineno, ast.unparse(node)))
            if isinstance(node, ast.Name) and node.id in ("wb", "WriteBack"):
                wrong.append("%s:%d %s" % (part, node.lineno, node.id))
    assert wrong == []


def _all_imports(path: Path) -> set[str]:
    """writeback modules ``path`` imports anywhere: top level, in functions, under
    ``TYPE_CHECKING``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "megafs.writeback."):
            out.add(node.module.split(".")[2])
    return out


def test_writeback_has_no_import_loop_hidden_or_not():
    graph = {p.stem: _all_imports(p) for p in (ROOT / "writeback").glob("*.py")}
    cycles = []
    state: dict[str, int] = {}

    def visit(mod: str, stack: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[mod] = 2
    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert cycles == []
    assert "queue" not in set().union(*(graph[p] for p in PARTS))


# --- the transitions ------------------------------------------------------------------------
class Told:
    def __init__(self) -> None:
        self.files: list[StagedFile] = []

    def __call__(self, sf: StagedFile) -> None:
        self.files.append(sf)


def new_file(told: Told | None = None) -> StagedFile:
    rec = Record("0123456789abcdef", "P", "a.txt", has_copy=True, local_meta=True)
    return StagedFile(rec, "/nonexistent/staged", tell=told or Told())


def test_a_write_cancels_the_upload_in_flight_and_a_flush_makes_a_generation():
    sf = new_file()
    sf.started_new()
    sf.upload_started()
    assert sf.busy and sf.job == (0, 1) and sf.cancel is not None
    sf.written(size=5, mtime_ns=7)
    assert sf.cancel.is_set() and sf.dirty and sf.rec.size == 5 and sf.rec.mtime_ns == 7
    assert not sf.current_job                       # the upload is of older bytes
    assert sf.put_planned() is None and sf.token is None
    assert sf.flushed(sf.version, 5)
    assert not sf.dirty and sf.rec.generation == 1 and not sf.rec.put_tried


def test_a_finished_upload_is_committed_once():
    told = Told()
    sf = new_file(told)
    sf.started_new()
    assert sf.flushed(sf.version, 0)
    sf.upload_started()
    sf.uploaded(("uploaded", "crc"))
    planned = sf.put_planned()
    assert planned == (("uploaded", "crc"), 1) and sf.rec.put_tried
    sf.put_done()
    sf.committed(1, "H1", ["H2"])
    assert (sf.rec.committed, sf.rec.committed_gen, sf.rec.replaces) == ("H1", 1, ["H2"])
    sf.released()
    assert not sf.busy and sf.token is None and told.files[-1] is sf


def test_placed_here_is_chosen_followed_is_not():
    sf = new_file()
    sf.change(lambda rec: dataclasses.replace(rec, local_meta=False))
    sf.placed("Q", "b.txt", chosen=False, path="/d/b.txt")
    assert (sf.rec.parent, sf.rec.name, sf.rec.path) == ("Q", "b.txt", "/d/b.txt")
    assert not sf.rec.local_meta and not sf.meta_dirty
    sf.placed("Q", "c.txt", chosen=True, path="/d/c.txt")
    assert sf.rec.local_meta and sf.meta_dirty
    sf.followed(42)
    assert sf.rec.mtime_ns == 42


def test_a_failure_backs_off_and_a_refused_put_is_not_tried():
    sf = new_file()
    sf.change(R.put_tried)
    sf.failed(MegaError(-11, "access denied"), "commit", refused=True)
    assert sf.rec.attempts == 1 and sf.rec.next_try > 0 and not sf.rec.put_tried
    sf.retry()
    assert sf.rec.attempts == 0 and sf.rec.next_try == 0


def test_unlink_cancels_and_says_whether_nodes_must_go():
    sf = new_file()
    sf.upload_started()
    assert sf.unlinked() is False and sf.cancel is not None and sf.cancel.is_set()
    other = new_file()
    other.change(lambda rec: dataclasses.replace(rec, committed="H"))
    assert other.unlinked() is True and other.rec.unlinked


def test_open_counts_refuse_a_retired_file():
    sf = new_file()
    assert sf.opened(True) and (sf.handles, sf.writers) == (1, 1)
    sf.force()
    sf.closed(True)
    assert (sf.handles, sf.writers, sf.forced) == (0, 0, False)
    sf.retire()
    assert not sf.opened(False)


def test_the_lock_is_shared_and_reentrant():
    lock = threading.Condition(threading.RLock())
    sf = StagedFile(Record("r", "P", "n"), "/x", lock=lock)
    with lock:
        sf.written(size=1)          # a caller holding the lock may call a transition
    assert sf.version == 1
