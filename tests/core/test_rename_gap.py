"""rename(2) over an open file, as libfuse's high-level API performs it (issue 22): two calls
into the core, the open file to a hidden ``.fuse_hidden`` name and then the new file to the
name.  A reader whose path walk found the old file opens and stats it by its hidden name; once
the old file's last close removed that name, the core answers with the name's new content.
Between libfuse's two calls the name shows nothing: such a reader must wait for the second
call, not get ENOENT (before: 3 of ~2,500 reads at load 4 in
``tests/mount/test_workloads.py::test_atomic_save_is_atomic_for_readers``).  Built on the same
stack as test_core.py (``MountRuntime`` without FUSE), against the real local server.
"""
from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from megafs.errors import FsError
from core.test_core import Stack

HIDDEN = "/.fuse_hidden0000000a00000001"      # the pattern libfuse uses (node id, counter)


@pytest.fixture
def stack(server, tmp_path):
    s = Stack(server.url, str(tmp_path / "state"))
    yield s
    s.close()


def test_a_reader_between_libfuses_two_rename_calls_gets_the_new_file(stack):
    stack.write_file("/x", b"old")
    stack.write_file("/.t", b"new content")
    fh = stack.fs.open("/x", os.O_RDONLY)
    stack.fs.rename("/x", HIDDEN)            # libfuse hides the open file ...
    stack.fs.release(fh)                     # ... whose last close removes its hidden name
    stack.fs.unlink(HIDDEN)
    results: dict[str, object] = {}

    def reader() -> None:                    # a path walk that found the old file
        try:
            results["size"] = stack.fs.getattr(HIDDEN)["st_size"]
            results["data"] = stack.read_file(HIDDEN)
        except FsError as exc:
            results["error"] = exc
    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), results        # it waits: the name shows nothing yet
    stack.fs.rename("/.t", "/x")             # ... and then renames the new file to the name
    thread.join(10)
    assert results == {"size": 11, "data": b"new content"}


def test_a_hidden_name_whose_file_was_unlinked_answers_enoent_within_the_bound(stack):
    """An unlink of an open file is one call (the hide): nothing comes to the name, and a late
    reader of the hidden name gets ENOENT after the bound, not a hang."""
    from megafs.vfs.hidden import HIDE_GAP
    stack.write_file("/y", b"gone")
    fh = stack.fs.open("/y", os.O_RDONLY)
    hidden = HIDDEN.replace("a0", "b0")
    stack.fs.rename("/y", hidden)
    stack.fs.release(fh)
    stack.fs.unlink(hidden)
    started = time.monotonic()
    with pytest.raises(FsError) as caught:
        stack.fs.getattr(hidden)
    assert caught.value.errno == errno.ENOENT and time.monotonic() - started < HIDE_GAP + 1
