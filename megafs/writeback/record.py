"""One file's write-back record: its durable fields and the pure rules that move it along.

A ``Record`` is what ``queue.sqlite`` stores for a file with local state (see
``megafs/ARCHITECTURE.md`` for the whole state machine).  Nothing here does I/O, takes a lock
or logs: the functions look at a record (and, where needed, the remote node it refers to) and
say what must happen next, or return the record after an event.  Callers hold the write-back
lock around them.

Vocabulary:

* *generation* counts durable versions of the content: 0 is the content of the node the file
  started from (``committed`` with ``committed_gen == 0``); every flush that saw new writes
  makes ``generation += 1``.  ``upload_id`` (``rid.generation``) goes into the committed node's
  ``mfs`` attribute, so a commit that reached MEGA just before a crash is recognised later.
* *committed* is the node that holds content generation ``committed_gen``.  When
  ``committed_gen < generation`` the content must be uploaded again; the node becomes an old
  version (``replaces``) once the new one exists.
* *location* (``parent``, ``name``, ``mtime_ns``) is where and how the mount shows the file;
  the committed node is brought in line with it (``a``/``m``) after any content commit.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Callable


class Step(enum.Enum):
    """The next piece of work for a record (``plan``)."""

    IDLE = "idle"          # nothing to do now (waiting for a writer, a back-off or a retry)
    UPLOAD = "upload"      # send the staged content, then commit it with ``p``
    FIX = "fix"            # move/rename/touch the committed node to the file's location
    EXPORT = "export"      # make the public link of a node we committed
    CLEANUP = "cleanup"    # delete old versions (``replaces``) now that the new node exists
    DELETE = "delete"      # the file was unlinked: delete its nodes (once no handle is open)
    DONE = "done"          # the remote node matches the file: nothing left to send


# Shown in ``user.mega.state`` and ``megafs status``.
PENDING, UPLOADING, UPLOADED, FAILED = "pending", "uploading", "uploaded", "failed"


@dataclass
class Record:
    """The durable part of a file with local state (one row of ``queue.sqlite``)."""

    rid: str                         # random id (16 hex digits); names the staged copy
    parent: str                      # folder handle the mount shows the file in
    name: str                        # the POSIX name the mount shows
    size: int = 0
    mtime_ns: int = 0                # modification time, nanoseconds since the epoch
    generation: int = 0
    committed: str | None = None     # node holding content generation ``committed_gen``
    committed_gen: int = 0
    replaces: list[str] = field(default_factory=list)
    has_copy: bool = False           # the staged copy holds the content (else ``committed``)
    unlinked: bool = False           # removed from the namespace: nodes go once closed
    # place/name/mtime chosen here (create, rename, touch); else they follow the node
    local_meta: bool = False
    put_tried: bool = False          # a ``p`` for ``upload_id`` may have been applied
    failed: bool = False             # a permanent error: retried after a long back-off
    error: str | None = None
    attempts: int = 0
    next_try: float = 0.0            # wall clock seconds; no attempt before this
    path: str = ""                   # the mount path where last placed (status while unmounted)
    # The one owner of "should this file have a public link" (issue 21): True for new files
    # and for files whose node had a link; `rm X.link` clears it, reading the link (X.link,
    # user.mega.link) sets it.  EXPORT is planned only while it is set, so a revoked link
    # is never brought back by the committer.
    link_wanted: bool = True
    # Client attributes chosen here that the committed node must carry (issue 22): the mode
    # (``mfs-mode``, chmod/create) and user xattrs (``mfs-x``), see ``tree/meta.py``.  Sent
    # with the upload or by FIX (``a``); empty: the node's own are shown.
    own_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def upload_id(self) -> str:
        """The ``mfs`` attribute of the node committed for the current generation."""
        return "%s.%d" % (self.rid, self.generation)

    @property
    def content_pending(self) -> bool:
        """The content of the current generation is not on MEGA yet."""
        return self.has_copy and not self.unlinked and self.generation > self.committed_gen


def rid_of(upload_id: Any) -> str | None:
    """The record id inside an ``mfs`` attribute value (``rid.generation``), else None."""
    if not isinstance(upload_id, str):
        return None
    rid, dot, gen = upload_id.partition(".")
    return rid if dot and gen.isdigit() and rid else None


def meta_differs(rec: Record, node_parent: str, node_name: str | None, node_mtime_ns: int
                 ) -> bool:
    """Whether the committed node's place, name or mtime differ from the file's."""
    return (node_parent != rec.parent or node_name != rec.name
            or node_mtime_ns != rec.mtime_ns)


def attrs_differ(rec: Record, node_attrs: dict[str, Any] | None) -> bool:
    """Whether the committed node lacks one of the attributes chosen here (``own_attrs``)."""
    attrs = node_attrs or {}
    return any(attrs.get(key) != value for key, value in rec.own_attrs.items())


def plan(rec: Record, *, node: tuple[str, str | None, int, bool] | None, writers: int,
         forced: bool, dirty: bool, handles: int, now: float,
         node_attrs: dict[str, Any] | None = None) -> Step:
    """The next step for ``rec``.

    ``node`` describes the committed node as the tree has it: (parent, name, mtime_ns, has a
    public handle), or None if there is no committed node or it vanished; ``node_attrs`` are
    its attributes.  ``writers``/``forced``/``dirty``/``handles`` are the in-memory state of
    the open file.  Pure.
    """
    if rec.unlinked:
        if handles > 0:
            return Step.IDLE
        return Step.DELETE if (rec.committed or rec.replaces) else Step.DONE
    if rec.next_try > now:
        return Step.IDLE
    # Content to send: a new generation, or a committed node that vanished (deleted by
    # another client) while we still have the bytes.
    if rec.has_copy and (rec.content_pending or rec.committed is None or node is None):
        if dirty or (writers > 0 and not forced):
            return Step.IDLE
        return Step.UPLOAD
    if rec.committed is None or node is None:
        return Step.DONE      # no copy and no node: the file is gone; the namespace drops it
    parent, name, mtime_ns, public = node
    if (rec.local_meta and meta_differs(rec, parent, name, mtime_ns)
            or attrs_differ(rec, node_attrs)):
        return Step.FIX
    if rec.replaces:
        return Step.CLEANUP
    if rec.committed_gen > 0 and not public and rec.link_wanted:
        return Step.EXPORT
    return Step.DONE


def unread(rec: Record, being_read: Callable[[str], bool]) -> Record:
    """``rec`` without the nodes it would delete that ``being_read`` says a reader holds
    (``rec`` itself when there are none): old versions, and the committed node once unlinked.
    Planned on, it defers those deletes until the readers are gone (issue 21)."""
    drop = [h for h in (rec.committed if rec.unlinked else None, *rec.replaces)
            if h and being_read(h)]
    if not drop:
        return rec
    return dataclasses.replace(rec, replaces=[h for h in rec.replaces if h not in drop],
                               committed=None if rec.committed in drop else rec.committed)


def flushed(rec: Record, size: int, mtime_ns: int) -> Record:
    """New content reached the disk: a new generation to upload."""
    return dataclasses.replace(rec, size=size, mtime_ns=mtime_ns, generation=rec.generation + 1,
                               has_copy=True, put_tried=False, failed=False, error=None,
                               attempts=0, next_try=0.0)


def written(rec: Record, size: int | None, mtime_ns: int) -> Record:
    """The staged copy changed (``size`` bytes, None: unchanged), or the mtime shown changed
    (another client touched the node a file mirrors).  Runs on every ``write``: a shallow
    copy made directly (about 1 us; ``dataclasses.replace`` took 10 us, timeit)."""
    new = object.__new__(Record)
    new.__dict__.update(rec.__dict__)
    new.mtime_ns = mtime_ns
    if size is not None:
        new.size = size
    return new


def copied(rec: Record, size: int) -> Record:
    """The staged copy now holds the committed node's ``size`` bytes (not a change)."""
    return dataclasses.replace(rec, has_copy=True, size=size)


