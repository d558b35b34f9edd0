"""While the small-file dispatcher holds a burst of closes (``scheduler.burst_hold``), a small
file's change wakes neither the dispatcher nor the committer (``QueueState.held``): each close
of a ``cp -r`` used to wake both, and their turns under the queue's lock delayed the copy.
The hold's end wakes the committer for what it was not woken for (``QueueState.end_hold``);
``fsync`` (a forced file) and files bigger than one POST still wake at once."""
from __future__ import annotations

import pytest

from megafs.writeback import record as R
from megafs.writeback import state as state_mod
from megafs.writeback.state import QueueState


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(state_mod.time, "monotonic", lambda: now[0])
    return now


class Counted:
    """Counts ``notify_all`` calls of the queue's three conditions."""

    def __init__(self, st: QueueState, monkeypatch) -> None:
        self.counts = {"dispatcher": 0, "workers": 0, "committer": 0}
        for name, cond in (("dispatcher", st.lock), ("workers", st.work_cv),
                           ("committer", st.commit_cv)):
            monkeypatch.setattr(cond, "notify_all", self._counter(name, cond.notify_all))

    def _counter(self, name, real):
        def notify_all():
            self.counts[name] += 1
            real()
        return notify_all

    def take(self) -> dict:
        got, self.counts = self.counts, dict.fromkeys(self.counts, 0)
        return got


def queue_with_files(tmp_path, sizes):
    st = QueueState(None, str(tmp_path))      # the tree is not used here
    st.small = lambda sf: sf.rec.size <= 1 << 20
    files = []
    for i, size in enumerate(sizes):
        rec = R.flushed(R.written(R.Record("rid%d" % i, "parent", "f%d" % i), size, 1), size, 1)
        sf = st.new_file(rec, str(tmp_path / str(i)))
        st.register(sf, [])
        files.append(sf)
    return st, files


def test_a_held_burst_wakes_nobody_per_close_and_its_end_wakes_the_committer(
        clock, tmp_path, monkeypatch):
    st, files = queue_with_files(tmp_path, [4096] * 3)
    woken = Counted(st, monkeypatch)
    st.touched(files[0])                        # the burst's first close: no hold yet
    assert woken.take() == {"dispatcher": 1, "workers": 0, "committer": 1}
    with st.lock:
        st.held_until = clock[0] + 0.5          # the dispatcher holds the burst
    for sf in files[1:]:
        clock[0] += 0.001
        st.touched(sf)                          # later closes: offered, nobody woken
    assert woken.take() == {"dispatcher": 0, "workers": 0, "committer": 0}
    assert set(st.offered) == {"rid0", "rid1", "rid2"}
    assert {"rid1", "rid2"} <= st.todo          # the committer will look at them
    with st.lock:
        st.end_hold()
    assert st.held_until == 0.0
    assert woken.take() == {"dispatcher": 0, "workers": 0, "committer": 1}
    with st.lock:
        st.end_hold()                           # no hold: nothing to tell
    assert woken.take()["committer"] == 0


def test_fsync_a_big_file_and_a_stale_hold_still_wake_at_once(clock, tmp_path, monkeypatch):
    st, files = queue_with_files(tmp_path, [4096, 4096, 8 << 20])
    woken = Counted(st, monkeypatch)
    with st.lock:
        st.held_until = clock[0] + 0.5
    files[0].force()                            # fsync waits for this one
    assert woken.take()["dispatcher"] >= 1
    st.touched(files[2])                        # bigger than one POST: the workers' own
    got = woken.take()
    assert got["workers"] >= 1 and got["committer"] >= 1
    clock[0] += 0.6                             # a hold past its end (its thread stopped)
    st.touched(files[1])
    got = woken.take()
    assert got["dispatcher"] == 1 and got["committer"] == 1


def test_finished_uploads_wait_for_the_hold_unless_fsync_waits_for_one(clock, tmp_path):
    st, files = queue_with_files(tmp_path, [4096, 4096])
    with st.lock:
        st.ready.append(files[0])
        assert not st.ready_held()              # no hold
        st.held_until = clock[0] + 3.0
        assert st.ready_held()                  # shares the held burst's `p`
    files[0].force()                            # fsync waits for it: no longer held
    with st.lock:
        assert not st.ready_held()
