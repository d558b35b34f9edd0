"""``QueueState.wave_until``: how long the committer waits for a wave of small files' POSTs
(issue 23), with the clock under the test's control."""
from __future__ import annotations

import pytest

from megafs.writeback import state as state_mod
from megafs.writeback.state import WAVE_MAX, WAVE_QUIET, QueueState


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(state_mod.time, "monotonic", lambda: now[0])
    return now


def test_no_wave_no_wait(clock, tmp_path):
    st = QueueState(None, str(tmp_path))     # the tree is not used here
    assert st.wave_until() == 0.0
    with st.lock:
        st.post_started()
        clock[0] += 0.2
        st.post_ended()
    assert st.wave_until() == 0.0            # nothing posting: the committer goes on


def test_the_wait_follows_the_posts_of_the_wave(clock, tmp_path):
    st = QueueState(None, str(tmp_path))
    with st.lock:
        for _ in range(3):
            st.post_started()
    assert st.wave_until() == 100.0 + WAVE_MAX       # none ended yet: at most WAVE_MAX
    clock[0] = 100.1
    with st.lock:
        st.post_ended()                              # the first took 0.1 s
    assert st.wave_until() == pytest.approx(100.1 + 3 * 0.1)
    clock[0] = 100.35
    with st.lock:
        st.post_ended()                              # still ending: twice 0.1 s more
    assert st.wave_until() == pytest.approx(100.35 + 2 * 0.1)
    with st.lock:
        st.post_started()                            # joins the running wave
    assert st.wave_start == 100.0
    clock[0] = 101.95
    with st.lock:
        st.post_ended()
    assert st.wave_until() == pytest.approx(100.0 + WAVE_MAX)   # never beyond the cap


def test_fast_posts_wait_at_least_the_quiet(clock, tmp_path):
    st = QueueState(None, str(tmp_path))
    with st.lock:
        st.post_started()
        st.post_started()
        clock[0] = 100.001
        st.post_ended()
        clock[0] = 100.01
        st.post_ended()
        st.post_started()
    # a new wave: the first of it has not ended
    assert st.wave_start == 100.01 and st.wave_until() == pytest.approx(100.01 + WAVE_MAX)
    with st.lock:
        clock[0] = 100.011
        st.post_ended()
        st.post_started()
        st.post_started()
        clock[0] = 100.012
        st.post_ended()
    assert st.wave_until() == pytest.approx(100.012 + WAVE_QUIET)


def test_post_limit_follows_the_round_trip():
    from megafs.writeback.posts import POSTS_MIN, post_limit
    assert post_limit(0.001, 128) == POSTS_MIN          # loopback: kept connections
    assert post_limit(0.045, 128) == 36                 # home, RTT 40 ms
    assert post_limit(0.16, 128) == 128                 # far, RTT 150 ms: all at once
    assert post_limit(5.0, 64) == 64                    # never beyond the threads


def test_a_finished_upload_waits_for_the_burst_the_dispatcher_holds(tmp_path):
    """A fresh mount's scout finished while the dispatcher still holds the burst behind it:
    the committer keeps its ``p`` until the hold ends, so both share one ``p`` (issue 23)."""
    import threading
    import time

    from megafs.writeback.committer import Committer
    from megafs.writeback.record import Record

    st = QueueState(None, str(tmp_path))
    committer = Committer(st, None, save=lambda files: None, settle=lambda files: None,
                          remote_change=lambda sf: None)
    scout = st.new_file(Record(rid="r1", parent="P", name="scout"), str(tmp_path / "r1"))
    got: list = []
    with st.lock:
        st.ready.append(scout)
        st.held_until = time.monotonic() + 30.0

    def gather() -> None:
        with st.lock:
            got.append(committer._gather([], []))
    thread = threading.Thread(target=gather, daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and not got          # held: the scout's p waits
    with st.lock:
        st.held_until = 0.0                       # the dispatcher took the burst
        st.wake_all()
    thread.join(10.0)
    assert got == [[scout]]