def placed(rec: Record, parent: str, name: str, path: str, *, chosen: bool) -> Record:
    """Shown at (parent, name), mount path ``path``; ``chosen``: by a rename here, so the
    committed node is brought in line (else the file follows its node)."""
    return dataclasses.replace(rec, parent=parent, name=name, path=path,
                               local_meta=rec.local_meta or chosen)


def unlinked(rec: Record) -> Record:
    """The name is gone: the file's nodes are deleted once nothing has it open."""
    return dataclasses.replace(rec, unlinked=True)


def put_tried(rec: Record) -> Record:
    """A ``p`` for ``upload_id`` is about to be sent (saved durably before it goes)."""
    return dataclasses.replace(rec, put_tried=True)


def put_refused(rec: Record) -> Record:
    """The server refused the ``p`` for certain: nothing was created."""
    return dataclasses.replace(rec, put_tried=False)


def replacing(rec: Record, handle: str) -> Record:
    """Node ``handle`` becomes an old version to delete."""
    return dataclasses.replace(rec, replaces=_plus(rec.replaces, handle))


def committed(rec: Record, generation: int, handle: str) -> Record:
    """``p`` created ``handle`` for content ``generation``.

    If that is still the current generation the node becomes the committed one and the node it
    replaces becomes an old version; otherwise (the file changed meanwhile) the new node is
    itself an old version to delete."""
    if generation != rec.generation:
        return dataclasses.replace(rec, replaces=_plus(rec.replaces, handle), put_tried=False)
    old = rec.committed
    replaces = rec.replaces if old is None or old == handle else _plus(rec.replaces, old)
    return dataclasses.replace(rec, committed=handle, committed_gen=generation,
                               replaces=replaces, put_tried=False)


