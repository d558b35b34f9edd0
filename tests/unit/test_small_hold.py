"""Small files wait for a quiet moment in a burst of closes (issue 23): the dispatcher holds
while files are being closed (``QUIET``), at most ``HOLD_MAX``, and never holds a file that
``fsync`` waits for or when nothing waits."""
from __future__ import annotations

import time

import pytest

from megafs.writeback import scheduler as S
from megafs.writeback.record import Record
from megafs.writeback.scheduler import burst_hold
from megafs.writeback.state import QueueState


def test_the_dispatcher_holds_during_a_burst_of_closes_only(tmp_path):
    state = QueueState(None, str(tmp_path))            # type: ignore[arg-type]
    sf = state.new_file(Record("00aa", "ROOTHAND", "a.bin"), str(tmp_path / "00aa"))
    with state.lock:
        assert burst_hold(state, None) == (0.0, None)        # nothing closed lately
        state.last_close = time.monotonic()
        assert burst_hold(state, None) == (0.0, None)        # nothing waits
        state.offer(sf)
        hold, since = burst_hold(state, None)
        assert 0 < hold <= S.QUIET and since is not None
        # still closing: held again, but never past HOLD_MAX since the hold began
        hold2, since2 = burst_hold(state, since)
        assert 0 < hold2 <= S.QUIET and since2 == since
        assert burst_hold(state, since - S.HOLD_MAX) == (0.0, None)
        sf.force()                                      # fsync waits for this file
        assert burst_hold(state, since) == (0.0, None)
    with state.lock:
        state.last_close = time.monotonic() - S.QUIET   # quiet: no hold
        state.offered.clear()
        state.offer(state.new_file(Record("00bb", "ROOTHAND", "b.bin"), str(tmp_path / "b")))
        assert burst_hold(state, None) == (0.0, None)


def test_upload_hold_bounds_the_hold_and_zero_never_holds(tmp_path):
    """``-o upload_hold``: the hold's bound; 0 uploads each file as soon as it is closed."""
    state = QueueState(None, str(tmp_path))            # type: ignore[arg-type]
    sf = state.new_file(Record("00cc", "ROOTHAND", "c.bin"), str(tmp_path / "00cc"))
    with state.lock:
        state.offer(sf)
        state.last_close = time.monotonic()             # a burst of closes is on
        assert burst_hold(state, None, 0.0) == (0.0, None)
        hold, since = burst_hold(state, None, 10.0)
        assert 0 < hold <= S.QUIET and since is not None
        assert burst_hold(state, since - 9.9, 10.0)[0] > 0       # within its 10 s
        assert burst_hold(state, since - 10.0, 10.0) == (0.0, None)


def test_a_slower_burst_is_held_for_three_of_its_gaps_at_most_quiet_max(tmp_path):
    """Closes that come slower than ``QUIET`` apart (a loaded machine) still make one burst:
    the quiet moment is three gaps between the last two closes, at most ``QUIET_MAX``; after
    a pause of ``QUIET_MAX`` or more a close starts a new burst with ``QUIET``."""
    state = QueueState(None, str(tmp_path))            # type: ignore[arg-type]
    sf = state.new_file(Record("00dd", "ROOTHAND", "d.bin"), str(tmp_path / "00dd"))
    with state.lock:
        state.offer(sf)
        state.close_gap = 0.05                          # closes 50 ms apart
        assert S.burst_quiet(state) == pytest.approx(0.15)
        state.last_close = time.monotonic() - 0.06      # past QUIET, within three gaps
        hold, since = burst_hold(state, None)
        assert 0.08 < hold <= 0.09 and since is not None
        state.last_close = time.monotonic() - 0.16      # past three gaps: taken
        assert burst_hold(state, since) == (0.0, None)
        state.close_gap = 0.2                           # slower still: QUIET_MAX
        assert S.burst_quiet(state) == S.QUIET_MAX
        state.close_gap = S.QUIET_MAX                   # a pause, not a burst
        assert S.burst_quiet(state) == S.QUIET
        state.close_gap = 0.001                         # a fast burst: QUIET
        assert S.burst_quiet(state) == S.QUIET