def touched(rec: Record, mtime_ns: int) -> Record:
    """``utimens``: a new mtime chosen here."""
    return dataclasses.replace(rec, mtime_ns=mtime_ns, local_meta=True)


def with_attrs(rec: Record, attrs: dict[str, Any]) -> Record:
    """chmod, setxattr, removexattr: client attributes chosen here (see ``own_attrs``)."""
    return dataclasses.replace(rec, own_attrs={**rec.own_attrs, **attrs})


def link_wish(rec: Record, wanted: bool) -> Record:
    """The user asked for the file's public link (``wanted``) or revoked it."""
    return rec if rec.link_wanted == wanted else dataclasses.replace(rec, link_wanted=wanted)


def cleaned(rec: Record, gone: list[str]) -> Record:
    """Old versions ``gone`` were deleted."""
    return dataclasses.replace(rec, replaces=[h for h in rec.replaces if h not in gone])


def deleted(rec: Record, gone: list[str]) -> Record:
    """Nodes ``gone`` of an unlinked file were deleted."""
    committed = None if rec.committed in gone else rec.committed
    return dataclasses.replace(rec, committed=committed,
                               replaces=[h for h in rec.replaces if h not in gone])


def succeeded(rec: Record) -> Record:
    """An attempt went through: clear the error and the back-off."""
    if not (rec.error or rec.attempts or rec.next_try or rec.failed):
        return rec
    return dataclasses.replace(rec, error=None, attempts=0, next_try=0.0, failed=False)


TRANSIENT_FIRST, TRANSIENT_CAP = 0.5, 60.0       # seconds: 0.5 s doubling to a minute
FAILED_FIRST, FAILED_CAP = 300.0, 3600.0          # seconds: 5 min doubling to an hour


def attempt_failed(rec: Record, error: str, *, permanent: bool, now: float) -> Record:
    """An attempt failed: back off (and mark the record failed if the error is permanent)."""
    attempts = rec.attempts + 1
    if permanent:
        delay = min(FAILED_CAP, FAILED_FIRST * 2 ** min(attempts - 1, 8))
    else:
        delay = min(TRANSIENT_CAP, TRANSIENT_FIRST * 2 ** min(attempts - 1, 10))
    return dataclasses.replace(rec, attempts=attempts, error=error, failed=permanent,
                               next_try=now + delay)


def retry_now(rec: Record) -> Record:
    """``megafs retry`` or the server came back: try at once."""
    return dataclasses.replace(rec, failed=False, next_try=0.0, attempts=0, error=None)


def shown_state(rec: Record, step: Step, busy: bool) -> str:
    """``pending`` | ``uploading`` | ``uploaded`` | ``failed`` for xattrs and status."""
    if rec.failed and not busy:
        return FAILED
    if busy:
        return UPLOADING
    if step is Step.DONE and not rec.unlinked:
        return UPLOADED
    return PENDING


def _plus(items: list[str], handle: str) -> list[str]:
    return items if handle in items else items + [handle]
